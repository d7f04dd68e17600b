"""Moving a software-keyed verifier onto a SoftHSM2 token: the store's rebind and the migration.

``rebind_credential`` is checked on every store backend (memory, SQLite, the throwaway
PostgreSQL cluster); the migration runs enrolled emulated cards from
:class:`~capsim.verifier.provider.SoftwareProvider` keys onto the test session's token
(tests/verifier/test_pkcs11.py) on each backend, and codes verify before and after.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator

import pytest

from capsim.errors import ConfigError, InvalidCode, ValidationError
from capsim.verifier.model import CredentialState
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import CardIdentity, SoftwareProvider
from capsim.verifier.service import Verifier
from tests.verifier.conftest import IMK_AC, IMK_SMC, IMK_SMI, Bench, Clock, StoreFactory, make_bench
from tests.verifier.test_pkcs11 import SoftHsm, softhsm  # noqa: F401
from tests.verifier.test_sqlite_store import make_credential

pytest.importorskip("pkcs11")

from capsim.verifier import pkcs11migrate as mig
from capsim.verifier.pkcs11 import Pkcs11Provider

# ------------------------------------------------------------------------------------------------
# The store method, on every backend


def test_rebind_changes_only_the_key_reference_and_pan_token(store_factory: StoreFactory) -> None:
    store = store_factory()
    with store.transaction() as tx:
        assert tx.insert_credential(make_credential("c1", last_atc=41, fail_count=2, pan_token="old")) == 1
        assert (
            tx.insert_credential(
                make_credential("c0", last_atc=57, pan_token="old", state=CredentialState.REVOKED)
            )
            == 1
        )
    with store.transaction() as tx:
        before = tx.lock_credential("c1")
        assert before is not None
        assert tx.rebind_credential("c1", key_ref="p11:x", pan_token="new", expected_version=0) == 0  # stale
        assert tx.rebind_credential("nope", key_ref="p11:x", pan_token="new", expected_version=1) == 0
        assert tx.rebind_credential("c1", key_ref="p11:x", pan_token="new", expected_version=1) == 1
    with store.transaction() as tx:
        after = tx.get_credential("c1")
        assert after == dataclasses.replace(before, key_ref="p11:x", pan_token="new", version=2)
        assert [c.credential_id for c in tx.list_credentials(pan_token="new")] == ["c1"]
        assert [c.credential_id for c in tx.list_credentials(pan_token="old")] == ["c0"]
        assert tx.card_floor("new", "01") == 41
        # update_credential still never changes them
        changed = dataclasses.replace(after, key_ref="sw1:y", pan_token="old", version=3, label="x")
        assert tx.update_credential(changed, expected_version=2) == 1
        again = tx.get_credential("c1")
        assert again is not None
        assert (again.key_ref, again.pan_token, again.label) == ("p11:x", "new", "x")


def test_rebind_keeps_one_live_credential_per_card_and_rolls_back(store_factory: StoreFactory) -> None:
    store = store_factory()
    with store.transaction() as tx:
        tx.insert_credential(make_credential("c1", pan_token="a"))
        tx.insert_credential(make_credential("c2", pan_token="b"))
        tx.insert_credential(make_credential("c3", pan_token="c", state=CredentialState.REVOKED))

    def two_rebinds() -> None:
        with store.transaction() as tx:
            assert tx.rebind_credential("c3", key_ref="p11:3", pan_token="b", expected_version=1) == 1
            tx.rebind_credential("c1", key_ref="p11:1", pan_token="b", expected_version=1)

    with pytest.raises(ValidationError):
        two_rebinds()
    with store.transaction() as tx:  # the whole transaction rolled back
        assert [c.credential_id for c in tx.list_credentials(pan_token="b")] == ["c2"]
        c1 = tx.get_credential("c1")
        assert c1 is not None
        assert (c1.key_ref, c1.version) == ("key-c1", 1)
        with pytest.raises(ValidationError, match="key_ref"):
            tx.rebind_credential("c1", key_ref="", pan_token="b", expected_version=1)


# ------------------------------------------------------------------------------------------------
# The migration, on the token and every backend


@pytest.fixture
def token(softhsm: SoftHsm) -> Iterator[Pkcs11Provider]:  # noqa: F811
    provider = softhsm.provider(secrets_prefix="unsealed")
    provider.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    yield provider
    provider.close()


def _cards(store_factory: StoreFactory, n: int) -> tuple[list[Bench], SoftwareProvider]:
    clock = Clock()
    store = store_factory(clock)
    software = SoftwareProvider()
    software.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    verifier = Verifier(store, software, policy=VerifierPolicy())
    benches = []
    for i in range(n):
        pan = f"54133390000{i:05d}"
        b = make_bench(store, clock, pan=pan, user=f"u{i}", provider=software, verifier=verifier)
        r = b.identify()
        assert b.verifier.verify(b.cid, r.code, request_id=_rid()).atc == r.atc
        benches.append(b)
    return benches, software


def _rid() -> str:
    return f"req-{secrets.token_hex(8)}"


def _state(b: Bench) -> list[tuple[str, str, int, int]]:
    with b.store.transaction() as tx:
        return [(c.credential_id, c.key_ref, c.last_atc, c.version) for c in tx.list_credentials()]


def _verify_next(b: Bench, verifier: Verifier) -> None:
    r = b.identify()
    assert verifier.verify(b.cid, r.code, request_id=_rid()).atc == r.atc
    with pytest.raises(InvalidCode):
        verifier.verify(b.cid, r.code, request_id=_rid())  # a replay is still one


def test_migration_moves_every_card_and_codes_verify_on_the_token(
    store_factory: StoreFactory, token: Pkcs11Provider
) -> None:
    benches, software = _cards(store_factory, 3)
    store = benches[0].store
    floors = {}
    with store.transaction() as tx:
        for c in tx.list_credentials():
            floors[c.credential_id] = (tx.card_floor(c.pan_token, c.psn), c.last_atc, c.fail_count, c.state)
    report = mig.migrate_credentials(store, software, token, issuers=["bank"], sealer=None)
    assert sorted(report.rebound) == sorted(b.cid for b in benches)
    assert report.refused == {}
    on_token = Verifier(store, token, policy=VerifierPolicy())
    with store.transaction() as tx:
        for c in tx.list_credentials():
            assert c.key_ref.startswith("p11:bank:")
            assert (tx.card_floor(c.pan_token, c.psn), c.last_atc, c.fail_count, c.state) == floors[
                c.credential_id
            ]
    audit = [r.entry for r in store.audit_records() if r.entry.event == "key-migration"]
    assert sorted(a.credential_id or "" for a in audit) == sorted(b.cid for b in benches)
    assert all("54133390000" not in repr(a) for a in audit)  # no PAN in the audit
    for b in benches:
        _verify_next(b, on_token)
    # a second run changes nothing
    before = [_state(benches[0]), len(list(store.audit_records()))]
    again = mig.migrate_credentials(store, software, token, issuers=["bank"], sealer=None)
    assert (again.rebound, again.refused, again.already) == ([], {}, 3)
    assert [_state(benches[0]), len(list(store.audit_records()))] == before


def test_an_interrupted_migration_resumes_and_every_card_verifies_meanwhile(
    store_factory: StoreFactory, token: Pkcs11Provider
) -> None:
    benches, software = _cards(store_factory, 3)
    store = benches[0].store
    moved: list[str] = []

    def crash_after_one(cid: str) -> None:
        moved.append(cid)
        raise RuntimeError("the migration process died")

    with pytest.raises(RuntimeError):
        mig.migrate_credentials(
            store, software, token, issuers=["bank"], sealer=None, progress=crash_after_one
        )
    refs = {cid: ref for cid, ref, _, _ in _state(benches[0])}
    assert [cid for cid, ref in refs.items() if ref.startswith("p11:")] == moved
    assert sum(ref.startswith("sw1:") for ref in refs.values()) == 2
    # every credential verifies whichever keys it is on; enrolment waits
    routed = mig.MigratingProvider(token, software)
    during = Verifier(store, routed, policy=VerifierPolicy())
    for b in benches:
        _verify_next(b, during)
    with pytest.raises(ConfigError, match="enrolment is paused"):
        routed.register_card(issuer_key_id="bank", pan="5413339000001513")
    report = mig.migrate_credentials(store, software, token, issuers=["bank"], sealer=None)
    assert sorted(report.rebound) == sorted(set(refs) - set(moved))
    assert report.already == 1
    after = Verifier(store, token, policy=VerifierPolicy())
    for b in benches:
        _verify_next(b, after)


def test_a_card_whose_keys_differ_on_the_token_is_refused_and_left_as_it_was(
    store_factory: StoreFactory,
    softhsm: SoftHsm,  # noqa: F811
) -> None:
    benches, software = _cards(store_factory, 2)
    store = benches[0].store
    before = _state(benches[0])
    for other, reason in (
        ({"imk_ac": bytes(reversed(IMK_AC)), "imk_smi": IMK_SMI, "imk_smc": IMK_SMC}, "keys-differ"),
        ({"imk_ac": IMK_AC, "imk_smi": IMK_SMI, "imk_smc": secrets.token_bytes(16)}, "script-keys-differ"),
    ):
        wrong = softhsm.provider(secrets_prefix="unsealed")
        try:
            wrong.add_issuer_keys("bank", **other)
            report = mig.migrate_credentials(store, software, wrong, issuers=["bank"], sealer=None)
        finally:
            wrong.close()
        assert report.rebound == []
        assert report.refused == {b.cid: reason for b in benches}
        assert _state(benches[0]) == before
        assert not [r for r in store.audit_records() if r.entry.event == "key-migration"]
    for b in benches:
        _verify_next(b, b.verifier)  # still on the software keys


def test_a_verification_during_the_migration_is_kept(
    store_factory: StoreFactory, token: Pkcs11Provider
) -> None:
    """A code accepted between the keys check and the rebind is not lost: the rebind locks
    the row and changes only the key reference and PAN token (compare-and-swap on the
    version it locked)."""
    benches, software = _cards(store_factory, 1)
    b = benches[0]
    seen: list[int] = []

    class Racing(SoftwareProvider):
        def card_identity(self, key_ref: str) -> CardIdentity:
            out = software.card_identity(key_ref)
            r = b.identify()  # a verification lands meanwhile
            seen.append(b.verifier.verify(b.cid, r.code, request_id=_rid()).atc)
            return out

    racing = Racing()
    racing.add_issuer_keys("bank", imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    report = mig.migrate_credentials(b.store, racing, token, issuers=["bank"], sealer=None)
    assert report.rebound == [b.cid]
    ((_, ref, last_atc, _),) = _state(b)
    assert ref.startswith("p11:")
    assert last_atc == seen[0]
    _verify_next(b, Verifier(b.store, token, policy=VerifierPolicy()))
