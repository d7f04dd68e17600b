"""Row ↔ model codecs of the SQL stores: each table's columns and the conversion of its rows.

Theory of operation
-------------------
1. **Columns.** The tuples below name each table's columns in the order every statement of
   :mod:`capsim.verifier.sqlbase` lists them; a fetched row is decoded by position.
2. **Driver hooks only.** :class:`SqlRowCodecs` converts model values to statement parameters
   and fetched rows back to model values. What differs between the engines is confined to the
   value hooks (:meth:`~SqlRowCodecs._enc_time`, ``_dec_time``, ``_enc_json``, ``_dec_json``,
   ``_enc_bool``, ``_dec_bytes``): SQLite keeps times and JSON as text, PostgreSQL as
   ``timestamptz`` and ``jsonb``.
3. **Aware times only.** The codecs refuse a naive :class:`~datetime.datetime` with
   :class:`~capsim.errors.ValidationError` (:meth:`SqlRowCodecs._check_aware`); stored times
   are UTC.
4. **Profiles decode once.** A credential profile stored as JSON text (SQLite) is decoded
   through a small cache keyed by that text (:func:`_profile_from_text`): a bank has few
   card profiles, and decoding a credential then costs the same whatever its profile (the
   uniform reject, V30, compares the refusal of a real credential with that of the padding
   row, whose profile differs) and a third less.
5. **Tampered audit rows decode.** :meth:`SqlRowCodecs._audit_record` never raises on a row no
   writer produces: it returns a record whose ``malformed`` names the column, which the chain
   checker reports (:mod:`capsim.verifier.audit`).
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from capsim.errors import ValidationError
from capsim.verifier.audit import AuditEntry, AuditRecord, malformed_record
from capsim.verifier.model import (
    Acceptance,
    ActivationRecord,
    BatchItem,
    Credential,
    CredentialProfile,
    CredentialState,
    Operation,
    OperationMode,
    Outcome,
    RequestRecord,
    User,
    UserRole,
)

__all__ = ["SqlRowCodecs"]


@functools.lru_cache(maxsize=256)
def _profile_from_text(text: str) -> CredentialProfile:
    """A profile from its stored JSON text, decoded once per distinct text (rule 4; the
    profile is immutable, so one instance serves every row)."""
    return CredentialProfile.from_dict(json.loads(text))


_CRED_COLS: Final = (
    "credential_id", "user_id", "customer_id", "state", "key_ref", "pan_token", "pan_last4", "psn",
    "profile", "created_at", "last_atc", "fail_count", "max_fail", "locked_until", "lock_escalations",
    "escalation_started_at", "parked_atc", "parked_at", "replaces", "replaced_by", "label", "script_atc",
    "version",
)  # fmt: skip
_CRED_MUTABLE: Final = (
    "state", "last_atc", "fail_count", "max_fail", "locked_until", "lock_escalations",
    "escalation_started_at", "parked_atc", "parked_at", "replaces", "replaced_by", "label", "script_atc",
    "version",
)  # fmt: skip
_REQ_COLS: Final = ("request_id", "outcome", "recorded_at", "acceptance", "method", "target", "fingerprint")
_CRED_TIMES: Final = frozenset({"created_at", "locked_until", "escalation_started_at", "parked_at"})
_OP_COLS: Final = (
    "operation_id", "credential_id", "mode", "challenge", "txn_digest", "created_at", "expires_at",
    "amount_minor", "currency", "payee", "tds_fields", "batch", "reference_supplied", "payment",
    "attempts", "max_attempts", "consumed_at",
)  # fmt: skip
_ACC_COLS: Final = (
    "credential_id", "atc", "mode", "request_id", "accepted_at", "operation_id", "txn_digest",
)  # fmt: skip
_USER_COLS: Final = ("user_id", "customer_id", "role", "created_at", "created_by", "disabled")
_ACT_COLS: Final = ("code_digest", "user_id", "created_at", "expires_at", "used_at", "attempts")
_AUDIT_COLS: Final = (
    "seq", "at", "event", "outcome", "reason", "request_id", "credential_id", "operation_id", "mode",
    "atc", "txn_digest", "node", "duration_us", "details", "prev_hash", "record_hash",
)  # fmt: skip


def _need(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _acceptance_to_json(acc: Acceptance) -> dict[str, Any]:
    return {
        "credential_id": acc.credential_id,
        "atc": acc.atc,
        "mode": acc.mode.value,
        "request_id": acc.request_id,
        "accepted_at": acc.accepted_at.astimezone(UTC).isoformat(),
        "operation_id": acc.operation_id,
        "txn_digest": acc.txn_digest.hex(),
    }


def _acceptance_from_json(d: dict[str, Any]) -> Acceptance:
    return Acceptance(
        credential_id=d["credential_id"],
        atc=int(d["atc"]),
        mode=OperationMode(d["mode"]),
        request_id=d["request_id"],
        accepted_at=datetime.fromisoformat(d["accepted_at"]).astimezone(UTC),
        operation_id=d["operation_id"],
        txn_digest=bytes.fromhex(d["txn_digest"]),
    )


class SqlRowCodecs(ABC):
    """The row ↔ model conversions shared by the SQL transactions (module docstring).

    A subclass provides the value hooks; :class:`~capsim.verifier.sqlbase.SqlTransactionBase`
    adds the statements."""

    # -- driver hooks --------------------------------------------------------------------
    @abstractmethod
    def _enc_time(self, value: datetime | None) -> Any:
        """Driver hook."""

    @abstractmethod
    def _dec_time(self, value: Any) -> datetime:
        """Driver hook."""

    @abstractmethod
    def _enc_json(self, value: Any) -> Any:
        """Driver hook."""

    @abstractmethod
    def _dec_json(self, value: Any) -> Any:
        """Driver hook."""

    def _enc_bool(self, value: bool) -> Any:
        return value

    def _dec_bytes(self, value: Any) -> bytes:
        return bytes(value)

    def _opt_time(self, value: Any) -> datetime | None:
        return None if value is None else self._dec_time(value)

    def _check_aware(self, name: str, value: datetime | None) -> None:
        if value is not None and value.tzinfo is None:
            raise ValidationError(f"{name}: expected a timezone-aware datetime")

    # -- users and activation codes ------------------------------------------------------
    def _user(self, row: tuple[Any, ...]) -> User:
        return User(
            user_id=row[0],
            customer_id=row[1],
            role=UserRole(row[2]),
            created_at=self._dec_time(row[3]),
            created_by=row[4],
            disabled=bool(row[5]),
        )

    def _activation(self, row: tuple[Any, ...]) -> ActivationRecord:
        return ActivationRecord(
            code_digest=self._dec_bytes(row[0]),
            user_id=row[1],
            created_at=self._dec_time(row[2]),
            expires_at=self._dec_time(row[3]),
            used_at=self._opt_time(row[4]),
            attempts=int(row[5]),
        )

    # -- credentials ---------------------------------------------------------------------
    def _credential(self, row: tuple[Any, ...]) -> Credential:
        values = dict(zip(_CRED_COLS, row, strict=True))
        for name in _CRED_TIMES:
            values[name] = self._opt_time(values[name])
        values["state"] = CredentialState(values["state"])
        raw = values["profile"]
        if isinstance(raw, str):
            values["profile"] = _profile_from_text(raw)
        else:
            values["profile"] = CredentialProfile.from_dict(self._dec_json(raw))
        return Credential(**values)

    def _cred_params(self, c: Credential, cols: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for name in cols:
            value = getattr(c, name)
            if name in _CRED_TIMES:
                self._check_aware(f"credential.{name}", value)
                value = self._enc_time(value)
            elif name == "state":
                value = CredentialState(value).value
            elif name == "profile":
                value = self._enc_json(value.to_dict())
            out.append(value)
        return out

    # -- operations ----------------------------------------------------------------------
    def _operation(self, row: tuple[Any, ...]) -> Operation:
        v = dict(zip(_OP_COLS, row, strict=True))
        return Operation(
            operation_id=v["operation_id"],
            credential_id=v["credential_id"],
            mode=OperationMode(v["mode"]),
            challenge=v["challenge"],
            txn_digest=self._dec_bytes(v["txn_digest"]),
            created_at=self._dec_time(v["created_at"]),
            expires_at=self._dec_time(v["expires_at"]),
            amount_minor=v["amount_minor"],
            currency=v["currency"],
            payee=v["payee"],
            tds_fields=tuple(str(f) for f in self._dec_json(v["tds_fields"])),
            batch=tuple(
                BatchItem(payee=str(b["payee"]), amount_minor=int(b["amount_minor"]))
                for b in self._dec_json(v["batch"])
            ),
            reference_supplied=bool(v["reference_supplied"]),
            payment=bool(v["payment"]),
            attempts=int(v["attempts"]),
            max_attempts=int(v["max_attempts"]),
            consumed_at=self._opt_time(v["consumed_at"]),
        )

    # -- ledger and requests -------------------------------------------------------------
    def _acceptance_params(self, a: Acceptance) -> tuple[Any, ...]:
        self._check_aware("acceptance.accepted_at", a.accepted_at)
        return (
            a.credential_id,
            a.atc,
            OperationMode(a.mode).value,
            a.request_id,
            self._enc_time(a.accepted_at),
            a.operation_id,
            bytes(a.txn_digest),
        )

    def _request(self, row: tuple[Any, ...]) -> RequestRecord:
        acc = None if row[3] is None else _acceptance_from_json(self._dec_json(row[3]))
        return RequestRecord(
            request_id=row[0],
            outcome=Outcome(row[1]),
            recorded_at=self._dec_time(row[2]),
            acceptance=acc,
            method=row[4],
            target=row[5],
            fingerprint=self._dec_bytes(row[6]),
        )

    def _request_params(self, record: RequestRecord) -> tuple[Any, ...]:
        self._check_aware("record.recorded_at", record.recorded_at)
        acc = None if record.acceptance is None else self._enc_json(_acceptance_to_json(record.acceptance))
        return (
            record.request_id,
            Outcome(record.outcome).value,
            self._enc_time(record.recorded_at),
            acc,
            record.method,
            record.target,
            bytes(record.fingerprint),
        )

    # -- audit ---------------------------------------------------------------------------
    def _audit_record(self, row: tuple[Any, ...]) -> AuditRecord:
        """Decode one audit row (with its seal columns); never raises on a tampered row: a value
        that no writer produces gives a record with ``malformed`` naming the column."""
        v = dict(zip((*_AUDIT_COLS, "seal_key_id", "seal"), row, strict=True))
        seq = int(v["seq"])
        column = "at"
        try:
            at = self._dec_time(v["at"])
            for column in ("event", "outcome", "reason", "node"):
                _need(isinstance(v[column], str), "not text")
            for column in ("request_id", "credential_id", "operation_id", "mode"):
                _need(v[column] is None or isinstance(v[column], str), "not text")
            for column in ("atc", "duration_us"):
                value = v[column]
                _need((value is None and column == "atc") or _is_int(value), "not an integer")
            for column in ("txn_digest", "prev_hash", "record_hash"):
                _need(isinstance(v[column], bytes | bytearray | memoryview), "not bytes")
            column = "details"
            details = self._dec_json(v["details"])
            _need(isinstance(details, dict), "not a JSON object")
            _need(all(isinstance(k, str) and isinstance(x, str) for k, x in details.items()), "not strings")
            column = "seal"
            _need(v["seal"] is None or isinstance(v["seal"], bytes | bytearray | memoryview), "not bytes")
            _need(v["seal_key_id"] is None or isinstance(v["seal_key_id"], str), "not text")
        except (ValueError, TypeError, OverflowError, AttributeError) as exc:
            return malformed_record(
                seq, f"{column}: {exc}", prev_hash=v["prev_hash"], record_hash=v["record_hash"]
            )
        entry = AuditEntry(
            event=v["event"],
            outcome=v["outcome"],
            reason=v["reason"],
            request_id=v["request_id"],
            credential_id=v["credential_id"],
            operation_id=v["operation_id"],
            mode=v["mode"],
            atc=v["atc"],
            txn_digest=self._dec_bytes(v["txn_digest"]),
            node=v["node"],
            duration_us=v["duration_us"],
            details=details,
        )
        return AuditRecord(
            seq=seq,
            at=at,
            entry=entry,
            prev_hash=self._dec_bytes(v["prev_hash"]),
            record_hash=self._dec_bytes(v["record_hash"]),
            seal=b"" if v["seal"] is None else self._dec_bytes(v["seal"]),
            seal_key_id=v["seal_key_id"] or "",
        )
