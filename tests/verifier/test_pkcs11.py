"""Pkcs11Provider on a real SoftHSM2 token: equal to SoftwareProvider, refusals, typed errors.

The token is created once per test session (:func:`softhsm`) with ``softhsm2-util`` under a
private ``SOFTHSM2_CONF`` in a temporary directory; the tests are skipped when SoftHSM2 or
python-pkcs11 is missing (``scripts/test.sh`` installs both).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsim import sm
from capsim.crypto import CVN, KeyDerivation, generate_ac, generate_arpc, key_check_value
from capsim.errors import ConfigError, TokenError, TokenUnsupported, ValidationError
from capsim.verifier.provider import SoftwareProvider, derived_fingerprint

pkcs11 = pytest.importorskip("pkcs11")

from capsim.verifier import pkcs11 as p11  # noqa: E402

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
TOKEN = "capsim-test"
PIN_TOKEN = "capsim-pin"
USER_PIN = "246810"
SO_PIN = "13579111"

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IMK_SMI = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
IMK_SMC = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM2 installation private to this test session."""

    module: str
    conf: Path
    token: str
    pin: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), "CAPSIM_PKCS11_PIN": self.pin}

    def provider(self, **kwargs: Any) -> p11.Pkcs11Provider:
        return p11.Pkcs11Provider(p11.open_token(self.module, self.token), pin=self.pin, **kwargs)


_SOFTHSM: list[SoftHsm] = []


def softhsm_module() -> str | None:
    return next((m for m in SOFTHSM_MODULES if Path(m).exists()), None)


