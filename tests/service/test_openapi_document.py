"""The OpenAPI 3.1 document committed under docs/ is the one the service serves."""

from __future__ import annotations

import json
from pathlib import Path

from capsim.service.app import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_matches_the_service() -> None:
    served = create_app().openapi()
    committed = json.loads(DOC.read_text(encoding="utf-8"))
    assert served == committed, (
        "docs/openapi.json is stale: regenerate it with python -m capsim.service.openapi > docs/openapi.json"
    )


def test_document_is_openapi_3_1_with_problems_and_a_key() -> None:
    doc = create_app().openapi()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    verify = doc["paths"]["/v1/operations/{operation_id}/verify"]["post"]
    assert "application/problem+json" in verify["responses"]["422"]["content"]
    assert verify["security"] == [{"apiKey": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_links_chain_operations_users_enrolment_and_credentials() -> None:
    """OpenAPI links: operation → read/verify, user → activation code → enrolment, credential →
    its lifecycle; every link names an existing operationId and a runtime expression."""
    doc = create_app().openapi()
    ids = {op["operationId"]: (m, p) for p, ops in doc["paths"].items() for m, op in ops.items()}

    def links(method: str, path: str, status: str) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = doc["paths"][path][method]["responses"][status]["links"]
        for link in found.values():
            assert link["operationId"] in ids
        return found

    new_op = links("post", "/v1/credentials/{credential_id}/operations", "201")
    assert ids[str(new_op["GetOperation"]["operationId"])] == ("get", "/v1/operations/{operation_id}")
    verify = new_op["VerifyOperation"]
    assert ids[str(verify["operationId"])] == ("post", "/v1/operations/{operation_id}/verify")
    assert verify["parameters"] == {"operation_id": "$response.body#/operation_id"}
    code = links("post", "/v1/users/{user_id}/activation-codes", "201")["Enrol"]
    assert code["requestBody"] == {"activation_code": "$response.body#/code"}
    assert {"GetUser", "IssueActivationCode", "ListCredentials"} <= set(links("post", "/v1/users", "201"))
    enrolled = links("post", "/v1/enrolments", "201")
    assert {"Suspend", "Resume", "Revoke", "ReportLost", "CreateOperation", "Login"} <= set(enrolled)
    assert enrolled["Suspend"]["parameters"] == {"credential_id": "$response.body#/credential_id"}
    assert set(links("post", "/v1/credentials/{credential_id}/suspend", "200")) >= {"Resume", "Revoke"}


def test_links_chain_organisations_challenges_and_certificates() -> None:
    """Certificate credentials: organisation → registration challenge → registration (the
    challenge id in the body) → certificate routes and supplementary registration; an operation
    challenge → its authentication."""
    doc = create_app().openapi()
    ids = {op["operationId"]: (m, p) for p, ops in doc["paths"].items() for m, op in ops.items()}

    def links(method: str, path: str, status: str) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = doc["paths"][path][method]["responses"][status]["links"]
        return found

    created = links("post", "/v1/organisations", "201")
    assert {"GetOrganisation", "RegistrationChallenge", "ListOrganisationUsers"} <= set(created)
    register = links("post", "/v1/organisations/{org_id}/registration-challenges", "201")[
        "RegisterCertificate"
    ]
    assert ids[str(register["operationId"])] == ("post", "/v1/organisations/{org_id}/certificates")
    assert register["requestBody"] == {"challenge_id": "$response.body#/challenge_id"}
    registered = links("post", "/v1/organisations/{org_id}/certificates", "201")
    assert registered["CertificateChallenge"]["parameters"] == {"credential_id": "$response.body#/cert_id"}
    supplementary = registered["RegisterSupplementary"]
    assert ids[str(supplementary["operationId"])] == (
        "post",
        "/v1/organisations/{org_id}/users/{user_id}/certificates",
    )
    auth = links("post", "/v1/certificates/{credential_id}/challenges", "201")["Authenticate"]
    assert ids[str(auth["operationId"])] == ("post", "/v1/certificate-challenges/{challenge_id}/authenticate")
    assert auth["parameters"] == {"challenge_id": "$response.body#/challenge_id"}
    secret = doc["components"]["schemas"]["RegistrationIn"]["properties"]
    assert {"master_code", "identity_number", "certificate", "signature"} <= set(secret)
    paths_and_queries = json.dumps(
        [p.get("parameters", []) for ops in doc["paths"].values() for p in ops.values()]
    )
    assert "master_code" not in paths_and_queries
    assert "identity_number" not in paths_and_queries
