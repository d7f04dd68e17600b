"""``capsim.client.VerifierClient`` against a real ``capsim verifier serve``: problems come back
as capsim's own errors, a rate limit as ``RetryLater`` with the service's ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from capsim.client import RetryLater, VerifierClient
from capsim.errors import ConfigError, InvalidCode, RequestConflict, ValidationError
from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service allowing each client 8 requests a minute."""
    service = start_service(tmp_path_factory.mktemp("client"), extra=("--rate-client", "8"))
    yield service
    service.stop()


def _until_limited(api: VerifierClient) -> RetryLater:
    for _ in range(12):
        try:
            api.get_operation("op-does-not-exist")
        except ValidationError:
            continue  # 404: counted, not yet limited
        except RetryLater as exc:
            return exc
    raise AssertionError("no 429 within 12 requests at 8 a minute")


def test_problems_become_capsim_errors_and_429_carries_retry_after(limited: Service) -> None:
    cid = limited.world.enroll()
    with VerifierClient(limited.base, limited.keys["verification"]) as api:
        code = limited.world.code("identify")
        assert api.login(cid, code, request_id="k1")["credential_id"] == cid
        with pytest.raises(InvalidCode):
            api.login(cid, code, request_id="k2")  # a replay
        with pytest.raises(RequestConflict):
            api.login(cid, limited.world.code("identify"), request_id="k1")
        with pytest.raises(ValidationError):
            api.get_operation("op-does-not-exist")
        with pytest.raises(ConfigError):
            api.list_users()  # the verification scope may not administer
        caught = _until_limited(api)
        assert caught.rate_limited
        assert caught.retry_after is not None
        assert caught.retry_after > 0
    with pytest.raises(ConfigError), VerifierClient(limited.base, limited.keys["operator"] + "x") as api:
        api.list_users()
    with pytest.raises(ConfigError):
        VerifierClient("ftp://example", "k")
