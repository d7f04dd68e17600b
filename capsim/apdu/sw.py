"""Status words (ISO/IEC 7816-4 §5.6, EMV 4.3 Book 3 §6.3.5 and Book 1 §9.4.4).

A status word is the 2-byte trailer ``SW1 SW2`` of every response APDU, handled here as an
``int`` (``0x9000``). :class:`SW` names the fixed values capsim meets; three families carry a
number in ``SW2`` and have helpers instead of members:

* ``61xx``: the command succeeded and ``xx`` response bytes wait for GET RESPONSE (T=0);
* ``63Cx``: verification failed, ``x`` tries are left;
* ``6Cxx``: wrong Le, re-send the command with Le = ``xx`` (T=0).

In the last two, ``xx = 00`` stands for 256 bytes.

>>> SW.OK.describe()
'normal processing: command completed'
>>> describe_sw(0x63C2)
'verification failed: 2 tries left'
>>> pin_tries_left(0x63C2)
2
"""

from __future__ import annotations

from enum import IntEnum

from capsim.errors import ValidationError

__all__ = [
    "SW",
    "bytes_available",
    "correct_le",
    "describe_sw",
    "is_more_data",
    "is_pin_retry",
    "is_wrong_le",
    "pin_tries_left",
]


class SW(IntEnum):
    """Fixed status words (ISO/IEC 7816-4 §5.6; EMV 4.3 Book 3 §6.3.5).

    ``describe()`` gives a short English description of the member.
    """

    OK = 0x9000
    WARNING_NO_INFORMATION = 0x6200
    SELECTED_FILE_INVALIDATED = 0x6283
    AUTHENTICATION_FAILED = 0x6300
    MEMORY_UNCHANGED = 0x6400
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    COMMAND_NOT_ALLOWED = 0x6900
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    PIN_BLOCKED = 0x6983
    REFERENCE_DATA_INVALIDATED = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    SM_DATA_OBJECTS_MISSING = 0x6987
    SM_DATA_INCORRECT = 0x6988
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1_P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1_P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN_ERROR = 0x6F00

    def describe(self) -> str:
        """Short description of this status word."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[SW, str] = {
    SW.OK: "normal processing: command completed",
    SW.WARNING_NO_INFORMATION: "warning: no information given, memory unchanged",
    SW.SELECTED_FILE_INVALIDATED: "warning: selected file or application invalidated (blocked)",
    SW.AUTHENTICATION_FAILED: "warning: authentication failed",
    SW.MEMORY_UNCHANGED: "execution error: memory unchanged",
    SW.MEMORY_FAILURE: "execution error: memory failure",
    SW.WRONG_LENGTH: "wrong length (Lc or Le)",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.COMMAND_NOT_ALLOWED: "command not allowed",
    SW.SECURITY_STATUS_NOT_SATISFIED: "security status not satisfied",
    SW.PIN_BLOCKED: "authentication method blocked (PIN try limit exceeded)",
    SW.REFERENCE_DATA_INVALIDATED: "referenced data invalidated (PIN blocked)",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW.NO_CURRENT_EF: "command not allowed: no current file",
    SW.SM_DATA_OBJECTS_MISSING: "expected secure messaging data objects missing",
    SW.SM_DATA_INCORRECT: "secure messaging data objects incorrect (bad MAC)",
    SW.WRONG_DATA: "incorrect data in the command",
    SW.FUNCTION_NOT_SUPPORTED: "function not supported (application blocked)",
    SW.FILE_NOT_FOUND: "file or application not found",
    SW.RECORD_NOT_FOUND: "record not found",
    SW.NOT_ENOUGH_MEMORY: "not enough memory space",
    SW.INCORRECT_P1_P2: "incorrect parameters P1-P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data (data object) not found",
    SW.WRONG_P1_P2: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "instruction code not supported or invalid",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.UNKNOWN_ERROR: "no precise diagnosis",
}

# Descriptions by SW1 for values that are neither members nor one of the three families.
_SW1_CLASSES: dict[int, str] = {
    0x61: "normal processing",
    0x62: "warning: memory unchanged",
    0x63: "warning: memory changed",
    0x64: "execution error: memory unchanged",
    0x65: "execution error: memory changed",
    0x66: "execution error: security related",
    0x67: "wrong length",
    0x68: "function in CLA not supported",
    0x69: "command not allowed",
    0x6A: "wrong parameters",
    0x6B: "wrong parameters P1-P2",
    0x6C: "wrong Le field",
    0x6D: "instruction code not supported or invalid",
    0x6E: "class not supported",
    0x6F: "no precise diagnosis",
    0x90: "normal processing",
}


def _check(sw: int) -> int:
    if isinstance(sw, bool) or not isinstance(sw, int) or not 0 <= sw <= 0xFFFF:
        raise ValidationError(f"sw must be an int in 0x0000..0xFFFF, got {sw!r}")
    return sw


def is_more_data(sw: int) -> bool:
    """True for ``61xx``: response bytes are waiting for GET RESPONSE (ISO 7816-4 §5.6).

    >>> is_more_data(0x6110), is_more_data(0x9000)
    (True, False)
    """
    return _check(sw) >> 8 == 0x61


def is_wrong_le(sw: int) -> bool:
    """True for ``6Cxx``: wrong Le, the card wants Le = ``xx`` (ISO 7816-4 §5.6).

    >>> is_wrong_le(0x6C04)
    True
    """
    return _check(sw) >> 8 == 0x6C


def is_pin_retry(sw: int) -> bool:
    """True for ``63Cx``: verification failed, ``x`` tries left (EMV Book 3 §6.5.12).

    >>> is_pin_retry(0x63C0), is_pin_retry(0x6300)
    (True, False)
    """
    return _check(sw) & 0xFFF0 == 0x63C0


def pin_tries_left(sw: int) -> int:
    """The ``x`` of a ``63Cx`` status word.

    Raises
    ------
    ValidationError
        When ``sw`` is not of the ``63Cx`` family.

    >>> pin_tries_left(0x63C1)
    1
    """
    if not is_pin_retry(sw):
        raise ValidationError(f"sw must be of the 63Cx family, got {sw:04X}")
    return sw & 0x0F


def bytes_available(sw: int) -> int:
    """The number of waiting bytes of a ``61xx`` status word (``6100`` means 256).

    >>> bytes_available(0x6110), bytes_available(0x6100)
    (16, 256)
    """
    if not is_more_data(sw):
        raise ValidationError(f"sw must be of the 61xx family, got {sw:04X}")
    return (sw & 0xFF) or 256


def correct_le(sw: int) -> int:
    """The Le a ``6Cxx`` status word asks for (``6C00`` means 256).

    >>> correct_le(0x6C04)
    4
    """
    if not is_wrong_le(sw):
        raise ValidationError(f"sw must be of the 6Cxx family, got {sw:04X}")
    return (sw & 0xFF) or 256


def describe_sw(sw: int) -> str:
    """Describe any status word, including the ``61xx``/``63Cx``/``6Cxx`` families.

    Values that are neither members of :class:`SW` nor family members get the description of
    their ``SW1`` class, or ``"unknown status word"``.

    >>> describe_sw(0x6A82)
    'file or application not found'
    >>> describe_sw(0x6C04)
    'wrong Le: the card expects Le = 4'
    >>> describe_sw(0x6A99)
    'wrong parameters'
    >>> describe_sw(0x1234)
    'unknown status word'
    """
    _check(sw)
    if sw in _VALUES:
        return _DESCRIPTIONS[SW(sw)]
    if is_more_data(sw):
        return f"normal processing: {bytes_available(sw)} response bytes available (GET RESPONSE)"
    if is_pin_retry(sw):
        n = sw & 0x0F
        return f"verification failed: {n} tr{'y' if n == 1 else 'ies'} left"
    if is_wrong_le(sw):
        return f"wrong Le: the card expects Le = {correct_le(sw)}"
    return _SW1_CLASSES.get(sw >> 8, "unknown status word")


_VALUES = frozenset(int(m) for m in SW)