def make_softhsm() -> SoftHsm:
    """Create (once per process) a private token directory with two initialised tokens."""
    if _SOFTHSM:
        return _SOFTHSM[0]
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    base = Path(tempfile.mkdtemp(prefix="capsim-softhsm-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the library is first loaded
    for label in (TOKEN, PIN_TOKEN):
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        )
    hsm = SoftHsm(module=module, conf=conf, token=TOKEN, pin=USER_PIN)
    token = p11.open_token(module, TOKEN)
    with token.open(rw=True, user_pin=USER_PIN) as session:
        p11.ensure_verifier_secrets(session, "capsim")
        p11.ensure_verifier_secrets(session, "unsealed", audit_seal=False)
    _SOFTHSM.append(hsm)
    return hsm


@pytest.fixture(scope="session")
def softhsm() -> SoftHsm:
    return make_softhsm()


@pytest.fixture(scope="module")
def token_provider(softhsm: SoftHsm) -> Iterator[p11.Pkcs11Provider]:
    provider = softhsm.provider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    yield provider
    provider.close()


def software(imk_ac: bytes = IMK_AC, imk_smi: bytes = IMK_SMI, imk_smc: bytes = IMK_SMC) -> SoftwareProvider:
    sw = SoftwareProvider()
    sw.add_issuer_keys("bank", imk_ac=imk_ac, imk_smi=imk_smi, imk_smc=imk_smc)
    return sw


# ------------------------------------------------------------------------------------------------
# Known answers and equality with the software provider


def test_known_answers(token_provider: p11.Pkcs11Provider) -> None:
    """Visa CVN 18 AC and ARPC of the card whose MK-AC is the vectors.md ICC key."""
    card = token_provider.register_card(issuer_key_id="bank", pan="5656781234567891", psn="01")
    sw = software()
    sw_card = sw.register_card(issuer_key_id="bank", pan="5656781234567891", psn="01")
    tv = bytes.fromhex("000000004000 000000000000 0124 8000048000 0124 191105 01 52BF4585")
    args = {"cdol1_data": tv, "aip": bytes.fromhex("1800"), "atc": bytes.fromhex("001C"),
            "iad": bytes.fromhex("06011203A0B800"), "un": tv[-4:]}  # fmt: skip
    ac = token_provider.generate_ac(card.key_ref, cvn=0x12, **args)
    assert ac == sw.generate_ac(sw_card.key_ref, cvn=0x12, **args)
    arpc = token_provider.generate_arpc(card.key_ref, cvn=0x12, arqc=ac, atc=bytes.fromhex("001C"))
    assert arpc == sw.generate_arpc(sw_card.key_ref, cvn=0x12, arqc=ac, atc=bytes.fromhex("001C"))
    assert card.pan_last4 == "7891"
    assert "5656781234567891" not in card.key_ref


_CVNS = list(CVN)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    imk=st.binary(min_size=16, max_size=16),
    pan=st.from_regex(r"[0-9]{12,19}", fullmatch=True),
    psn=st.from_regex(r"[0-9]{2}", fullmatch=True),
    atc=st.binary(min_size=2, max_size=2),
    un=st.binary(min_size=4, max_size=4),
    cdol=st.binary(min_size=0, max_size=40),
    iad=st.binary(min_size=18, max_size=32),
    option=st.sampled_from(["auto", "A", "B"]),
)
def test_every_cvn_equals_software(
    softhsm: SoftHsm,
    imk: bytes,
    pan: str,
    psn: str,
    atc: bytes,
    un: bytes,
    cdol: bytes,
    iad: bytes,
    option: str,
) -> None:
    """Every CVN's AC and ARPC through the token equal SoftwareProvider's, for random keys,
    PANs (Option A and B), PSNs, ATCs and unpredictable numbers."""
    provider = softhsm.provider(cache_size=4)
    try:
        provider.add_issuer_keys("bank", imk_ac=imk)
        sw = SoftwareProvider()
        sw.add_issuer_keys("bank", imk_ac=imk)
        ref = provider.register_card(issuer_key_id="bank", pan=pan, psn=psn, derivation=option).key_ref
        sw_ref = sw.register_card(issuer_key_id="bank", pan=pan, psn=psn, derivation=option).key_ref
        for cvn in _CVNS:
            fn = provider.ac_function(ref, cvn=cvn)
            want = sw.ac_function(sw_ref, cvn=cvn)(cdol, b"\x18\x00", atc, iad, un)
            assert fn(cdol, b"\x18\x00", atc, iad, un) == want, cvn
            assert fn(cdol, b"\x18\x00", atc, iad, un) == want  # from the cache
            kw: dict[str, Any] = {"arqc": want, "atc": atc, "un": un}
            assert provider.generate_arpc(ref, cvn=cvn, **kw) == sw.generate_arpc(sw_ref, cvn=cvn, **kw)
    finally:
        provider.close()


def test_session_key_methods_equal_generate_ac(token_provider: p11.Pkcs11Provider) -> None:
    """An explicit session-key method (the profile's) is honoured like in software."""
    ref = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
    sw = software()
    mk = sw._resolve(sw.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref)[0].reveal()
    for method in ("none", "emv-csk", "mastercard-skd"):
        fn = token_provider.ac_function(ref, cvn=0x10, method=method)
        got = fn(bytes(29), b"\x38\x00", b"\x00\x2a", bytes(18), b"\x01\x02\x03\x04")
        want = generate_ac(0x10, mk, cdol1_data=bytes(29), aip=b"\x38\x00", atc=b"\x00\x2a",
                           iad=bytes(18), un=b"\x01\x02\x03\x04", method=method)  # type: ignore[arg-type]  # fmt: skip
        assert got == want, method


def _outcome(fn: Any, *args: Any) -> bytes | str:
    """A cryptogram, or the typed refusal's class and message."""
    try:
        return bytes(fn(*args))
    except ValidationError as exc:
        return f"ValidationError: {exc}"


