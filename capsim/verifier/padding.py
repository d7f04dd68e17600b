"""The padding rows: what a refusal writes when its target has no row of its own (V30).

Theory of operation
-------------------
1. **Why.** Every reject class must cost the same (V30): not only the same provider calls but
   the same store work. A refusal of a known credential reads its row, decodes it and writes
   it back (a compare-and-swap that bumps ``version``); an unknown target has no row. So the
   store has **padding rows**, created by migration 8 (SQL stores) or at construction
   (memory store), which stand in for the missing row: the verification read returns them
   when the target is not found
   (:meth:`~capsim.verifier.store.StoreTransaction.read_verification`), and the decision
   writes the padding credential back exactly as it writes a refused credential. An unknown
   credential stands in for a *locked* one (the refusal an attacker compares it with: a
   card he guessed at five times), so its row carries a lock and an escalation time; an
   unknown operation reads the padding operation and, through it, a padding credential
   without a lock (an operation's card is usually not locked).
2. **Operations.** A call that names an operation touches one operation row in every class:
   a wrong code its operation (``attempts`` + 1); a refusal its operation unchanged when the
   conditional update can touch it (not consumed), else the padding operation
   (a consumed or unknown operation). A call that names a credential touches none.
3. **Never a credential.** The padding rows' ids contain ``:``, which no identifier a caller
   may pass contains (:func:`capsim.verifier.checks.ident`), so no lifecycle call, listing
   or lookup by a user reaches them; their user, customer and PAN token are not a user's,
   customer's or card's (so no per-user limit, sibling group or replay floor sees them); the
   credentials are ``blocked`` (never verified, and like a real card in the
   one-live-credential-per-card index, so writing one back updates an index entry as a real
   card's write does: a revoked row's write is cheaper on SQLite) under PAN tokens of their
   own, and their key reference names no key; stores leave them out of every listing
   (:meth:`~capsim.verifier.store.StoreTransaction.list_credentials`). A call that names a
   padding row's id directly is refused as an unknown target. The operation is expired
   (2000-01-01) and never consumed, so its conditional update always matches.
4. **Same size.** The ids have the length of real ones (``cr-`` / ``op-`` and 16 hex digits),
   the PAN token that of a real token, the profile is a real card profile's
   (:data:`DUMMY_PROFILE`), the operation a RESPOND operation with an 8-digit challenge and
   a 32-byte digest: decoding and writing them costs what a real row costs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from capsim.verifier.model import Credential, CredentialProfile, CredentialState, Operation, OperationMode

__all__ = [
    "DUMMY_PROFILE",
    "PAD_CREDENTIAL_ID",
    "PAD_OPERATION_CREDENTIAL_ID",
    "PAD_OPERATION_ID",
    "is_padding",
    "padding_credential",
    "padding_operation",
]

#: The profile of the dummy card an unknown target is evaluated against (V30), and of the
#: padding credential row.
DUMMY_PROFILE: Final = CredentialProfile(
    reader_profile="mc-cap",
    cdol1=bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704"),
    aip=b"\x10\x00",
    ipb=bytes.fromhex("00001F00000000000FFFFF00000000008000"),
    iaf=b"\xa0",
    cvn=0x0A,
    iad_variants=(bytes.fromhex("060A0A03A48000"),),
)

#: The padding credential of an unknown credential: as long as ``cr-`` and 16 hex digits,
#: never an identifier (rule 3).
PAD_CREDENTIAL_ID: Final = "cr:pad:000000000000"
#: The padding credential of an unknown operation (the padding operation's credential).
PAD_OPERATION_CREDENTIAL_ID: Final = "cr:pad:000000000001"
#: The padding operation's id.
PAD_OPERATION_ID: Final = "op:pad:000000000000"
_PAD_USER: Final = ":padding"
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_NEVER: Final = datetime(9999, 12, 31, tzinfo=UTC)


def is_padding(row_id: str) -> bool:
    """True for the id of a padding row (rule 3).

    >>> is_padding(PAD_CREDENTIAL_ID), is_padding(PAD_OPERATION_ID), is_padding("cr-00000000000000aa")
    (True, True, False)
    """
    return row_id.startswith(("cr:pad:", "op:pad:"))


def padding_credential(credential_id: str = PAD_CREDENTIAL_ID) -> Credential:
    """A padding credential row as migration 8 creates it (rule 1: the one of an unknown
    credential carries a lock, the one of an unknown operation none)."""
    locked = credential_id == PAD_CREDENTIAL_ID
    return Credential(
        credential_id=credential_id,
        user_id=_PAD_USER,
        customer_id=_PAD_USER,
        state=CredentialState.BLOCKED,
        key_ref="padding:none",
        pan_token=":padding:" + credential_id[-1] * 23,  # as long as a real PAN token (32)
        pan_last4="0000",
        psn="00",
        profile=DUMMY_PROFILE,
        created_at=_EPOCH,
        last_atc=0,
        fail_count=5 if locked else 0,
        locked_until=_NEVER if locked else None,
        lock_escalations=1 if locked else 0,
        escalation_started_at=_EPOCH if locked else None,
    )


def padding_operation() -> Operation:
    """The padding operation row as migration 8 creates it."""
    return Operation(
        operation_id=PAD_OPERATION_ID,
        credential_id=PAD_OPERATION_CREDENTIAL_ID,
        mode=OperationMode.RESPOND,
        challenge="00000000",
        txn_digest=bytes(32),
        created_at=_EPOCH,
        expires_at=_EPOCH,
    )
