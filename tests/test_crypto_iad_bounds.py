"""The shortest IAD each cryptogram version takes, written out from emv-crypto.md §5.

Visa CVN 10 reads the CVR with its length byte at IAD bytes 4–7; Visa 18/22 and Interac 133 MAC
the whole IAD, which must not be empty; Mastercard 16/20 read the CVR at bytes 3–8 and 17/21
the CVR and the counters up to byte 18. One byte less is a typed error, at both entry points
(the definition, :func:`generate_ac`, and the verifier's fast :class:`AcCalculator`), and both
give the same cryptogram at the minimum.
"""

from __future__ import annotations

import pytest

from capsim.crypto import CVN, AcCalculator, generate_ac
from capsim.errors import ValidationError

MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
SHORTEST_IAD = {
    CVN.VISA_10: 7,
    CVN.VISA_18: 1,
    CVN.VISA_22: 1,
    CVN.MC_16: 8,
    CVN.MC_17: 18,
    CVN.MC_20: 8,
    CVN.MC_21: 18,
    CVN.INTERAC_133: 1,
}


def test_every_cvn_is_listed() -> None:
    assert set(SHORTEST_IAD) == set(CVN)


@pytest.mark.parametrize(("cvn", "shortest"), sorted(SHORTEST_IAD.items()))
def test_the_shortest_iad_is_taken_and_one_byte_less_refused(cvn: CVN, shortest: int) -> None:
    args = {"cdol1_data": bytes(29), "aip": bytes.fromhex("1800"), "atc": bytes.fromhex("0042")}
    args["un"] = bytes(4)
    iad = bytes(range(1, shortest + 1))
    fast = AcCalculator(cvn, MK)
    ac = generate_ac(cvn, MK, iad=iad, **args)
    assert len(ac) == 8
    assert fast.generate(args["cdol1_data"], args["aip"], args["atc"], iad, args["un"]) == ac
    with pytest.raises(ValidationError, match="iad"):
        generate_ac(cvn, MK, iad=iad[:-1], **args)
    with pytest.raises(ValidationError, match="iad"):
        fast.generate(args["cdol1_data"], args["aip"], args["atc"], iad[:-1], args["un"])
