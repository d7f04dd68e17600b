"""The verifier as an HTTP service (``capsim verifier serve``): docs/http-api.md.

:func:`capsim.service.app.create_app` builds the ASGI application (FastAPI) over one verifier
database; each uvicorn worker process opens its own
:class:`~capsim.verifier.service.Verifier` on the shared store and keeps no state of its own.
This package imports nothing on its own: ``serve`` must set ``PROMETHEUS_MULTIPROC_DIR``
before :mod:`capsim.service.metrics` (and so ``prometheus_client``) is first imported.
"""

from __future__ import annotations