@pytest.mark.parametrize("method", ["none", "emv-csk", "mastercard-skd"])
def test_the_un_of_a_short_cdol1_follows_the_software_rule(
    token_provider: p11.Pkcs11Provider, method: str
) -> None:
    """Without an explicit UN the AC key takes the last 4 bytes of the CDOL1 data; CDOL1 data
    shorter than 4 bytes gives zeros, except for the SKD session key, which is refused: one rule
    (``capsim.crypto.ac_key_un``) for the token and the software provider alike, and a UN of the
    wrong size or type is refused the same way by both."""
    ref = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
    sw = software()
    sw_ref = sw.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
    token_fn = token_provider.ac_function(ref, cvn=0x10, method=method)
    sw_fn = sw.ac_function(sw_ref, cvn=0x10, method=method)
    outcomes = []
    for cdol in (b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04", bytes(range(1, 30))):
        for un in (None, b"\x0a\x0b\x0c\x0d", b"\x0a\x0b\x0c", "0a0b0c0d"):
            args = (cdol, b"\x38\x00", b"\x00\x2a", bytes(18), un)
            want = _outcome(sw_fn, *args)
            assert _outcome(token_fn, *args) == want, (cdol.hex(), un)
            outcomes.append(want)
    refused = [o for o in outcomes if isinstance(o, str)]
    assert len(refused) == (5 * 2 + 3 if method == "mastercard-skd" else 5 * 2)  # the rule is exercised


@pytest.mark.parametrize("cvn", [CVN.VISA_22, CVN.MC_16, CVN.MC_17, CVN.MC_20, CVN.MC_21, CVN.INTERAC_133])
def test_pin_scripts_equal_software(token_provider: p11.Pkcs11Provider, cvn: CVN) -> None:
    """PIN change and PIN unblock script commands: byte-identical to SoftwareProvider."""
    pan = "5413339000001513"
    ref = token_provider.register_card(issuer_key_id="bank", pan=pan, psn="01").key_ref
    sw = software()
    sw_ref = sw.register_card(issuer_key_id="bank", pan=pan, psn="01").key_ref
    for atc, arqc in (
        (b"\x00\x1c", bytes.fromhex("24CCF3DEE3158C70")),
        (b"\x12\x34", secrets.token_bytes(8)),
    ):
        for new_pin in ("9999", "123456789012", None):
            kw: dict[str, Any] = {"cvn": cvn, "new_pin": new_pin, "atc": atc, "arqc": arqc}
            assert token_provider.build_pin_change(ref, **kw) == sw.build_pin_change(sw_ref, **kw)


def test_known_mastercard_script_mac(token_provider: p11.Pkcs11Provider) -> None:
    """The vectors.md PIN change of Mastercard CVN 16 (ICC keys from the IMKs of its card)."""
    sw = software()
    pan = "5656781234567891"
    ref = token_provider.register_card(issuer_key_id="bank", pan=pan, psn="01").key_ref
    mk_ac, mk_smi, mk_smc = sw._resolve(sw.register_card(issuer_key_id="bank", pan=pan, psn="01").key_ref)
    assert mk_smi is not None
    assert mk_smc is not None
    kw: dict[str, Any] = {
        "new_pin": "9999",
        "atc": bytes.fromhex("001C"),
        "arqc": bytes.fromhex("24CCF3DEE3158C70"),
    }
    want = sm.build_pin_change(
        CVN.MC_16, mk_ac=mk_ac.reveal(), mk_smi=mk_smi.reveal(), mk_smc=mk_smc.reveal(), **kw
    )
    assert token_provider.build_pin_change(ref, cvn=CVN.MC_16, **kw) == want


# ------------------------------------------------------------------------------------------------
# What the token cannot do: typed errors


@pytest.mark.parametrize("cvn", [CVN.VISA_10, CVN.VISA_18])
def test_visa_xor_scripts_are_unsupported(token_provider: p11.Pkcs11Provider, cvn: CVN) -> None:
    ref = token_provider.register_card(issuer_key_id="bank", pan="4761739001010119").key_ref
    with pytest.raises(TokenUnsupported, match=f"Visa CVN {cvn.value} issuer scripts need key XOR") as info:
        token_provider.build_pin_change(ref, cvn=cvn, new_pin="1234", atc=b"\x00\x01", arqc=bytes(8))
    assert info.value.needed == "key XOR"
    assert info.value.reason == "mechanism"
    with pytest.raises(TokenUnsupported):
        token_provider.build_pin_change(ref, cvn=cvn, new_pin=None, atc=b"\x00\x01", arqc=bytes(8))


def test_vis_pin_block_and_tree_are_unsupported(token_provider: p11.Pkcs11Provider) -> None:
    ref = token_provider.register_card(issuer_key_id="bank", pan="4761739001010119").key_ref
    with pytest.raises(TokenUnsupported, match="VIS PIN block"):
        token_provider.build_pin_change(
            ref, cvn=CVN.VISA_22, new_pin="1234", current_pin="0000", atc=b"\x00\x01", arqc=bytes(8)
        )
    with pytest.raises(TokenUnsupported, match="EMV2000 tree"):
        token_provider.ac_function(ref, cvn=0x12, method="emv2000-tree")


# ------------------------------------------------------------------------------------------------
# Refusals: the keys stay in the token


def _objects(provider: p11.Pkcs11Provider, label_prefix: str) -> list[Any]:
    t = provider._thread()
    return [o for o in t.session.get_objects() if str(o[pkcs11.Attribute.LABEL]).startswith(label_prefix)]


def test_issuer_key_cannot_be_read_or_used_to_encrypt(softhsm: SoftHsm) -> None:
    provider = softhsm.provider()
    try:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC)
        (imk,) = _objects(provider, provider._issuers["bank"].ac)
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            imk[pkcs11.Attribute.VALUE]
        assert imk[pkcs11.Attribute.ENCRYPT] is False
        assert not hasattr(imk, "encrypt")
        with pytest.raises(pkcs11.exceptions.PKCS11Error):  # not modifiable: cannot be made to encrypt
            imk[pkcs11.Attribute.ENCRYPT] = True
        with pytest.raises(pkcs11.exceptions.PKCS11Error):  # not copyable
            imk.copy({pkcs11.Attribute.ENCRYPT: True})
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            imk[pkcs11.Attribute.EXTRACTABLE] = True
        # the card master keys it derives cannot be read either
        ref = provider.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
        provider.ac_function(ref, cvn=0x0A)(b"", b"\x18\x00", b"\x00\x01", bytes.fromhex("06010A03A00000"))
        (card,) = provider._thread().cards.values()
        for obj in (card.mk, card.ll):
            assert obj is not None
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                obj[pkcs11.Attribute.VALUE]
            assert obj[pkcs11.Attribute.EXTRACTABLE] is False
    finally:
        provider.close()


