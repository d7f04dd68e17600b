"""Audit, data protection and key custody (verifier.md V37–V40)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import pickle
from typing import Any

import pytest

from capsim.errors import InvalidCode, TemporaryFailure, ValidationError
from capsim.verifier.audit import AuditEntry, AuditRecord, check_chain, seal
from capsim.verifier.provider import CardKeys, CryptogramProvider, SecretKey, SoftwareProvider
from capsim.verifier.service import Verifier
from tests.verifier.conftest import IMK_AC, IMK_SMC, IMK_SMI, PAN, Clock, StoreFactory, make_bench
from tests.verifier.helpers import MODES, new_op, run_mode


def _audit(b: Any) -> list[AuditRecord]:
    return list(b.store.audit_records())


# -- V37 ----------------------------------------------------------------------------------------------


def test_v37_every_verify_writes_exactly_one_record_with_its_fields(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    op = new_op(b, "sign")
    r = run_mode(b, op)
    n = len(_audit(b))
    acc = b.verifier.verify(op.operation_id, r.code, request_id="audit-1")
    records = _audit(b)
    assert len(records) == n + 1
    e = records[-1].entry
    assert e.event == "verify"
    assert e.outcome == "accept"
    assert e.request_id == "audit-1"
    assert e.credential_id == b.cid
    assert e.operation_id == op.operation_id
    assert e.atc == acc.atc
    assert e.mode == "sign"
    assert e.txn_digest == op.txn_digest
    assert e.node == "capsim"
    assert e.duration_us >= 0
    assert records[-1].at == clock.now
    for code, rid in (("00000000", "audit-2"), (r.code, "audit-3"), ("00000000", "audit-2")):
        n = len(_audit(b))
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, code, request_id=rid)
        assert len(_audit(b)) == n + 1
        assert _audit(b)[-1].entry.outcome == "reject"


def test_v37_record_is_in_the_same_transaction_as_the_state_change(
    store_factory: StoreFactory, clock: Clock
) -> None:
    """A transaction that rolls back leaves neither the state change nor its record."""
    b = make_bench(store_factory(clock), clock)
    n = len(_audit(b))
    cred = b.refresh()

    def crash() -> None:
        with b.store.transaction() as tx:
            tx.append_audit(AuditEntry(event="verify", outcome="accept"))
            tx.update_credential(
                dataclasses.replace(cred, last_atc=99, version=cred.version + 1),
                expected_version=cred.version,
            )
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash()
    assert len(_audit(b)) == n
    assert b.refresh().last_atc == cred.last_atc


# -- V38 ----------------------------------------------------------------------------------------------


def test_v38_no_code_pan_key_or_pin_in_any_output(
    store_factory: StoreFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = make_bench(store_factory(clock), clock)
    submitted: list[str] = [b.first.code]
    texts: list[str] = []
    for mode in MODES:
        op = new_op(b, mode)
        r = run_mode(b, op)
        submitted.append(r.code)
        try:
            b.verifier.verify(
                b.cid if mode == "identify" else op.operation_id,
                f"{(int(r.code) + 1) % 10**8:08d}",
                request_id=b.rid(),
            )
        except InvalidCode as exc:
            texts += [str(exc), repr(exc), repr(exc.args)]
        submitted.append(f"{(int(r.code) + 1) % 10**8:08d}")
        b.verifier.verify(op.operation_id, r.code, request_id=b.rid())
    wrong = "13572468"
    submitted.append(wrong)
    for target in (b.cid, "cr-unknown", "op-unknown"):
        with pytest.raises(InvalidCode) as info:
            b.verifier.verify(target, wrong, request_id=b.rid())
        texts += [str(info.value), repr(info.value)]
    with pytest.raises(ValidationError) as bad:
        b.verifier.verify(b.cid, "1234567x", request_id=b.rid())
    texts.append(str(bad.value))
    script = b.verifier.build_pin_script(b.cid, arqc=bytes(8), atc=5, new_pin="864297531246")
    assert script
    texts += [rec.message for rec in caplog.records]
    texts += [str(r) for r in _audit(b)]
    texts += [repr(b.refresh()), repr(b.verifier), repr(b.provider), repr(b.store)]
    with b.store.transaction() as tx:
        texts += [repr(a) for a in tx.list_acceptances(b.cid)]
    from capsim.verifier.audit import canonical_bytes

    texts += [canonical_bytes(r.entry, seq=r.seq, at=r.at).decode() for r in _audit(b)]
    blob = "\n".join(texts)
    for secret in [*submitted, PAN, IMK_AC.hex(), IMK_AC.hex().upper(), "864297531246"]:
        assert secret not in blob, secret


# -- V39 ----------------------------------------------------------------------------------------------


def test_v39_checker_flags_deleted_reordered_and_edited_records(
    store_factory: StoreFactory, clock: Clock
) -> None:
    b = make_bench(store_factory(clock), clock)
    for _ in range(3):
        b.verifier.verify(b.cid, b.identify().code, request_id=b.rid())
    records = _audit(b)
    assert len(records) >= 6
    assert check_chain(records) == ()
    assert b.verifier.check_audit() == ()
    deleted = records[:2] + records[3:]
    assert {p.kind for p in check_chain(deleted)} >= {"gap", "broken-link"}
    swapped = [*records[:2], records[3], records[2], *records[4:]]
    assert {p.kind for p in check_chain(swapped)} >= {"order", "broken-link"}
    edited_entry = dataclasses.replace(records[2].entry, outcome="accept", reason="")
    edited = [*records[:2], dataclasses.replace(records[2], entry=edited_entry), *records[3:]]
    assert [(p.seq, p.kind) for p in check_chain(edited)] == [(records[2].seq, "edited")]
    resealed = seal(edited_entry, seq=records[2].seq, at=records[2].at, prev_hash=records[2].prev_hash)
    forged = [*records[:2], resealed, *records[3:]]
    assert [(p.seq, p.kind) for p in check_chain(forged)] == [(records[3].seq, "broken-link")]
    truncated_tail = records[:-1]
    assert check_chain(truncated_tail) == ()  # a cut tail needs the head hash kept elsewhere


# -- V40 ----------------------------------------------------------------------------------------------


def test_v40_keys_never_in_repr_str_exceptions_or_pickles() -> None:
    key = SecretKey(IMK_AC)
    for text in (repr(key), str(key), f"{key}"):
        assert IMK_AC.hex() not in text.lower()
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            attempt(key)
    provider = SoftwareProvider()
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    with pytest.raises(TypeError):
        pickle.dumps(provider)
    for text in (repr(provider), str(provider)):
        assert IMK_AC.hex().upper() not in text.upper()
    with pytest.raises(Exception) as info:
        provider.add_issuer_keys("bank", imk_ac=IMK_AC)
    assert IMK_AC.hex() not in str(info.value).lower()
    with pytest.raises(ValidationError) as info2:
        provider.ac_function("sw1:bank:auto:AAAA", cvn=10)
    assert IMK_AC.hex() not in str(info2.value).lower()
    keys = provider.register_card(issuer_key_id="bank", pan=PAN)
    assert PAN not in keys.key_ref
    assert PAN not in keys.pan_token


class MockHsm:
    """A stand-in HSM: keys live in slots inside it; callers get slot handles only."""

    def __init__(self) -> None:
        self._inner = SoftwareProvider(cache_size=0)
        self.commands = 0

    def load_issuer_key(self, slot: str, imk_ac: bytes, imk_smi: bytes, imk_smc: bytes) -> None:
        self._inner.add_issuer_keys(slot, imk_ac=imk_ac, imk_smi=imk_smi, imk_smc=imk_smc)

    def command(self, name: str, **kwargs: Any) -> Any:
        self.commands += 1
        return getattr(self._inner, name)(**kwargs)


class HsmProvider:
    """A :class:`CryptogramProvider` adapter over the mock HSM: every call is an HSM command."""

    def __init__(self, hsm: MockHsm) -> None:
        self._hsm = hsm

    def register_card(
        self, *, issuer_key_id: str, pan: str, psn: str = "00", derivation: str = "auto"
    ) -> CardKeys:
        return self._hsm.command(
            "register_card", issuer_key_id=issuer_key_id, pan=pan, psn=psn, derivation=derivation
        )

    def ac_function(self, key_ref: str, *, cvn: int, method: str | None = None, tree: Any = None) -> Any:
        def fn(cdol: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes) -> bytes:
            return self.generate_ac(
                key_ref, cvn=cvn, cdol1_data=cdol, aip=aip, atc=atc, iad=iad, un=un, method=method, tree=tree
            )

        return fn

    def generate_ac(self, key_ref: str, **kwargs: Any) -> bytes:
        result: bytes = self._hsm.command("generate_ac", key_ref=key_ref, **kwargs)
        return result

    def build_pin_change(self, key_ref: str, **kwargs: Any) -> bytes:
        result: bytes = self._hsm.command("build_pin_change", key_ref=key_ref, **kwargs)
        return result

    def dummy_key_ref(self) -> str:
        result: str = self._hsm.command("dummy_key_ref")
        return result


def test_v40_hsm_provider_passes_the_suite_against_a_mock(store_factory: StoreFactory, clock: Clock) -> None:
    hsm = MockHsm()
    hsm.load_issuer_key("bank", IMK_AC, IMK_SMI, IMK_SMC)
    provider = HsmProvider(hsm)
    assert isinstance(provider, CryptogramProvider)
    b = make_bench(store_factory(clock), clock, provider=provider)  # type: ignore[arg-type]
    for mode in MODES:
        op = new_op(b, mode)
        r = run_mode(b, op)
        with pytest.raises(InvalidCode):
            b.verifier.verify(op.operation_id, f"{(int(r.code) + 3) % 10**8:08d}", request_id=b.rid())
        assert b.verifier.verify(op.operation_id, r.code, request_id=b.rid()).atc == r.atc
    with pytest.raises(InvalidCode):
        b.verifier.verify("cr-nobody", "12345678", request_id=b.rid())
    assert hsm.commands > 0
    assert "bank" not in repr(provider) or IMK_AC.hex() not in repr(provider)


def test_v40_provider_outage_is_temporary(store_factory: StoreFactory, clock: Clock) -> None:
    hsm = MockHsm()
    hsm.load_issuer_key("bank", IMK_AC, IMK_SMI, IMK_SMC)
    provider = HsmProvider(hsm)
    b = make_bench(store_factory(clock), clock, provider=provider)  # type: ignore[arg-type]
    r = b.identify()

    def down(name: str, **kwargs: Any) -> Any:
        raise ConnectionResetError("hsm link down")

    hsm.command = down  # type: ignore[method-assign]
    with pytest.raises(TemporaryFailure):
        b.verifier.verify(b.cid, r.code, request_id="hsm")
    assert b.refresh().fail_count == 0
    assert Verifier  # the public service is what callers use


def test_v37_escalating_failure_still_writes_one_record(store_factory: StoreFactory, clock: Clock) -> None:
    from capsim.verifier.policy import VerifierPolicy

    b = make_bench(store_factory(clock), clock, policy=VerifierPolicy(escalate_after=1))
    for i in range(5):
        n = len(_audit(b))
        with pytest.raises(InvalidCode):
            b.verifier.verify(b.cid, f"{i:08d}", request_id=b.rid())
        assert len(_audit(b)) == n + 1
    assert _audit(b)[-1].entry.reason == "wrong-code-blocked"
