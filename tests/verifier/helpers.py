"""Shared helpers of the verifier tests: modes, CVN/profile tables, counting wrappers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from capsim.reader import CapResult
from capsim.verifier.model import Operation, OperationMode
from capsim.verifier.policy import VerifierPolicy
from capsim.verifier.provider import AcFunction, SoftwareProvider
from capsim.verifier.store import Store, StoreTransaction
from tests.verifier.conftest import PIN, Bench

MODES = ("identify", "respond", "sign", "tds")
#: every supported CVN, each on a card profile whose IAD layout fits it
CVN_PROFILES = {
    0x0A: "barclays",
    0x12: "visa-dpa",
    0x22: "natwest",
    0x10: "secur-acces",
    0x11: "rabobank",
    0x14: "secur-acces",
    0x15: "rabobank",
}
PROFILES = ("secur-acces", "visa-dpa", "barclays", "natwest", "rabobank")
TDS_FIELDS = ("150000", "0123456789")


def policy_for(profile: str, **overrides: Any) -> VerifierPolicy:
    """The default policy, with fewer tries for the 16-AC-bit Rabobank IPB (V5 bound)."""
    if profile == "rabobank":
        overrides.setdefault("max_fail", 3)
    return VerifierPolicy(**overrides)


def new_op(b: Bench, mode: str, **kwargs: Any) -> Operation:
    """An operation of ``mode`` with typical data."""
    if mode == "sign":
        kwargs.setdefault("amount", 150000)
        kwargs.setdefault("currency", "EUR")
        kwargs.setdefault("payee", "NL91ABNA0417164300")
    if mode == "tds":
        kwargs.setdefault("fields", TDS_FIELDS)
    return b.verifier.issue_operation(b.cid, mode=mode, **kwargs)


def run_mode(b: Bench, op: Operation) -> CapResult:
    """The reader's code for ``op`` (the user keys in what the bank shows)."""
    if op.mode is OperationMode.IDENTIFY:
        return b.reader.identify(PIN)
    if op.mode is OperationMode.RESPOND:
        return b.reader.respond(PIN, op.challenge)
    if op.mode is OperationMode.SIGN:
        return b.reader.sign(
            PIN, op.challenge, op.amount_minor, "EUR" if op.currency == "978" else op.currency
        )
    return b.reader.sign_data(PIN, list(op.tds_fields))


class CountingProvider(SoftwareProvider):
    """A software provider that counts cryptogram computations and records the IADs used."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.iads: list[bytes] = []

    def ac_function(self, key_ref: str, **kwargs: Any) -> AcFunction:
        inner = super().ac_function(key_ref, **kwargs)

        def counted(cdol: bytes, aip: bytes, atc: bytes, iad: bytes, un: bytes) -> bytes:
            self.calls += 1
            self.iads.append(iad)
            return inner(cdol, aip, atc, iad, un)

        return counted


class CountingStore:
    """Wraps a store; counts transactions and every transaction method call by name."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.transactions = 0
        self.calls: dict[str, int] = {}

    def transaction(self, *, lock_timeout: float | None = None) -> AbstractContextManager[StoreTransaction]:
        return self._tx(lock_timeout)

    @contextmanager
    def _tx(self, lock_timeout: float | None) -> Iterator[StoreTransaction]:
        self.transactions += 1
        with self.inner.transaction(lock_timeout=lock_timeout) as tx:
            yield _CountingTx(tx, self.calls)  # type: ignore[misc]

    def audit_records(self, *, after_seq: int = 0) -> Any:
        return self.inner.audit_records(after_seq=after_seq)

    def close(self) -> None:
        self.inner.close()


class _CountingTx:
    def __init__(self, tx: StoreTransaction, calls: dict[str, int]) -> None:
        self._tx = tx
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._tx, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] = self._calls.get(name, 0) + 1
            return target(*args, **kwargs)

        return wrapper


@contextmanager
def transaction_held(store: Store, *, credential_id: str | None = None) -> Iterator[None]:
    """Another thread holds a transaction of ``store`` (with ``credential_id``'s row lock, if
    given) for as long as the block runs: a verification meanwhile waits for the lock."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            if credential_id is not None:
                tx.lock_credential(credential_id)
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join()
