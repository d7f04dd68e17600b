"""A started worker keeps its start-up heap out of the garbage collector's generations, so a full
collection under load walks only what requests created (docs/performance.md, "Why p99 …")."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from capsim.cli.verifier import default_keyring
from capsim.service.app import create_app
from capsim.service.runtime import ServiceConfig
from tests.cli.helpers import make_world


def test_worker_start_freezes_the_start_up_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path)  # an initialised SQLite verifier with its keyring
    monkeypatch.setenv("CAPSIM_HOME", str(world.cli.home))
    config = ServiceConfig(db=world.db, keyring=str(default_keyring(world.db)))
    app = create_app(config)
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0

        async def start_and_stop() -> int:
            async with app.router.lifespan_context(app):
                frozen = gc.get_freeze_count()
                assert app.state.runtime is not None
            return frozen

        frozen = asyncio.run(start_and_stop())
        # the modules, the application and the open store: far more than a handful of objects
        assert frozen > 10_000
    finally:
        gc.unfreeze()
