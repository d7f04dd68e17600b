"""``capsim token``: a certificate token (a PIV card, a USB key) signs a verifier's challenge.

Reference: ``docs/cli.md`` and ``docs/certificate.md``.

Theory of operation
===================

1. **What is signed** is the message file exactly as ``capsim verifier cert challenge`` or
   ``capsim verifier cert operation --out FILE`` wrote it (``-``: standard input), the way
   capsim's verifier checks it (:func:`capsim.reader.piv.message_hash`): ECDSA over SHA-256
   (P-256) or SHA-384 (P-384), RSA PKCS#1 v1.5 over SHA-256. The signature printed (hex, or
   base64) or written raw (``--out``) is what ``verifier cert register`` and ``verifier cert
   authenticate`` take: a DER ECDSA signature, or the RSA signature block.
2. **Two ways to the key.** ``--reader SPEC``: capsim's PIV client
   (:class:`capsim.reader.piv.PivClient`) over any transport (``pcsc:…``, a PIV card file as
   ``file:CARD.json``); ``--key-id`` is the PIV key slot (``9c`` by default: digital
   signature). ``--pkcs11 MODULE``: any PKCS#11 token through python-pkcs11 (a USB key through
   its vendor's module, capsim's served token through OpenSC's ``opensc-pkcs11.so``), chosen by
   ``--token-label`` or ``--slot`` (the slot id), the key by ``--key-id`` (its ``CKA_ID`` in
   hex; needed when the token holds several keys). The host hashes; the token signs the digest
   (``CKM_ECDSA``, its ``r || s`` turned into DER) or the DigestInfo (``CKM_RSA_PKCS``).
3. **The PIN** is asked with a hidden prompt, or read from one line of standard input with
   ``--pin-stdin`` (never an option). A blocked PIN is refused before it is asked for (PIV:
   an empty VERIFY, which costs no try; PKCS#11: the token's "user PIN locked" flag), with what
   unblocks it: the PUK (``capsim card unblock`` for a card file, the token's own tool for a
   USB key; PKCS#11 itself cannot unblock a PIV PIN). A wrong PIN says the tries left when the
   token tells them.
4. Nothing secret is printed; the certificate (``--cert-out``, PEM) is public.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from capsim.cli._common import blocked_advice, handle_errors, secret_reader, warn_if_exposed
from capsim.cli._reader import READER_HELP, open_reader
from capsim.errors import (
    CapsimError,
    PinBlockedError,
    PinError,
    StatusWordError,
    TokenError,
    ValidationError,
)
from capsim.reader.piv import PivClient, digest_info, message_hash
from capsim.transports import parse_spec

__all__ = ["sign_command", "token"]

_MAX_MESSAGE: Final = 64 * 1024
_PIV_SLOTS: Final = {"9a": 0x9A, "9c": 0x9C, "9d": 0x9D, "9e": 0x9E}
_PIV_UNBLOCK: Final = (
    "unblock it with the PUK: capsim card unblock CARD_FILE for a capsim card file, "
    "yubico-piv-tool -a unblock-pin or pkcs15-tool --unblock-pin for a USB key, or ask its issuer"
)


@click.group("token")
def token() -> None:
    """Certificate tokens (PIV cards, USB keys): sign a verifier's challenge."""


