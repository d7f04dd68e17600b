"""capsim's own CAP vector files (TDS with several fields, the Belgian function), cross-checked
independently of the code under test."""

from __future__ import annotations

import pytest
from Crypto.Cipher import DES

from capsim.cap import belgian_code, compute_code, tds_mac, tds_message
from tests.utils import load_vectors, unhex

RABO_IPB = unhex("0700007FFFFF000000000000")
RABO_IAD = unhex("0C10A50003040000000000000000000000FF")


@pytest.mark.parametrize("v", load_vectors("cap/tds-synthetic.txt"))
def test_tds_vectors(v: dict[str, str]) -> None:
    fields = v["FIELDS"].split(",")
    key = unhex(v["KEY"])
    padded = unhex(v["PADDED"])
    assert padded.startswith(tds_message(fields))
    assert padded[len(tds_message(fields)) :] == b"\x80" + bytes(len(padded) - len(tds_message(fields)) - 1)
    assert len(padded) % 8 == 0
    independent = DES.new(key, DES.MODE_CBC, iv=bytes(8)).encrypt(padded)[-8:]
    assert independent == unhex(v["MAC"]) == tds_mac(fields, key)
    code = compute_code(RABO_IPB, b"\x80", unhex("007C"), unhex(v["MAC"]), RABO_IAD, psn=b"\x08")
    assert code == v["CODE"]


@pytest.mark.parametrize("v", load_vectors("cap/belgian-synthetic.txt"))
def test_belgian_vectors(v: dict[str, str]) -> None:
    atc, ac = unhex(v["ATC"]), unhex(v["AC"])
    value = (int.from_bytes(ac[5:7], "big") % 1024) * 65536 + atc[1] * 256 + ac[7]
    value = (value + (value % 10) * 10_000_000) % 100_000_000
    assert f"{value:08d}" == v["CODE"] == belgian_code(atc, ac)
