"""The ``capsim`` command line.

Each command family lives in its own module and is registered here. Exit codes are
documented in :mod:`capsim.cli._common` and in ``docs/cli.md``.
"""

from __future__ import annotations

import click

from capsim._version import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capsim")
def main() -> None:
    """capsim: emulated EMV-CAP cards, a CAP reader and a bank-side verifier."""


# Command families register themselves below (one line each).
from capsim.cli.tlv import tlv as _tlv; main.add_command(_tlv)  # noqa: E402, E702, I001
from capsim.cli.card import card as _card; main.add_command(_card)  # noqa: E402, E702, I001
from capsim.cli.code import code as _code; main.add_command(_code)  # noqa: E402, E702, I001
from capsim.cli.code import readers as _readers; main.add_command(_readers)  # noqa: E402, E702, I001
from capsim.cli.cap import cap as _cap; main.add_command(_cap)  # noqa: E402, E702, I001
from capsim.cli.serve import serve as _serve  # noqa: E402, F401, I001  (adds "serve" to the card group)
from capsim.cli import card_pin as _card_pin  # noqa: E402, F401  (adds "unblock", "change-pin" to "card")
from capsim.cli.verifier import verifier as _verifier; main.add_command(_verifier)  # noqa: E402, E702
from capsim.cli.verifier import verify as _verify; main.add_command(_verify)  # noqa: E402, E702, I001
from capsim.cli.demo import demo as _demo; main.add_command(_demo)  # noqa: E402, E702, I001
from capsim.cli.fuzz import fuzz as _fuzz; main.add_command(_fuzz)  # noqa: E402, E702, I001
from capsim.cli import verifier_certs as _verifier_certs  # noqa: E402, F401  (adds "cert")
from capsim.cli import verifier_keys as _verifier_keys  # noqa: E402, F401  (adds "keys", "init --pkcs11")
from capsim.cli import verifier_serve as _verifier_serve  # noqa: E402, F401  (adds "serve", "client")