def test_every_derived_session_object_is_destroyed(softhsm: SoftHsm) -> None:
    """Session keys are destroyed after each computation; the cache holds at most
    ``cache_size`` cards (two objects each); close() destroys them."""
    provider = softhsm.provider(cache_size=2)
    try:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
        session = provider._thread().session
        before = len(list(session.get_objects({pkcs11.Attribute.TOKEN: False})))
        for pan in ("5413339000001513", "5413339000001521", "5413339000001539"):
            ref = provider.register_card(issuer_key_id="bank", pan=pan).key_ref
            for cvn in (0x0A, 0x12, 0x10):
                provider.ac_function(ref, cvn=cvn)(bytes(29), b"\x18\x00", b"\x00\x07", bytes(18), bytes(4))
            provider.build_pin_change(ref, cvn=0x10, new_pin="1234", atc=b"\x00\x07", arqc=bytes(8))
            provider.generate_arpc(ref, cvn=0x12, arqc=bytes(8), atc=b"\x00\x07")
        after = len(list(session.get_objects({pkcs11.Attribute.TOKEN: False})))
        assert after - before == 2 * 2  # two cached cards, MK-AC and MK-AC_L||MK-AC_L each
    finally:
        provider.close()


def test_no_cache_keeps_nothing(softhsm: SoftHsm) -> None:
    provider = softhsm.provider(cache_size=0)
    try:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC)
        session = provider._thread().session
        before = len(list(session.get_objects({pkcs11.Attribute.TOKEN: False})))
        ref = provider.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
        sw = software()
        sw_ref = sw.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
        args = (bytes(29), b"\x18\x00", b"\x00\x07", bytes(18), bytes(4))
        assert provider.ac_function(ref, cvn=0x0A)(*args) == sw.ac_function(sw_ref, cvn=0x0A)(*args)
        assert len(list(session.get_objects({pkcs11.Attribute.TOKEN: False}))) == before
    finally:
        provider.close()


