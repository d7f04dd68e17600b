"""Pieces the remote commands share (:mod:`capsim.cli.remote` and :mod:`capsim.cli.remote_certs`):
the handler type, the output of a result and the JSON of a rejected code."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from capsim.cli._common import JSON_ERROR_EXTRA
from capsim.client import VerifierClient
from capsim.errors import InvalidCode

__all__ = ["Handler", "emit", "json_rejection"]

#: A remote command: the client and the command's parameters.
Handler = Callable[[VerifierClient, dict[str, Any]], None]


def emit(kw: dict[str, Any], obj: Any, lines: list[str]) -> None:
    """``obj`` as one JSON object under ``--json``, else ``lines``."""
    if kw["as_json"]:
        click.echo(json.dumps(obj, sort_keys=True))
        return
    for line in lines:
        click.echo(line)


@contextmanager
def json_rejection(kw: dict[str, Any], key: str) -> Iterator[None]:
    """On a rejected code, add ``{key: false}`` to the JSON error object (``--json``) and re-raise."""
    try:
        yield
    except InvalidCode:
        if kw["as_json"]:  # handle_errors prints the JSON error object with this key
            click.get_current_context().meta[JSON_ERROR_EXTRA] = {key: False}
        raise
