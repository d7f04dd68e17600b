"""PKCS#11 from Python (python-pkcs11 over OpenSC's ``opensc-pkcs11.so``) with a served PIV card.

The card is served by ``capsim card serve`` in its own process (OpenSC's module runs inside
this one, and the card must answer while a PKCS#11 call waits); its counters are read from
the card file, which the card writes before each answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from capsim.cards.piv import read_piv_card_file
from tests.pcsc.piv_support import (
    HOLDER,
    PIN,
    certificate,
    opensc_module,
    piv_card_file,
    serve_process,
    verify_signature,
)
from tests.pcsc.stack import PcscdStack

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install 'capsim[pkcs11]')")

pytestmark = [pytest.mark.pcsc, pytest.mark.timeout(120)]

CHALLENGE = b"capsim registration challenge 5f1c9a"


@pytest.fixture(scope="module")
def token_file(
    pcscd_session: PcscdStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    """One PIV card file served for the module, and OpenSC's PKCS#11 token for it."""
    if not pcscd_session.running:
        pcscd_session.start()
    path, _ = piv_card_file(tmp_path_factory.mktemp("piv"))
    with serve_process(path, pcscd_session):
        lib = pkcs11.lib(opensc_module())
        yield lib.get_token(token_label=HOLDER), path


def _signing_key(session: Any, key_id: int) -> Any:
    return session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, id=bytes([key_id]))


def test_the_token_holds_the_card_certificates(token_file: tuple[Any, Path]) -> None:
    token, path = token_file
    with token.open() as session:  # certificates are public: no login
        found = {
            bytes(obj[pkcs11.Attribute.ID]): x509.load_der_x509_certificate(obj[pkcs11.Attribute.VALUE])
            for obj in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE})
        }
    assert found == {b"\x01": certificate(path, 0x9A), b"\x02": certificate(path, 0x9C)}


def test_an_rsa_signature_of_the_9a_key_verifies_against_its_certificate(
    token_file: tuple[Any, Path],
) -> None:
    token, path = token_file
    with token.open(user_pin=PIN) as session:
        key = _signing_key(session, 1)
        signatures = [key.sign(CHALLENGE, mechanism=pkcs11.Mechanism.SHA256_RSA_PKCS) for _ in range(2)]
    for signature in signatures:  # "PIN once": one login, any number of signatures
        verify_signature(certificate(path, 0x9A), signature, CHALLENGE, raw_ecdsa=False)


def test_the_pin_always_9c_key_signs_once_per_pin_verification(token_file: tuple[Any, Path]) -> None:
    token, path = token_file
    signatures = []
    for _ in range(2):  # a session each: python-pkcs11 makes no context-specific login
        with token.open(user_pin=PIN) as session:
            key = _signing_key(session, 2)
            assert key[pkcs11.Attribute.ALWAYS_AUTHENTICATE] is True
            signatures.append(key.sign(CHALLENGE, mechanism=pkcs11.Mechanism.ECDSA_SHA256))
    assert signatures[0] != signatures[1]
    for signature in signatures:
        verify_signature(certificate(path, 0x9C), signature, CHALLENGE, raw_ecdsa=True)


def test_a_wrong_pin_is_refused_and_counted_on_the_card(token_file: tuple[Any, Path]) -> None:
    token, path = token_file
    with pytest.raises(pkcs11.exceptions.PinIncorrect):
        token.open(user_pin="000000")
    assert read_piv_card_file(path)[1].pin_tries == 2
    with token.open(user_pin=PIN) as session:
        assert _signing_key(session, 1).key_type == pkcs11.KeyType.RSA
    assert read_piv_card_file(path)[1].pin_tries == 3
