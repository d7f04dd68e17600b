"""``capsim card`` for PIV card files: ``new --template piv``, ``show``, and the PIN and PUK commands.

:mod:`capsim.cli.card` and :mod:`capsim.cli.card_pin` hand a PIV card file (or the ``piv``
template) to the functions here; the card itself is :mod:`capsim.cards.piv`.

Theory of operation
===================

1. **Personalisation** (:func:`new_piv`) goes through
   :func:`capsim.cards.piv.personalise.personalise`: keys in 9A and 9C with certificates from
   a throwaway CA, saved beside the card as ``<stem>.ca.pem`` (certificate) and
   ``<stem>.ca-key.pem`` (its private key), both 0600 and never overwritten; or one imported
   key and certificate. Every file name is checked before anything is written; if the card
   file cannot be written, the CA files just written are removed.
2. **Secrets are read like PINs**, never from an option: each one named by ``--choose``
   (``pin``, ``puk``, ``mgmt-key``) is asked with a hidden prompt, twice; with ``--pin-stdin``
   they come from standard input, one line each: the PIN (``--pin-stdin`` always chooses it, as
   for an EMV card), then the PUK, then the management key. The others keep the well-known
   defaults, and ``card show`` warns while one is in place.
3. **PIN commands go through the card's APDUs**, as a host would, with capsim's PIV client
   (:class:`capsim.reader.piv.PivClient` over the card in process): SELECT, VERIFY (status or
   PIN), CHANGE REFERENCE DATA (PIN ``80``, PUK ``81``), RESET RETRY COUNTER (PUK and new PIN).
   The card counts and blocks; the client turns the status words into typed errors with the
   message a user needs. A blocked PIN stops ``change-pin`` before any prompt; a blocked PUK
   cannot be unblocked by anything.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import click
from cryptography import x509

from capsim._validate import digits
from capsim.atomicfile import atomic_create
from capsim.cards.atr import atr_from_hex
from capsim.cards.piv import (
    PIV_ATR,
    SLOTS,
    PivAlgorithm,
    PivState,
    certificate_of,
    is_piv_card_file,
    load_piv_card,
    new_piv_card,
    read_piv_card_file,
)
from capsim.cards.piv.personalise import CHUID_TAG, chuid_guid, personalise, slot_name
from capsim.cards.piv.personalise import import_key as import_pem_key
from capsim.cli._common import blocked_advice, secret_reader, warn_if_exposed
from capsim.errors import PinBlockedError, PinError, StateFileError, ValidationError
from capsim.hexinput import parse_hex
from capsim.reader.piv import PivClient
from capsim.transports.inprocess import InProcessTransport

__all__ = [
    "PIV_TEMPLATE",
    "ca_paths",
    "describe_piv",
    "is_piv",
    "new_piv",
    "piv_change_pin",
    "piv_change_puk",
    "piv_new_options",
    "piv_unblock",
    "refuse_piv_options",
    "show_piv",
]

PIV_TEMPLATE: Final = "piv"
_ALGORITHMS: Final = {
    "rsa2048": PivAlgorithm.RSA_2048,
    "p256": PivAlgorithm.ECC_P256,
    "p384": PivAlgorithm.ECC_P384,
}
_SECRETS: Final = ("pin", "puk", "mgmt-key")


def _reference(name: str, value: str) -> str:
    return digits(name, value, 6, 8)


def _ask_new(name: str, pin_stdin: bool) -> str:
    """A new PIN or PUK: one stdin line, or the hidden prompt twice (rule 2)."""
    if pin_stdin:
        return _reference(f"new {name}", secret_reader(f"new {name}", from_stdin=True)())
    first = _reference(f"new {name}", secret_reader(f"New {name}", from_stdin=False)())
    again = secret_reader(f"Repeat the new {name}", from_stdin=False)()
    if not hmac.compare_digest(first.encode(), again.encode()):
        raise ValidationError(f"new {name}: the two entries differ; nothing was changed")
    return first


def _ask_current(name: str, pin_stdin: bool) -> str:
    return _reference(name, secret_reader(name, from_stdin=pin_stdin)())


@contextlib.contextmanager
def _host(path: Path) -> Iterator[PivClient]:
    warn_if_exposed(path)
    with InProcessTransport(load_piv_card(path), close_on_disconnect=True) as link:
        host = PivClient(link)
        host.select()
        yield host


def piv_unblock(path: Path, *, pin_stdin: bool) -> str:
    """Unblock the PIN with the PUK and set a new PIN (RESET RETRY COUNTER); the message."""
    if not pin_stdin:
        secret_reader("PUK", from_stdin=False)  # no terminal: fail before touching the card
    with _host(path) as host:
        puk = _ask_current("PUK", pin_stdin)
        new_pin = _ask_new("PIN", pin_stdin)
        host.reset_pin(puk, new_pin)
    return f"PIN unblocked: card {path} accepted the PUK; the new PIN is set and has all its tries"


def piv_change_pin(path: Path, *, pin_stdin: bool) -> str:
    """CHANGE REFERENCE DATA for the PIN; a blocked PIN fails before any prompt."""
    if not pin_stdin:
        secret_reader("PIN", from_stdin=False)
    with _host(path) as host:
        try:
            host.pin_tries()
        except PinBlockedError as exc:
            raise PinBlockedError(
                exc.sw, exc.ins, f"{exc}; {blocked_advice(path)} (it asks for the PUK)"
            ) from None
        old = _ask_current("Current PIN", pin_stdin)
        new = _ask_new("PIN", pin_stdin)
        try:
            host.change_pin(old, new)
        except PinError as exc:
            if exc.tries_left:
                raise
            raise PinError(exc.sw, exc.ins, f"{exc}; {blocked_advice(path)} (it asks for the PUK)") from None
    return f"PIN changed on card {path}"


def piv_change_puk(path: Path, *, pin_stdin: bool) -> str:
    """CHANGE REFERENCE DATA for the PUK."""
    if not pin_stdin:
        secret_reader("PUK", from_stdin=False)
    with _host(path) as host:
        old = _ask_current("Current PUK", pin_stdin)
        new = _ask_new("PUK", pin_stdin)
        host.change_puk(old, new)
    return f"PUK changed on card {path}"


# ------------------------------------------------------------------ card new --template piv (rules 1, 2)
_PIV_OPTIONS: Final = (
    click.option("--holder", help="PIV: the certificate holder's name (subject CN) [capsim PIV holder]."),
    click.option(
        "--algorithm",
        type=click.Choice(sorted(_ALGORITHMS)),
        help="PIV: algorithm of the slot 9A key [rsa2048]; 9C gets P-256.",
    ),
    click.option(
        "--choose",
        type=click.Choice(_SECRETS),
        multiple=True,
        help="PIV: choose this secret instead of its well-known default (repeatable); asked with a "
        "hidden prompt, or with --pin-stdin read from standard input, one line each: the PIN (always), "
        "then the PUK, then the management key.",
    ),
    click.option(
        "--import-key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="PIV: a PEM private key to import instead of generating keys (with --import-cert).",
    ),
    click.option(
        "--import-cert",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="PIV: its PEM certificate.",
    ),
    click.option(
        "--import-slot",
        type=click.Choice(["9a", "9c", "9d", "9e"]),
        help="PIV: the slot of the imported key [9a].",
    ),
)
PIV_OPTION_NAMES: Final = ("holder", "algorithm", "choose", "import_key", "import_cert", "import_slot")


def piv_new_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the PIV options of ``card new`` to a click command."""
    for option in reversed(_PIV_OPTIONS):
        func = option(func)
    return func


