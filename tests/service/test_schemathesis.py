"""Property-based API tests over the served OpenAPI document: bounded examples per operation,
against a real service (SQLite, one worker), with an operator key. Every answer must be
documented (status code, content type, schema) and none may be a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(300)

_SERVICE: list[Service] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(
        tmp_path_factory.mktemp("fuzz"), extra=("--rate-credential", "0", "--rate-client", "0")
    )
    svc.world.enroll()
    _SERVICE.append(svc)
    yield svc
    svc.stop()


def test_api_conforms_to_its_document(served: Service) -> None:
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    headers = {"Authorization": f"Bearer {served.keys['operator']}"}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=served.base, headers=headers, checks=checks)

        run()


def test_the_fuzzed_service_logged_no_traceback() -> None:
    assert _SERVICE, "the fuzzing tests did not run"
    text = Path(_SERVICE[0].log).read_text()
    assert "Traceback" not in text
