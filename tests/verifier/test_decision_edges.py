"""Edges of the accept decision no other verifier test reaches.

- A card's first code at enrolment is searched over the whole ATC window W (V1), not over the
  smaller gap an Identify login without an operation may have (V18): a card used a few times
  before it is enrolled still enrols.
- The audit record of a failed transaction (V22), written best effort in a separate
  transaction, is sealed like every other record when the key provider seals audit records:
  an audit checker never sees an unsealed record in a sealed chain.
"""

from __future__ import annotations

import os

import pytest

from capsim.cards import new_card
from capsim.errors import InvalidCode, TemporaryFailure
from capsim.reader import CapReader
from capsim.transports.inprocess import InProcessTransport
from capsim.verifier.audit import check_chain
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.postgres import PostgresStore
from capsim.verifier.service import Verifier
from tests.verifier.conftest import (
    IMK_AC,
    IMK_SMC,
    IMK_SMI,
    PAN,
    PIN,
    Clock,
    StoreFactory,
    make_bench,
    make_provider,
)
from tests.verifier.helpers import transaction_held
from tests.verifier.pgcluster import new_test_database


@pytest.mark.parametrize("path", ["enrolment", "activation"])
def test_a_first_code_is_searched_over_the_atc_window_not_the_identify_gap(
    store_factory: StoreFactory, clock: Clock, path: str
) -> None:
    policy = VerifierPolicy(atc_window=16, max_atc_gap=2)
    verifier = Verifier(store_factory(clock), make_provider(), policy=policy)
    card = new_card("secur-acces", pan=PAN, pin=PIN, imk_ac=IMK_AC, imk_smi=IMK_SMI, imk_smc=IMK_SMC)
    reader = CapReader(InProcessTransport(card))
    for _ in range(9):  # the card was tried out before it was enrolled
        reader.identify(PIN)
    verifier.add_user("alice")
    activation = verifier.issue_activation_code("alice")
    first = reader.identify(PIN)
    assert first.atc == 10
    if path == "enrolment":
        cred = verifier.enroll_card(
            activation.code, card.profile, issuer_key_id="bank", first_code=first.code
        )
        assert cred.last_atc == 10
        cid = cred.credential_id
    else:  # enrolled pending, activated by its first code (V32)
        cid = verifier.enroll_card(activation.code, card.profile, issuer_key_id="bank").credential_id
        assert verifier.activate(cid, first.code, request_id="first").atc == 10
    # a login without an operation is held to the gap: three codes skipped is too many
    for _ in range(3):
        reader.identify(PIN)
    with pytest.raises(InvalidCode):
        verifier.verify(cid, reader.identify(PIN).code, request_id="late")


def test_the_audit_of_a_failed_transaction_is_sealed_on_postgres(
    request: pytest.FixtureRequest, clock: Clock
) -> None:
    store = PostgresStore(new_test_database(request), clock=clock)  # row locks: the audit gets through
    try:
        provider = make_provider()
        provider.set_audit_seal_key("aud-test", os.urandom(32))
        b = make_bench(store, clock, provider=provider)
        quick = Verifier(store, provider, policy=VerifierPolicy(lock_timeout_s=0.2))
        code = b.identify().code
        with transaction_held(store, credential_id=b.cid), pytest.raises(TemporaryFailure):
            quick.verify(b.cid, code, request_id="held")
        records = list(store.audit_records())
        last = records[-1]
        assert (last.entry.outcome, last.entry.reason, last.entry.request_id) == (
            "temporary",
            "temporary-failure",
            "held",
        )
        assert last.seal_key_id == "aud-test"
        assert len(last.seal) == 32
        assert check_chain(records, sealer=provider, sealed_from=1) == ()
    finally:
        store.close()
