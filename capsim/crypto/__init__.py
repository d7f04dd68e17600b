"""EMV symmetric cryptography, hazmat layer (emv-crypto.md §1–§6, §9).

Pure functions on ``bytes``; PANs and PSNs are ASCII digit strings. Every DES operation goes
through :mod:`capsim._des`, the one module that imports a cipher. Keys are 16-byte two-key TDES
keys unless a function says otherwise. Bad arguments raise
:class:`capsim.errors.ValidationError` naming the argument and the expected form, before any
computation.

Import everything from here (``from capsim.crypto import generate_ac``); the package is split
by subject into modules each readable in one sitting, lowest first:

* :mod:`capsim.crypto.mac` — odd parity, key check values, ISO/IEC 9797-1 padding and MACs
  (§1, §3);
* :mod:`capsim.crypto.keys` — ICC master keys and session keys, the EMV2000 tree (§4);
* :mod:`capsim.crypto.cryptogram` — the CVN table and what it drives: :func:`generate_ac` (THE
  definition of a cryptogram), ARPC, CVC3 (§5, §6, §9);
* :mod:`capsim.crypto.calculator` — :class:`AcCalculator`, the verifier's faster evaluation of
  :func:`generate_ac`, tested against it and against a block-by-block definition.

>>> imk_a = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> key_check_value(imk_a).hex().upper()
'08D7B4'
>>> mk = derive_icc_mk_a(imk_a, "1234567890123456", "00")
>>> key_check_value(mk, 2).hex().upper()
'BAB0'
"""

from __future__ import annotations

from capsim.crypto._checks import key16, pad
from capsim.crypto.calculator import AcCalculator
from capsim.crypto.cryptogram import (
    CVN,
    ArpcKey,
    CvnSpec,
    Encipherment,
    SmKeys,
    ac_data,
    ac_key_un,
    ac_session_key,
    arpc_method1,
    arpc_method2,
    cvn_spec,
    generate_ac,
    generate_arpc,
    generate_cvc3,
)
from capsim.crypto.cryptogram import _cvn as _cvn
from capsim.crypto.keys import (
    KeyDerivation,
    SessionKeyMethod,
    TreeParams,
    derive_common_sk,
    derive_emv2000_tree_sk,
    derive_icc_mk,
    derive_icc_mk_a,
    derive_icc_mk_b,
    derive_mastercard_sk,
    derive_visa_sm_sk,
)
from capsim.crypto.keys import _csk as _csk
from capsim.crypto.keys import _option_b_y as _option_b_y
from capsim.crypto.mac import (
    key_check_value,
    mac_iso9797_alg1,
    mac_iso9797_alg3,
    odd_parity,
    pad_iso9797_1,
    pad_iso9797_2,
)

# Rule helpers other capsim modules share, re-exported under their old import path (not public
# API): secure messaging (capsim.sm) derives its keys and pads with the same rules, and the
# PKCS#11 provider computes Option B's Y block outside the token
# (_cvn, _csk and _option_b_y are imported above under their own names).
_key16 = key16
_pad = pad
del key16, pad

__all__ = [
    "CVN",
    "AcCalculator",
    "ArpcKey",
    "CvnSpec",
    "Encipherment",
    "KeyDerivation",
    "SessionKeyMethod",
    "SmKeys",
    "TreeParams",
    "ac_data",
    "ac_key_un",
    "ac_session_key",
    "arpc_method1",
    "arpc_method2",
    "cvn_spec",
    "derive_common_sk",
    "derive_emv2000_tree_sk",
    "derive_icc_mk",
    "derive_icc_mk_a",
    "derive_icc_mk_b",
    "derive_mastercard_sk",
    "derive_visa_sm_sk",
    "generate_ac",
    "generate_arpc",
    "generate_cvc3",
    "key_check_value",
    "mac_iso9797_alg1",
    "mac_iso9797_alg3",
    "odd_parity",
    "pad_iso9797_1",
    "pad_iso9797_2",
]