def test_threads_use_their_own_sessions(token_provider: p11.Pkcs11Provider) -> None:
    ref = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
    sw = software()
    sw_ref = sw.register_card(issuer_key_id="bank", pan="5413339000001513").key_ref
    results: list[bool] = []
    sessions: list[object] = []

    def work(i: int) -> None:
        sessions.append(token_provider._thread().session)
        fn = token_provider.ac_function(ref, cvn=0x12)
        for atc in range(i * 20, i * 20 + 20):
            args = (bytes(29), b"\x18\x00", atc.to_bytes(2, "big"), bytes(18), bytes(4))
            results.append(fn(*args) == sw.ac_function(sw_ref, cvn=0x12)(*args))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [True] * 80
    assert len({id(s) for s in sessions}) == 4


# ------------------------------------------------------------------------------------------------
# References, PAN tokens, fingerprints, the audit seal


def test_references_and_pan_tokens(token_provider: p11.Pkcs11Provider, softhsm: SoftHsm) -> None:
    a = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513", psn="00")
    b = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513", psn="01")
    c = token_provider.register_card(issuer_key_id="bank", pan="5413339000001521", psn="00")
    assert a.pan_token == b.pan_token != c.pan_token
    tampered = a.key_ref[:-2] + ("AA" if a.key_ref[-2:] != "AA" else "BB")
    with pytest.raises(ValidationError, match="corrupt"):
        token_provider.ac_function(tampered, cvn=0x12)(
            bytes(29), b"\x18\x00", b"\x00\x01", bytes(18), bytes(4)
        )
    with pytest.raises(ValidationError, match="not a reference"):
        token_provider.ac_function("sw1:bank:auto:xyz", cvn=0x12)
    # a second provider on the same token resolves the references (the keys are token objects)
    other = softhsm.provider()
    try:
        other.add_token_keys("bank", label=token_provider._issuers["bank"].ac.rsplit("/", 1)[0])
        args = (bytes(29), b"\x18\x00", b"\x00\x05", bytes(18), bytes(4))
        assert other.ac_function(a.key_ref, cvn=0x12)(*args) == token_provider.ac_function(
            a.key_ref, cvn=0x12
        )(*args)
    finally:
        other.close()


def test_fingerprint_in_token_equals_software(token_provider: p11.Pkcs11Provider) -> None:
    fps = token_provider.issuer_fingerprints("bank")
    assert fps == {
        "imk-ac": derived_fingerprint(IMK_AC),
        "imk-smi": derived_fingerprint(IMK_SMI),
        "imk-smc": derived_fingerprint(IMK_SMC),
    }
    assert key_check_value(IMK_AC).hex() not in fps["imk-ac"]


def test_audit_seal_in_token(token_provider: p11.Pkcs11Provider) -> None:
    kid = token_provider.audit_seal_key_id()
    assert kid is not None
    assert kid.startswith("aud-")
    assert len(kid) == 20
    seal = token_provider.audit_seal(b"record")
    assert len(seal) == 32
    assert seal == token_provider.audit_seal(b"record") != token_provider.audit_seal(b"other")


def test_dummy_reference_costs_like_a_card(token_provider: p11.Pkcs11Provider) -> None:
    fn = token_provider.ac_function(token_provider.dummy_key_ref(), cvn=0x12, method="emv-csk")
    a = fn(bytes(29), b"\x18\x00", b"\x00\x01", bytes(18), bytes(4))
    assert len(a) == 8
    assert a != fn(bytes(29), b"\x18\x00", b"\x00\x02", bytes(18), bytes(4))


