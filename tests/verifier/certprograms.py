"""Store calls on the certificate tables (migration 0007) for the differential store programs.

:func:`cert_call` draws one call; :func:`apply_cert_call` runs it in a transaction;
:func:`read_cert_tables` reads the tables back at the end of a program. The programs of
``test_sqlite_store.py`` (and ``test_postgres_store.py``) mix them with the other store calls,
and run programs of them alone so that the unique indexes and compare-and-swaps meet often.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from capsim.verifier.certmodel import (
    CertChallenge,
    CertCredential,
    CertState,
    ChallengePurpose,
    Organisation,
    OrgKind,
    OrgUser,
)
from capsim.verifier.model import UserRole

__all__ = ["CERT_CALLS", "apply_cert_call", "cert_call", "make_cert", "read_cert_tables"]

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)  # the differential programs' clock
UIDS = ("u1", "u2")
_times = st.integers(min_value=-3, max_value=3).map(
    lambda s: T0 + timedelta(seconds=60 * s, microseconds=7 * s)
)
_opt_times = st.none() | _times
CERT_CALLS = frozenset({"update_org_user", "update_cert", "list_certs", "update_cert_challenge"})

ORGS = ("g1", "g2")
CERT_IDS = ("t1", "t2", "t3")
CH_IDS = ("h1", "h2")
KEYS = (b"\x0a" * 32, b"\x0b" * 32)


def make_cert(cert_id: str, **kw: Any) -> CertCredential:
    base: dict[str, Any] = {
        "cert_id": cert_id,
        "user_id": "u1",
        "org_id": "g1",
        "state": CertState.ACTIVE,
        "spki_digest": KEYS[0],
        "cert_der": b"\x30\x03\x02\x01\x01",
        "serial": "1F",
        "subject": "CN=Alice Martin",
        "not_after": T0 + timedelta(days=365),
        "created_at": T0,
    }
    base.update(kw)
    return CertCredential(**base)


@st.composite
def cert_call(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(
        st.sampled_from(
            [
                "insert_org", "get_org", "lock_org", "insert_org_user", "get_org_user", "find_org_user",
                "list_org_users", "update_org_user", "insert_cert", "get_cert", "lock_cert",
                "find_live_cert", "list_certs", "update_cert", "insert_cert_challenge",
                "get_cert_challenge", "update_cert_challenge",
                # the writes again, so that unique indexes and compare-and-swaps meet often
                "insert_org_user", "insert_org_user", "insert_cert", "insert_cert", "update_cert",
                "insert_cert_challenge", "update_cert_challenge", "update_cert_challenge",
            ]
        )
    )  # fmt: skip
    org = draw(st.sampled_from(ORGS))
    if kind == "insert_org":
        kind_ = draw(st.sampled_from(OrgKind))
        return (kind, Organisation(org_id=org, name="ACME", kind=kind_, master_digest=KEYS[0], created_at=T0))
    if kind in ("get_org", "lock_org", "list_org_users"):
        return (kind, org)
    if kind == "insert_org_user":
        return (
            kind,
            OrgUser(
                user_id=draw(st.sampled_from(UIDS)),
                org_id=org,
                role=draw(st.sampled_from(UserRole)),
                id_digest=draw(st.sampled_from(KEYS)),
                created_at=draw(_times),
                disabled=draw(st.booleans()),
            ),
        )
    if kind == "get_org_user":
        return (kind, draw(st.sampled_from(UIDS)))
    if kind == "find_org_user":
        return (kind, org, draw(st.sampled_from(KEYS)))
    if kind == "update_org_user":
        return (kind, draw(st.sampled_from(UIDS)), draw(st.booleans()), draw(st.booleans()))
    cert_id = draw(st.sampled_from(CERT_IDS))
    if kind == "insert_cert":
        return (
            kind,
            make_cert(
                cert_id,
                user_id=draw(st.sampled_from(UIDS)),
                org_id=org,
                state=draw(st.sampled_from(CertState)),
                spki_digest=draw(st.sampled_from(KEYS)),
                supplementary=draw(st.booleans()),
            ),
        )
    if kind in ("get_cert", "lock_cert"):
        return (kind, cert_id)
    if kind == "find_live_cert":
        return (kind, draw(st.sampled_from(KEYS)))
    if kind == "list_certs":
        return (kind, draw(st.none() | st.sampled_from(ORGS)), draw(st.none() | st.sampled_from(UIDS)))
    if kind == "update_cert":
        changes = {
            "state": draw(st.sampled_from(CertState)),
            "fail_count": draw(st.integers(0, 5)),
            "locked_until": draw(_opt_times),
            "lock_escalations": draw(st.integers(0, 3)),
            "escalation_started_at": draw(_opt_times),
            "label": draw(st.sampled_from(["", "spare key"])),
            "serial": "FF",  # fixed columns must be ignored by the store
        }
        return (kind, cert_id, draw(st.booleans()), changes)
    ch_id = draw(st.sampled_from(CH_IDS))
    if kind == "insert_cert_challenge":
        purpose = draw(st.sampled_from(ChallengePurpose))
        return (
            kind,
            CertChallenge(
                challenge_id=ch_id,
                purpose=purpose,
                org_id=org,
                cert_id=cert_id if purpose is ChallengePurpose.OPERATION else None,
                nonce=bytes(32),
                txn_digest=KEYS[1],
                details=(("amount_minor", "100"), ("payee", draw(st.sampled_from(["FR76", "ünï"])))),
                created_at=T0,
                expires_at=draw(_times),
                attempts=draw(st.integers(0, 2)),
            ),
        )
    if kind == "get_cert_challenge":
        return (kind, ch_id)
    # the compare-and-swap against the stored attempts, or a stale count (True)
    return (kind, ch_id, draw(st.integers(0, 3)), draw(_opt_times), draw(st.booleans()))


def apply_cert_call(tx: Any, call: tuple[Any, ...]) -> Any:
    """Run one of the :data:`CERT_CALLS` that need more than ``getattr(tx, kind)(*args)``."""
    kind, *args = call
    if kind == "update_org_user":
        uid, disabled, stale = args
        cur = tx.get_org_user(uid)
        expected = (1 if cur is None else cur.version) - stale
        base = (
            cur
            if cur is not None
            else OrgUser(user_id=uid, org_id="g1", role=UserRole.USER, id_digest=KEYS[0], created_at=T0)
        )
        return tx.update_org_user(
            dataclasses.replace(base, disabled=disabled, version=expected + 1), expected_version=expected
        )
    if kind == "update_cert":
        cert_id, stale, changes = args
        cur = tx.get_cert(cert_id)
        expected = (1 if cur is None else cur.version) - stale
        base = cur if cur is not None else make_cert(cert_id)
        return tx.update_cert(
            dataclasses.replace(base, version=expected + 1, **changes), expected_version=expected
        )
    if kind == "list_certs":
        return tx.list_certs(org_id=args[0], user_id=args[1])
    if kind == "update_cert_challenge":
        ch_id, attempts, consumed, stale = args
        cur = tx.get_cert_challenge(ch_id)
        expected = (0 if cur is None else cur.attempts) - stale
        base = cur if cur is not None else CertChallenge(
            challenge_id=ch_id, purpose=ChallengePurpose.REGISTER, org_id="g1", nonce=bytes(32),
            txn_digest=KEYS[1], created_at=T0, expires_at=T0,
        )  # fmt: skip
        return tx.update_cert_challenge(
            dataclasses.replace(base, attempts=attempts, consumed_at=consumed), expected_attempts=expected
        )
    raise AssertionError(kind)


def read_cert_tables(tx: Any) -> list[Any]:
    """Every row of the certificate tables the programs can reach, in a fixed order."""
    out: list[Any] = []
    for org in ORGS:
        out.append(tx.list_org_users(org))
        out.append(tx.list_certs(org_id=org))
    for ch_id in CH_IDS:
        out.append(tx.get_cert_challenge(ch_id))
    return out
