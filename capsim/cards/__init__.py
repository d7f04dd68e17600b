"""Emulated EMV-CAP cards (cap-protocol.md §9).

Create a card in memory or in a card file with :func:`new_card`, reopen a card file with
:func:`load_card`. The card answers raw APDUs through :meth:`EmvCapCard.process`.

>>> imk = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> card = new_card("natwest", pan="1234567890123456", imk_ac=imk)
>>> card.process(bytes.fromhex("00A4040007A000000004800200")).hex().upper()
'6F108407A0000000048002A5055F2D02656E9000'
>>> card.process(bytes.fromhex("80CA9F1700")).hex().upper()
'9F1701039000'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from capsim.cards.atr import check_atr, parse_atr
from capsim.cards.base import CardOS
from capsim.cards.builtin import BUILTIN_PROFILES, DEFAULT_ATR, builtin_profile
from capsim.cards.cardfile import LOCK_TIMEOUT_S, CardFile, create_card_file
from capsim.cards.emv_cap import EmvCapCard, Phase
from capsim.cards.profile import CardProfile, Record
from capsim.cards.state import CardState, Lifecycle
from capsim.errors import ValidationError
from capsim.iad import (
    AcType,
    CardHistory,
    CvrFlag,
    CvrLayout,
    IadFormat,
    build_iad,
    history_variants,
    predict_arqc_iad,
)

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_ATR",
    "AcType",
    "CardHistory",
    "CardOS",
    "CardProfile",
    "CardState",
    "CvrFlag",
    "CvrLayout",
    "EmvCapCard",
    "IadFormat",
    "Lifecycle",
    "Phase",
    "Record",
    "build_iad",
    "builtin_profile",
    "check_atr",
    "history_variants",
    "initial_state",
    "load_card",
    "new_card",
    "parse_atr",
    "predict_arqc_iad",
]


def initial_state(profile: CardProfile, pin: str) -> CardState:
    """The state of a fresh card: ATC ``initial_atc``, full PTC, new-card history."""
    return CardState(atc=profile.initial_atc, ptc=profile.pin_try_limit, pin=pin)


def new_card(
    profile: str | CardProfile = "secur-acces",
    *,
    pan: str,
    psn: str = "00",
    pin: str = "1234",
    imk_ac: bytes,
    imk_smi: bytes | None = None,
    imk_smc: bytes | None = None,
    path: str | os.PathLike[str] | None = None,
    rng: Callable[[int], bytes] | None = None,
    **overrides: Any,
) -> EmvCapCard:
    """Personalise a card from a profile template.

    Parameters
    ----------
    profile:
        A built-in profile name (:data:`BUILTIN_PROFILES`) or a :class:`CardProfile` template.
    pan, psn, pin:
        Card PAN (12-19 digits), PSN (2 digits) and PIN (4-12 digits).
    imk_ac, imk_smi, imk_smc:
        Issuer master keys. ``imk_smi``/``imk_smc`` default to ``imk_ac`` itself: handy for
        tests, weak for anything else (a real issuer uses three independent keys; the CLI
        always generates three).
    path:
        When given, a new card file is created there (an existing file is never overwritten:
        :class:`~capsim.errors.StateFileError`), locked, and every state change is persisted
        before the card answers.
    rng:
        Randomness for GET CHALLENGE (default ``os.urandom``).
    **overrides:
        Profile fields to replace, e.g. ``cvn=0x12``, ``response_format=2``, ``initial_atc=5``,
        ``atr=bytes.fromhex("3B80800101")`` (checked with :func:`check_atr`).

    Raises
    ------
    ValidationError
        For a bad PAN, PSN, PIN, key, profile name or override.
    StateFileError
        When ``path`` exists or cannot be written.
    """
    template = builtin_profile(profile) if isinstance(profile, str) else profile
    if not isinstance(template, CardProfile):
        raise ValidationError("profile: expected a profile name or a CardProfile")
    if overrides:
        if "atr" in overrides:
            check_atr(overrides["atr"])
        template = template.with_overrides(**overrides)
    personalised = template.personalise(
        pan=pan,
        psn=psn,
        imk_ac=imk_ac,
        imk_smi=imk_ac if imk_smi is None else imk_smi,
        imk_smc=imk_ac if imk_smc is None else imk_smc,
    )
    state = initial_state(personalised, pin)
    if path is None:
        return EmvCapCard(personalised, state, rng=rng or os.urandom)
    create_card_file(path, personalised, state)
    return load_card(path, rng=rng)


def load_card(
    path: str | os.PathLike[str],
    *,
    timeout: float = LOCK_TIMEOUT_S,
    rng: Callable[[int], bytes] | None = None,
) -> EmvCapCard:
    """Open a card file, holding its lock until ``card.close()``.

    Raises
    ------
    StateFileError
        When the file is missing, corrupt, truncated, of a newer version, or still locked by
        another process after ``timeout`` seconds.
    """
    handle = CardFile(path, timeout=timeout)
    try:
        return EmvCapCard(
            handle.profile,
            handle.state,
            rng=rng or os.urandom,
            on_state_change=handle.save_state,
            on_close=handle.close,
        )
    except BaseException:
        handle.close()
        raise