def refuse_piv_options(options: dict[str, Any]) -> None:
    """An EMV template with a PIV option: the option names, refused."""
    given = [f"--{name.replace('_', '-')}" for name in PIV_OPTION_NAMES if options.get(name)]
    if given:
        raise ValidationError(f"{', '.join(given)}: only for --template {PIV_TEMPLATE}")


def ca_paths(card_file: Path) -> tuple[Path, Path]:
    """``<stem>.ca.pem`` and ``<stem>.ca-key.pem`` beside the card (rule 1)."""
    return card_file.with_name(f"{card_file.stem}.ca.pem"), card_file.with_name(
        f"{card_file.stem}.ca-key.pem"
    )


def _chosen_secrets(choose: tuple[str, ...], pin_stdin: bool) -> dict[str, Any]:
    """The chosen PIN, PUK and management key (rule 2), checked; the others are left out."""
    chosen = set(choose) | ({"pin"} if pin_stdin else set())
    if not pin_stdin and chosen:
        secret_reader("PIN", from_stdin=False)  # no terminal: fail before asking anything
    out: dict[str, Any] = {}
    if "pin" in chosen:
        out["pin"] = _ask_new("PIN", pin_stdin)
    if "puk" in chosen:
        out["puk"] = _ask_new("PUK", pin_stdin)
    if "mgmt-key" in chosen:
        if pin_stdin:
            text = secret_reader("management key", from_stdin=True)()
        else:
            text = secret_reader("Management key (48 hex digits)", from_stdin=False)()
            again = secret_reader("Repeat the management key", from_stdin=False)()
            if not hmac.compare_digest(text.encode(), again.encode()):
                raise ValidationError("management key: the two entries differ; nothing was written")
        out["mgmt_key"] = parse_hex("management key", text, min_bytes=24, max_bytes=24, secret=True)
    return out


