"""Property-based API tests over the served OpenAPI document: bounded examples per operation,
against a real service (SQLite, one worker), with an operator key. Every answer must be
documented (status code, content type, schema) and none may be a 5xx."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from capsim.cli.remote import _card as card_fields
from tests.service.conftest import Service, start_service

pytestmark = pytest.mark.timeout(300)

_SERVICE: list[Service] = []


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(
        tmp_path_factory.mktemp("fuzz"), extra=("--rate-credential", "0", "--rate-client", "0")
    )
    _enrol_first_listed(svc)
    _SERVICE.append(svc)
    yield svc
    svc.stop()


def _enrol_first_listed(svc: Service) -> None:
    """A credential for the user ``GET /v1/users`` lists first ('-' is the smallest identifier), so
    the link users → credentials reaches a real credential."""
    with svc.http() as http:
        assert http.post("/v1/users", json={"user_id": "-linked"}).status_code == 201
        code = http.post("/v1/users/-linked/activation-codes", json={}).json()["code"]
    world = svc.world
    run = world.v("enroll", "--activation-code", code, "--card", str(world.card), "--code",
                  world.code("identify"), "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr


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


# -- stateful: calls chained by the document's links ------------------------------------------------
_ROOTS = frozenset({"RANDOM__GET_v1_users", "RANDOM__POST_v1_users"})
_RULE = re.compile(r"^(RANDOM__)?(GET|POST)_v1_")


def _rules(machine: type) -> list[str]:
    """The names of the state machine's rules (one per root call and per link)."""
    return [name for name in dir(machine) if _RULE.match(name)]


def _is_cert(rule: str) -> bool:
    return "organisation" in rule or "certificate" in rule


_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_linked_call_sequences_conform_to_the_document(served: Service) -> None:
    """schemathesis's stateful mode follows the OpenAPI links (user → activation code →
    enrolment, users → credentials → lifecycle and operations, operation → read/verify):
    seeded, bounded, every answer checked; the chains must reach real resources."""
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    headers = {"Authorization": f"Bearer {served.keys['operator']}"}
    reached: dict[str, int] = {}
    card = card_fields(served.world.card, None)
    enrolled: list[str] = []

    machine = schema.as_state_machine()
    # Scenarios start at the collections; every other call follows a link (the stateless test
    # above already sends random identifiers to every route): the other root rules are hidden.
    hidden = {name: None for name in machine.root_rules if name not in _ROOTS}
    assert len(hidden) == len(machine.root_rules) - len(_ROOTS)
    # Certificate-credential links are hidden too: the machine stays the card scenarios' own
    # (the certificate routes are fuzzed by the stateless test; their links are checked by
    # tests/service/test_openapi_document.py, their chains by tests/service/test_http_certs.py).
    hidden.update({name: None for name in _rules(machine) if _is_cert(name)})
    Chained = type("Chained", (machine,), hidden)

    class Workflow(Chained):  # type: ignore[misc,valid-type]
        def before_call(self, case: schemathesis.Case) -> None:
            case.headers = {**(case.headers or {}), **headers}
            body = case.body
            if case.path == "/v1/enrolments" and isinstance(body, dict) and "activation_code" in body:
                # The linked activation code with the world's real card: a fresh credential.
                # (another PSN each time: a card is enrolled once)
                psn = f"{10 + len(enrolled) % 90:02d}"
                enrolled.append(psn)
                case.body = {**card, "psn": psn, "activation_code": body["activation_code"]}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": served.base}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            if response.status_code < 300:
                label = f"{case.method.upper()} {case.path}"
                reached[label] = reached.get(label, 0) + 1

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            case.validate_response(response, checks=_CHECKS)

    stateful = settings(
        max_examples=15,
        stateful_step_count=10,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    linked = {
        "GET /v1/users/{user_id}",
        "POST /v1/users/{user_id}/activation-codes",
        "POST /v1/enrolments",
        "GET /v1/users/{user_id}/credentials",
        "GET /v1/credentials/{credential_id}",
    }
    lifecycle = {
        f"POST /v1/credentials/{{credential_id}}/{a}" for a in ("suspend", "revoke", "lock", "unlock")
    }
    for _ in range(6):
        # The server's state may move under a replayed scenario (a credential revoked by an
        # earlier one): Hypothesis then stops that run (FlakyStrategyDefinition) and another
        # starts. A check failure is never swallowed (FailureGroup, FlakyFailure propagate).
        with contextlib.suppress(FlakyStrategyDefinition):
            Workflow.run(settings=stateful)
        # The scenarios are drawn against a server whose state the earlier ones changed, so
        # one run may not walk every chain: runs repeat (bounded) until the chains were walked.
        if linked <= set(reached) and lifecycle & set(reached):
            break
    assert linked <= set(reached), f"the links led to no real resource: {sorted(reached)}"
    assert lifecycle & set(reached), f"no credential lifecycle call succeeded: {sorted(reached)}"
