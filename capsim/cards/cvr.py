"""CVR and IAD layouts, history flags and IAD prediction: re-exported from :mod:`capsim.iad`.

The logic lives in the pure module :mod:`capsim.iad`, below both the card emulator and the
verifier; this module keeps the historical import path ``capsim.cards.cvr`` working.
"""

from __future__ import annotations

from capsim.iad import (
    MCHIP_CVR_LAYOUT,
    VIS_CVR_LAYOUT,
    AcType,
    CardHistory,
    CvrFlag,
    CvrLayout,
    IadFormat,
    IadParams,
    IadProfile,
    arqc_iad_variants,
    build_iad,
    check_iad_template,
    history_variants,
    iad_format_for_cvn,
    predict_arqc_iad,
)

__all__ = [
    "MCHIP_CVR_LAYOUT",
    "VIS_CVR_LAYOUT",
    "AcType",
    "CardHistory",
    "CvrFlag",
    "CvrLayout",
    "IadFormat",
    "IadParams",
    "IadProfile",
    "arqc_iad_variants",
    "build_iad",
    "check_iad_template",
    "history_variants",
    "iad_format_for_cvn",
    "predict_arqc_iad",
]
