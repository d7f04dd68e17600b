"""The whole capsim exception hierarchy.

Every error a public capsim API raises on purpose derives from :class:`CapsimError`.
Bad arguments raise :class:`ValidationError`, which is also a :class:`ValueError`, so
callers that only know the standard library still catch it.

Meaning lives in the type and in attributes (``sw``, ``tries_left``, ``offset``), never
only in the message text.

::

    CapsimError
    ├── ValidationError(ValueError)      bad caller input
    ├── ConfigError(ValueError)          unsafe or impossible configuration
    │   └── TokenError(reason)           a PKCS#11 module or token cannot serve
    │       └── TokenUnsupported(needed) the token lacks what a profile needs (key XOR)
    ├── ApduFormatError(ValueError)      bytes that are not a valid APDU / TLV / DOL (offset)
    ├── ProtocolError
    │   ├── LocalProtocolError           caller misuse of a session
    │   └── RemoteProtocolError          the card misbehaved
    │       ├── UnknownIssuerProfile     no IPB and no fallback configured
    │       └── CodeOverflowError        code needs more digits than the display
    ├── StatusWordError(sw, ins)         a non-9000 status word
    │   ├── PinError(tries_left)         63Cx
    │   ├── PinBlockedError              6983 / 6984
    │   ├── ConditionsNotSatisfiedError  6985
    │   └── CardBlockedError             6283 / 6A81 on SELECT
    ├── TransportError
    │   ├── NoCardError
    │   │   └── CardWaitTimeoutError     no card inserted within --wait (also a TransportTimeoutError)
    │   ├── CardRemovedError
    │   ├── ReaderNotFoundError
    │   ├── ReaderAmbiguousError
    │   ├── PcscUnavailableError
    │   └── TransportTimeoutError
    ├── StateFileError                   corrupt, truncated, newer or locked card file
    │   └── UnsafeFileModeError(path, mode)  a key file other users can access
    └── VerifierError
        ├── InvalidCode                  the one uniform reject
        └── TemporaryFailure             lock timeout, unknown commit outcome, store down
"""

from __future__ import annotations

__all__ = [
    "ApduFormatError",
    "AuditTampered",
    "CapsimError",
    "CardBlockedError",
    "CardRemovedError",
    "CardWaitTimeoutError",
    "CodeOverflowError",
    "ConditionsNotSatisfiedError",
    "ConfigError",
    "InvalidCode",
    "KeyFileMismatch",
    "LocalProtocolError",
    "NoCardError",
    "NotADatabaseError",
    "PcscUnavailableError",
    "PinBlockedError",
    "PinError",
    "ProtocolError",
    "ReaderAmbiguousError",
    "ReaderNotFoundError",
    "RemoteProtocolError",
    "RequestConflict",
    "StateFileError",
    "StatusWordError",
    "TemporaryFailure",
    "TokenError",
    "TokenUnsupported",
    "TransportError",
    "TransportTimeoutError",
    "UnknownIssuerProfile",
    "UnsafeFileModeError",
    "ValidationError",
    "VerifierError",
]


class CapsimError(Exception):
    """Root of every error capsim raises on purpose."""


class ValidationError(CapsimError, ValueError):
    """Bad caller input: a code, challenge, amount, currency, PIN or field of the wrong form."""


class ConfigError(CapsimError, ValueError):
    """An unsafe or impossible configuration (false-accept bound, PSD2 profile, profile fields)."""