# ------------------------------------------------------------------------------------------------
# Typed errors for a bad module, token, PIN or label


def test_missing_module_token_pin_and_label(softhsm: SoftHsm, tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot load the PKCS#11 module") as info:
        p11.open_token(str(tmp_path / "nothing.so"), TOKEN)
    assert info.value.reason == "module"
    with pytest.raises(TokenError, match="no single token") as info:
        p11.open_token(softhsm.module, "no-such-token")
    assert info.value.reason == "token"
    with pytest.raises(TokenError, match="refused the PIN") as info:
        p11.Pkcs11Provider(p11.open_token(softhsm.module, PIN_TOKEN), pin="000000")
    assert info.value.reason == "pin"
    assert "000000" not in str(info.value)
    # a token without the verifier's secrets: the missing label is named
    with pytest.raises(TokenError, match="capsim/pan-token") as info:
        p11.Pkcs11Provider(p11.open_token(softhsm.module, PIN_TOKEN), pin=USER_PIN)
    assert info.value.reason == "key"
    provider = softhsm.provider()
    try:
        with pytest.raises(TokenError, match="no-such-label/imk-ac") as info:
            provider.add_token_keys("other", label="no-such-label")
        assert info.value.reason == "key"
    finally:
        provider.close()


def test_locked_pin_maps_to_its_reason() -> None:
    """SoftHSM never locks a PIN; the mapping of the token's answer is checked on its own."""
    err = p11.token_error(pkcs11.exceptions.PinLocked(), "log in")
    assert isinstance(err, TokenError)
    assert err.reason == "locked"
    assert p11.token_error(pkcs11.exceptions.MechanismInvalid(), "x").reason == "mechanism"
    assert isinstance(p11.token_error(pkcs11.exceptions.DeviceError(), "x"), ConfigError)


def test_unsafe_token_key_is_refused(softhsm: SoftHsm) -> None:
    """An issuer key object that is extractable (or not sensitive) is not used."""
    provider = softhsm.provider()
    try:
        session = provider._thread().session
        template = p11.imk_template("weak/imk-ac", store=False)
        template[pkcs11.Attribute.EXTRACTABLE] = True
        template[pkcs11.Attribute.VALUE] = IMK_AC
        session.create_object(template)
        with pytest.raises(TokenError, match="sensitive and not extractable") as info:
            provider.add_token_keys("weak", label="weak")
        assert info.value.reason == "attributes"
    finally:
        provider.close()


def test_provider_never_shows_keys_or_pans(token_provider: p11.Pkcs11Provider) -> None:
    import pickle

    card = token_provider.register_card(issuer_key_id="bank", pan="5413339000001513")
    text = repr(token_provider) + str(token_provider) + repr(card)
    assert "5413339000001513" not in text
    assert IMK_AC.hex() not in text.lower()
    with pytest.raises(TypeError):
        pickle.dumps(token_provider)


def test_kd_option_b_for_long_pans(token_provider: p11.Pkcs11Provider) -> None:
    pan = "12345678901234567"
    for option in KeyDerivation:
        ref = token_provider.register_card(
            issuer_key_id="bank", pan=pan, psn="01", derivation=option.value
        ).key_ref
        sw = software()
        sw_ref = sw.register_card(issuer_key_id="bank", pan=pan, psn="01", derivation=option.value).key_ref
        mk = sw._resolve(sw_ref)[0].reveal()
        args: dict[str, Any] = {
            "cdol1_data": bytes(29),
            "aip": b"\x18\x00",
            "atc": b"\x00\x09",
            "iad": bytes(18),
        }
        got = token_provider.ac_function(ref, cvn=0x12)(
            bytes(29), b"\x18\x00", b"\x00\x09", bytes(18), bytes(4)
        )
        assert got == generate_ac(0x12, mk, **args)
        assert token_provider.generate_arpc(ref, cvn=0x10, arqc=got, atc=b"\x00\x09") == generate_arpc(
            0x10, mk, arqc=got, atc=b"\x00\x09"
        )