def new_piv(
    path: Path,
    *,
    pin_stdin: bool,
    atr: str | None,
    emv_options: dict[str, object],
    holder: str | None = None,
    algorithm: str | None = None,
    choose: tuple[str, ...] = (),
    import_key: Path | None = None,
    import_cert: Path | None = None,
    import_slot: str | None = None,
) -> None:
    """``capsim card new PATH --template piv`` (rules 1 and 2)."""
    given = [name for name, value in emv_options.items() if value]
    if given:
        raise ValidationError(f"{', '.join(given)}: not for a PIV card (--template {PIV_TEMPLATE})")
    atr_bytes = PIV_ATR if atr is None else atr_from_hex(atr, "--atr")
    if (import_key is None) != (import_cert is None):
        raise ValidationError("--import-key and --import-cert go together")
    if import_key is None and import_slot:
        raise ValidationError("--import-slot: only with --import-key and --import-cert")
    if import_key is not None and (algorithm or holder):
        raise ValidationError(
            "--algorithm and --holder: not with an imported key (its certificate says them)"
        )
    if path.exists():
        raise StateFileError(f"card file {path} already exists; refusing to overwrite it")
    if not path.parent.is_dir():
        raise StateFileError(f"card file {path}: directory {path.parent} does not exist")
    for extra in ca_paths(path) if import_key is None else ():
        if extra.exists():
            raise StateFileError(f"CA file {extra} already exists; refusing to overwrite it")
    imported = None
    if import_key is not None and import_cert is not None:
        key, cert = import_pem_key(_read(import_key), _read(import_cert))
        imported = (int(import_slot or "9a", 16), key, cert)
    secrets_ = _chosen_secrets(choose, pin_stdin)
    made = personalise(
        holder=holder or "capsim PIV holder",
        algorithm=_ALGORITHMS[algorithm or "rsa2048"],
        imported=imported,
        **secrets_,
    )
    written: list[Path] = []
    try:
        if made.ca is not None:
            cert_path, key_path = ca_paths(path)
            atomic_create(cert_path, made.ca.certificate_pem(), "CA certificate file")
            written.append(cert_path)
            atomic_create(key_path, made.ca.key_pem(), "CA key file")
            written.append(key_path)
        new_piv_card(made.state, atr=atr_bytes, path=path).close()
    except BaseException:
        for extra in written:
            with contextlib.suppress(OSError):
                extra.unlink()
        raise
    click.echo(f"created PIV card {path} (serial {made.state.serial})")
    for slot, cert in sorted(made.certificates.items()):
        click.echo(
            f"slot {slot_name(slot)}: {made.state.keys[slot].algorithm.name}, {cert.subject.rfc4514_string()}"
        )
    if made.ca is not None:
        cert_path, key_path = ca_paths(path)
        click.echo(f"CA certificate written to {cert_path}, its key to {key_path} (mode 0600)")
    _warn_defaults(made.state)
    click.echo("note: the card file holds the card's private keys in clear; keep it private", err=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{path}: cannot be read ({exc.strerror})") from None


# ------------------------------------------------------------------ card show
_ADVICE: Final = {
    "PIN": "capsim card change-pin",
    "PUK": "capsim card change-puk",
    "management key": "a new card with capsim card new --template piv --choose mgmt-key",
}


def _warn_defaults(state: PivState) -> None:
    """One warning per well-known default still in place (anyone who knows it can use it)."""
    for name in state.defaults_in_place():
        click.echo(
            f"capsim: warning: the card still has the well-known default {name}, which anyone "
            f"knows; replace it ({_ADVICE[name]})",
            err=True,
        )


def _certificate_info(der: bytes) -> dict[str, Any]:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return {"error": "not a readable X.509 certificate"}
    expiry = cert.not_valid_after_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": expiry.isoformat(),
        "expired": expiry < datetime.datetime.now(datetime.UTC),
    }