# ------------------------------------------------------------------ inputs (rules 1, 3)
def _message(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(_MAX_MESSAGE + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_MESSAGE + 1)
    except OSError as exc:
        raise ValidationError(f"--message: cannot read {path} ({exc.strerror})") from None
    if not data:
        raise ValidationError("--message: the message is empty")
    if len(data) > _MAX_MESSAGE:
        raise ValidationError(f"--message: larger than {_MAX_MESSAGE} bytes")
    return data


def _public_key(der: bytes) -> tuple[x509.Certificate, ec.EllipticCurvePublicKey | rsa.RSAPublicKey]:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise ValidationError("the token's certificate is not X.509 DER") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValidationError("the token's key is neither ECDSA nor RSA")
    return cert, key


# ------------------------------------------------------------------ --reader: capsim's PIV client
def _card_file(spec: str) -> Path | None:
    scheme, rest = parse_spec(spec)
    return Path(str(rest)) if scheme == "file" else None


def _sign_piv(
    spec: str, key_id: str | None, message: bytes, ask_pin: Callable[[], str]
) -> tuple[bytes, bytes]:
    """Rule 2, ``--reader``: (signature, certificate DER)."""
    name = (key_id or "9c").lower()
    if name not in _PIV_SLOTS:
        raise ValidationError("--key-id: with --reader, a PIV key slot: 9a, 9c, 9d or 9e")
    slot = _PIV_SLOTS[name]
    card_file = _card_file(spec)
    if card_file is not None:
        warn_if_exposed(card_file)
    advice = blocked_advice(card_file) + " (it asks for the PUK)" if card_file else _PIV_UNBLOCK
    with open_reader(spec) as link:
        piv = PivClient(link)
        piv.select()
        der = piv.read_certificate(slot)
        try:
            tries = piv.pin_tries()
        except PinBlockedError as exc:
            raise PinBlockedError(exc.sw, exc.ins, f"{exc}; {advice}") from None
        if tries is not None and tries < 3:
            click.echo(f"capsim: warning: only {tries} PIN tr{'y' if tries == 1 else 'ies'} left", err=True)
        try:
            piv.verify_pin(ask_pin())
        except PinError as exc:
            if exc.tries_left:
                raise
            raise PinError(exc.sw, exc.ins, f"{exc}; {advice}") from None
        return piv.sign_message(slot, message, certificate=der), der


# ------------------------------------------------------------------ --pkcs11: python-pkcs11
def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise TokenError("--pkcs11 needs python-pkcs11: pip install 'capsim[pkcs11]'", "module") from None
    return pkcs11


def _find_token(p11: Any, module: str, token_label: str | None, slot_id: int | None) -> Any:
    try:
        lib = p11.lib(module)
    except (p11.exceptions.PKCS11Error, RuntimeError, OSError) as exc:
        raise TokenError(
            f"--pkcs11: cannot load the PKCS#11 module {module} ({type(exc).__name__})", "module"
        ) from None
    slots = lib.get_slots(token_present=True)
    tokens = [s.get_token() for s in slots if slot_id is None or s.slot_id == slot_id]
    if token_label is not None:
        tokens = [t for t in tokens if t.label == token_label]
    if len(tokens) != 1:
        found = ", ".join(repr(t.label) for t in tokens) or "none"
        raise TokenError(
            f"--pkcs11: expected one token (choose with --token-label or --slot); found {found}", "token"
        )
    return tokens[0]


def _pick_key(p11: Any, session: Any, key_id: str | None) -> tuple[Any, bytes]:
    """The private key and its certificate (DER), by ``CKA_ID`` (rule 2)."""
    attr, cls = p11.Attribute, p11.ObjectClass
    keys = list(session.get_objects({attr.CLASS: cls.PRIVATE_KEY}))
    if key_id is not None:
        try:
            wanted = bytes.fromhex(key_id)
        except ValueError:
            raise ValidationError("--key-id: with --pkcs11, the key's CKA_ID in hex (01, 02 …)") from None
        keys = [k for k in keys if bytes(k[attr.ID]) == wanted]
    if len(keys) != 1:
        ids = ", ".join(bytes(k[attr.ID]).hex() for k in session.get_objects({attr.CLASS: cls.PRIVATE_KEY}))
        raise TokenError(f"--key-id: expected one private key; the token has ids: {ids or 'none'}", "key")
    key = keys[0]
    certs = list(session.get_objects({attr.CLASS: cls.CERTIFICATE, attr.ID: bytes(key[attr.ID])}))
    if not certs:
        raise TokenError("--key-id: the token holds no certificate for this key", "key")
    return key, bytes(certs[0][attr.VALUE])


def _login_error(p11: Any, tok: Any) -> StatusWordError:
    """A wrong PIN on a PKCS#11 token: the tries left as far as its flags tell, read again after
    the failed login (rule 3)."""
    try:
        flags = tok.slot.get_token().flags
    except (p11.exceptions.PKCS11Error, RuntimeError):
        flags = 0
    if flags & p11.TokenFlag.USER_PIN_LOCKED:
        return PinError(
            0x63C0, 0x20, f"wrong PIN, no tries left: the token's PIN is now blocked; {_PIV_UNBLOCK}"
        )
    if flags & p11.TokenFlag.USER_PIN_FINAL_TRY:
        return PinError(0x63C1, 0x20, "wrong PIN, 1 try left")
    if flags & p11.TokenFlag.USER_PIN_COUNT_LOW:
        return PinError(0x63CF, 0x20, "wrong PIN; few tries are left (the token does not say how many)")
    return PinError(0x63CF, 0x20, "wrong PIN (the token does not say how many tries are left)")


def _sign_pkcs11(
    module: str, *, token_label: str | None, slot_id: int | None, key_id: str | None,
    message: bytes, ask_pin: Callable[[], str],
) -> tuple[bytes, bytes]:  # fmt: skip
    """Rule 2, ``--pkcs11``: (signature, certificate DER)."""
    p11 = _pkcs11()
    x = p11.exceptions
    try:
        tok = _find_token(p11, module, token_label, slot_id)
        flags = tok.flags
        if flags & p11.TokenFlag.USER_PIN_LOCKED:
            raise PinBlockedError(0x6983, None, f"PIN blocked: the token's PIN is locked; {_PIV_UNBLOCK}")
        pin = ask_pin()
        try:
            session = tok.open(user_pin=pin)
        except x.PinIncorrect:
            raise _login_error(p11, tok) from None
        except x.PinLocked:
            raise PinBlockedError(
                0x6983, None, f"PIN blocked: the token's PIN is locked; {_PIV_UNBLOCK}"
            ) from None
        except (x.PinInvalid, x.PinLenRange):
            raise ValidationError("PIN: the token refused its form (length or characters)") from None
        with session:
            key, der = _pick_key(p11, session, key_id)
            _, public = _public_key(der)
            name = message_hash(public)
            digest = hashlib.new(name, message).digest()
            if isinstance(public, ec.EllipticCurvePublicKey):
                raw = bytes(key.sign(digest, mechanism=p11.Mechanism.ECDSA))
                half = len(raw) // 2
                signature = encode_dss_signature(
                    int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                )
            else:
                signature = bytes(key.sign(digest_info(name, digest), mechanism=p11.Mechanism.RSA_PKCS))
    except CapsimError:
        raise
    except (x.PKCS11Error, RuntimeError) as exc:
        raise TokenError(f"--pkcs11: the token failed ({type(exc).__name__})", "failed") from None
    return signature, der


# ------------------------------------------------------------------ the command (rules 1-4)
@token.command("sign")
@click.option(
    "--message",
    "message_path",
    required=True,
    metavar="FILE",
    help="The message to sign, as `capsim verifier cert operation --out` wrote it ('-': stdin).",
)
@click.option(
    "--reader", "reader", metavar="SPEC", help=f"A PIV card through capsim's PIV client. {READER_HELP}"
)
@click.option("--pkcs11", "module", metavar="MODULE", help="A PKCS#11 module (.so) holding the token.")
@click.option("--token-label", help="With --pkcs11: the token's label.")
@click.option("--slot", "slot_id", type=int, help="With --pkcs11: the PKCS#11 slot id.")
@click.option(
    "--key-id",
    help="The key: a PIV slot with --reader (9a, 9c, 9d, 9e; default 9c), the key's CKA_ID in hex "
    "with --pkcs11 (needed when the token holds several keys).",
)
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from one line of standard input.")
@click.option(
    "--encoding",
    type=click.Choice(["hex", "base64"]),
    default="hex",
    show_default=True,
    help="How the signature is printed.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the raw signature here."
)
@click.option(
    "--cert-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token's certificate here (PEM).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def sign_command(
    *,
    message_path: str,
    reader: str | None,
    module: str | None,
    token_label: str | None,
    slot_id: int | None,
    key_id: str | None,
    pin_stdin: bool,
    encoding: str,
    out: Path | None,
    cert_out: Path | None,
    as_json: bool,
) -> None:
    """[!] Sign a verifier's challenge with a certificate token's key (a wrong PIN counts on the token)."""
    if (reader is None) == (module is None):
        raise ValidationError("--reader SPEC or --pkcs11 MODULE: exactly one")
    if reader is not None and (token_label is not None or slot_id is not None):
        raise ValidationError("--token-label and --slot: only with --pkcs11")
    if message_path == "-" and pin_stdin:
        raise ValidationError("--message - and --pin-stdin: only one of them can read standard input")
    ask_pin = secret_reader("PIN", from_stdin=pin_stdin)  # no terminal: fail before the token
    message = _message(message_path)
    if reader is not None:
        signature, der = _sign_piv(reader, key_id, message, ask_pin)
    else:
        assert module is not None
        signature, der = _sign_pkcs11(
            module, token_label=token_label, slot_id=slot_id, key_id=key_id, message=message, ask_pin=ask_pin
        )
    cert, _ = _public_key(der)
    if out is not None:
        out.write_bytes(signature)
    pem = cert.public_bytes(Encoding.PEM)
    if cert_out is not None:
        cert_out.write_bytes(pem)
    text = signature.hex() if encoding == "hex" else base64.b64encode(signature).decode("ascii")
    if as_json:
        obj = {
            "signature": text,
            "encoding": encoding,
            "subject": cert.subject.rfc4514_string(),
            "certificate": pem.decode("ascii"),
        }
        click.echo(json.dumps(obj, sort_keys=True))
    else:
        click.echo(text)