class ApduFormatError(CapsimError, ValueError):
    """Bytes that are not a valid APDU, BER-TLV object or DOL.

    Attributes
    ----------
    offset:
        Index of the first byte that could not be parsed.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.offset = offset


class ProtocolError(CapsimError):
    """Abstract: a violation of the CAP/EMV exchange. Never raised directly."""


class LocalProtocolError(ProtocolError):
    """The caller used a session in a way its state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The card (or the other end) sent something the protocol does not allow."""


class UnknownIssuerProfile(RemoteProtocolError):
    """The card has no IPB and the reader profile names no fallback."""


class CodeOverflowError(RemoteProtocolError):
    """The code needs more digits than the display has."""

    def __init__(self, message: str, value: int, digits: int) -> None:
        super().__init__(message)
        self.value = value
        self.digits = digits


class StatusWordError(CapsimError):
    """A status word other than ``9000`` where success was required.

    Attributes
    ----------
    sw:
        The status word as an integer (``0x6A82``).
    ins:
        The instruction byte of the command that got it, when known.
    """

    def __init__(self, sw: int, ins: int | None = None, message: str | None = None) -> None:
        self.sw = sw
        self.ins = ins
        if message is None:
            message = f"card answered {sw:04X}" + (f" to INS {ins:02X}" if ins is not None else "")
        super().__init__(message)


class PinError(StatusWordError):
    """Wrong PIN (``63Cx``); ``tries_left`` says how many tries remain (``0``: that wrong PIN
    blocked the PIN)."""

    def __init__(self, sw: int, ins: int | None = None, message: str | None = None) -> None:
        self.tries_left = sw & 0x0F
        if message is None:
            if self.tries_left == 0:
                message = "wrong PIN, no tries left: the card's PIN is now blocked"
            else:
                message = f"wrong PIN, {self.tries_left} tr{'y' if self.tries_left == 1 else 'ies'} left"
        super().__init__(sw, ins, message)


class PinBlockedError(StatusWordError):
    """The PIN is blocked (``6983`` or ``6984``): only an issuer script unblocks it."""

    def __init__(self, sw: int = 0x6983, ins: int | None = None, message: str | None = None) -> None:
        super().__init__(sw, ins, message or "PIN blocked: the card's PIN try limit is exceeded")


class ConditionsNotSatisfiedError(StatusWordError):
    """Conditions of use not satisfied (``6985``)."""


class CardBlockedError(StatusWordError):
    """The application or the card is blocked by the issuer (``6283`` / ``6A81`` on SELECT)."""


class TransportError(CapsimError):
    """The link to the card failed."""


class NoCardError(TransportError):
    """No card in the reader."""


class CardRemovedError(TransportError):
    """The card was removed (or reset) during the session."""


class ReaderNotFoundError(TransportError):
    """No reader matches the requested name."""


class ReaderAmbiguousError(ReaderNotFoundError):
    """Several readers match the requested name; ``candidates`` lists them."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class PcscUnavailableError(TransportError):
    """The PC/SC service (pcscd) is not running, or pyscard is not installed."""


class TransportTimeoutError(TransportError):
    """The card did not answer in time."""


class CardWaitTimeoutError(NoCardError, TransportTimeoutError):
    """No card was inserted in the reader within the time allowed (``--wait``)."""


class StateFileError(CapsimError):
    """A card file is corrupt, truncated, of a newer version, or locked by another process."""


class UnsafeFileModeError(StateFileError):
    """A file of secret keys that other users can access (as ``ssh`` refuses such a private
    key): ``path`` and its permission bits ``mode``; ``chmod 600`` it."""

    def __init__(self, message: str, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        super().__init__(message)


class VerifierError(CapsimError):
    """Root of the errors a verifier raises."""


class InvalidCode(VerifierError):
    """The one uniform reject.

    Locked, expired, consumed, replayed, wrong, revoked and unknown-credential cases all
    raise this same class with the same message; the reason goes only to the audit.
    """

    def __init__(self) -> None:
        super().__init__("code rejected")


class TemporaryFailure(VerifierError):
    """The verifier could not decide (lock timeout, unknown commit outcome, store or provider down).

    Nothing was accepted and no failure was counted; retry with the same ``request_id``.
    """


class RequestConflict(VerifierError):
    """A ``request_id`` already recorded for another call (another method, target or code).

    Nothing changed; the recorded call's outcome stays as it was. Use a fresh request id for
    a new request (the same call repeated with the same id returns its recorded outcome).
    """

    def __init__(self, request_id: str = "") -> None:
        self.request_id = request_id
        super().__init__("request_id already used for another request")


class NotADatabaseError(ConfigError):
    """A ``--db`` target exists but is not a capsim verifier database (a corrupt or truncated
    SQLite file, another program's file). Permanent: retrying cannot help."""


class AuditTampered(VerifierError):
    """The audit trail failed its check: records edited, removed, reordered, unsealed or
    malformed, or the chain does not reach an exported tip. ``problems`` lists them."""

    def __init__(self, message: str, problems: tuple[object, ...] = ()) -> None:
        self.problems = problems
        super().__init__(message)


class KeyFileMismatch(StateFileError):
    """An issuer-keys file does not hold the keys registered under its key id (a swapped or
    edited file): its full-strength fingerprint differs."""


class TokenError(ConfigError):
    """A PKCS#11 module or token cannot serve the verifier (never carries a PIN or key).

    ``reason`` is one of ``"module"`` (cannot be loaded), ``"token"`` (no such token),
    ``"pin"`` (wrong or missing PIN), ``"locked"`` (the PIN is locked), ``"key"`` (no object
    with the label), ``"mechanism"`` (a mechanism the token lacks), ``"attributes"`` (an
    object with unsafe attributes) or ``"failed"`` (any other token failure).
    """

    def __init__(self, message: str, reason: str = "failed") -> None:
        self.reason = reason
        super().__init__(message)


class TokenUnsupported(TokenError):
    """The token cannot compute what a profile needs; ``needed`` names it (e.g. "key XOR")."""

    def __init__(self, message: str, needed: str) -> None:
        self.needed = needed
        super().__init__(message, "mechanism")
