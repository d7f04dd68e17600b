"""One worker's configuration and open verifier: what every request handler reaches.

Theory of operation
-------------------
1. :class:`ServiceConfig` is everything a worker needs, as plain values. ``capsim verifier
   serve`` puts it in the environment (:data:`CONFIG_ENV`, JSON) before uvicorn starts its
   workers, and each worker rebuilds it (:meth:`ServiceConfig.from_env`): worker processes
   share nothing else.
2. :class:`Runtime` is the worker's open :class:`~capsim.verifier.session.VerifierSession`
   (store, keys, audit seal key) and its one :class:`~capsim.verifier.service.Verifier`,
   opened when the worker starts and closed when it stops. It holds no state a restart would
   lose: operations, request ids, clients and rate counters all live in the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from capsim.errors import ConfigError
from capsim.verifier import migrate
from capsim.verifier.dburl import DbKind, parse_db_url
from capsim.verifier.service import Verifier
from capsim.verifier.session import VerifierSession, open_session

__all__ = ["CONFIG_ENV", "Runtime", "ServiceConfig", "open_runtime"]

#: The environment variable that carries the :class:`ServiceConfig` to worker processes.
CONFIG_ENV: Final = "CAPSIM_SERVICE_CONFIG"


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """A worker's configuration (module docstring, rule 1).

    Attributes
    ----------
    db:
        The verifier database URL (as ``--db``).
    keyring:
        The keyring file holding the audit seal key (``None``: the database's default).
    max_body:
        Largest request body accepted, in bytes (413 above).
    rate_client, rate_credential:
        Requests per ``rate_window_s`` allowed per client and per credential (0: no limit).
    rate_window_s:
        The fixed window of the rate limits, in seconds.
    """

    db: str
    keyring: str | None = None
    max_body: int = 64 * 1024
    rate_client: int = 6000
    rate_credential: int = 60
    rate_window_s: int = 60

    def to_env(self) -> str:
        """The JSON form carried in :data:`CONFIG_ENV`."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_env(cls) -> ServiceConfig:
        """The configuration ``capsim verifier serve`` put in the environment."""
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise ConfigError(f"{CONFIG_ENV} is not set; start the service with 'capsim verifier serve'")
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{CONFIG_ENV}: not a service configuration ({exc})") from None


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """A worker's open verifier (module docstring, rule 2)."""

    config: ServiceConfig
    session: VerifierSession

    @property
    def verifier(self) -> Verifier:
        return self.session.verifier

    def schema_current(self) -> bool:
        """The store answers and its schema is at this capsim's migration head."""
        with self.session.store.transaction() as tx:
            version = tx.schema_version()
        if version is None:
            return True
        kind = parse_db_url(self.config.db).kind
        engine = "postgres" if kind is DbKind.POSTGRES else "sqlite"
        return version == migrate.head_version(engine)


@contextmanager
def open_runtime(config: ServiceConfig) -> Iterator[Runtime]:
    """Open the verifier database of ``config`` for the life of one worker (``serve`` always
    names the keyring file; ``None`` only suits ``memory:``)."""
    keyring = Path(config.keyring) if config.keyring else None
    with ExitStack() as stack:
        session = stack.enter_context(open_session(config.db, keyring_path=keyring, keys=True))
        yield Runtime(config=config, session=session)