def describe_piv(state: PivState, *, sensitive: bool) -> dict[str, Any]:
    """What ``card show`` prints for a PIV card (secrets only when ``sensitive``)."""
    slots: dict[str, Any] = {}
    for slot in SLOTS:
        key = state.keys.get(slot)
        der = certificate_of(state, slot)
        if key is None and der is None:
            continue
        entry: dict[str, Any] = {"algorithm": key.algorithm.name if key is not None else None}
        entry["certificate"] = _certificate_info(der) if der is not None else None
        slots[slot_name(slot)] = entry
    chuid = state.objects.get(CHUID_TAG)
    guid = chuid_guid(chuid) if chuid else None
    out: dict[str, Any] = {
        "card": "PIV (NIST SP 800-73-4)",
        "serial": state.serial,
        "guid": guid.hex().upper() if guid is not None else None,
        "slots": slots,
        "pin_tries_left": f"{state.pin_tries}/{state.pin_limit}",
        "puk_tries_left": f"{state.puk_tries}/{state.puk_limit}",
        "defaults_in_place": list(state.defaults_in_place()),
        "objects": [f"{tag:X}" for tag in sorted(state.objects)],
    }
    if sensitive:
        out["pin"], out["puk"], out["mgmt_key"] = state.pin, state.puk, state.mgmt_key.hex().upper()
    return out


def show_piv(path: Path, *, sensitive: bool, as_json: bool) -> None:
    """``capsim card show`` for a PIV card file; warns while a default secret is in place."""
    _, state = read_piv_card_file(path)
    info = describe_piv(state, sensitive=sensitive)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        for key, value in info.items():
            if key == "slots":
                click.echo("slots:" if value else "slots: (no keys)")
                for name, entry in value.items():
                    click.echo(f"  {name}: {entry['algorithm'] or 'no key'}")
                    cert = entry["certificate"]
                    if cert is None:
                        click.echo("    certificate: none")
                    elif "error" in cert:
                        click.echo(f"    certificate: {cert['error']}")
                    else:
                        expired = " (EXPIRED)" if cert["expired"] else ""
                        click.echo(f"    certificate: {cert['subject']}, issued by {cert['issuer']}")
                        click.echo(f"    expires: {cert['not_after']}{expired}")
            elif isinstance(value, list):
                click.echo(f"{key}: {', '.join(value) if value else 'none'}")
            else:
                click.echo(f"{key}: {value}")
    if state.pin_tries == 0:
        click.echo(f"capsim: warning: the PIN is blocked; {blocked_advice(path)} (with the PUK)", err=True)
    if state.puk_tries == 0:
        click.echo("capsim: warning: the PUK is blocked: nothing can unblock the PIN any more", err=True)
    _warn_defaults(state)


def is_piv(path: Path | None) -> bool:
    """Whether ``path`` names a PIV card file."""
    return path is not None and is_piv_card_file(path)
