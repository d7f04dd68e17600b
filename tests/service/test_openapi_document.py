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
