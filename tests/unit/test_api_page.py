"""The scorer's API page (`/docs`, from `/openapi.json`): an API-key security scheme, so "Authorize"
and "Try it out" work, and examples that are real (the README's requests, a demo's responses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fraud.settings import ScorerSettings
from services.scorer import examples
from services.scorer.app import create_app
from services.scorer.schemas import ErrorBody, ScoreResponse, TransactionRequest

ROOT = Path(__file__).resolve().parents[2]
KEYED = [("/v1/score", "post"), ("/v1/score/batch", "post"), ("/v1/model", "get")]


@pytest.fixture(scope="module")
def app() -> Any:
    return create_app(ScorerSettings(scorer_api_keys=["k-1"], scorer_audit_enabled=False))


def test_api_key_is_a_security_scheme_on_every_keyed_route(app: Any) -> None:
    doc = app.openapi()
    scheme = doc["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    for path, method in KEYED:
        op = doc["paths"][path][method]
        assert op["security"] == [{"ApiKey": []}], path
        assert all(p["name"].lower() != "x-api-key" for p in op.get("parameters", [])), path  # not a plain header
    for path in ("/healthz", "/readyz"):
        assert "security" not in doc["paths"][path]["get"]


def test_examples_are_the_readmes_and_valid(app: Any) -> None:
    op = app.openapi()["paths"]["/v1/score"]["post"]
    requests = op["requestBody"]["content"]["application/json"]["examples"]
    assert requests["unusual"]["value"] == json.loads((ROOT / "docs/examples/transaction.json").read_text())
    assert requests["usual"]["value"] == json.loads((ROOT / "docs/examples/transaction-usual.json").read_text())
    TransactionRequest.model_validate(requests["usual"]["value"])
    TransactionRequest.model_validate(requests["unusual"]["value"])
    scored = op["responses"]["200"]["content"]["application/json"]["examples"]
    assert set(scored) == set(examples.RESPONSES)
    assert {e["value"]["decision"] for e in examples.RESPONSES.values()} >= {"approve", "decline"}
    for e in examples.RESPONSES.values():  # (the page drops their nulls: FastAPI's OpenAPI excludes None)
        ScoreResponse.model_validate(e["value"])
    assert set(op["responses"]["422"]["content"]["application/json"]["examples"]) == {"invalid"}
    ErrorBody.model_validate(examples.INVALID_RESPONSE["invalid"]["value"])


def test_the_invalid_example_gets_the_documented_422(app: Any) -> None:
    """The route checks the key, then the body: the 422 example is what the API answers (but the request id)."""
    app.state.api_keys = [b"k-1"]
    app.state.service = None  # validation fails before the service is reached
    with_key = TestClient(app).post("/v1/score", json=examples.INVALID, headers={"X-API-Key": "k-1"})
    assert with_key.status_code == 422
    documented = examples.INVALID_RESPONSE["invalid"]["value"]
    assert with_key.json()["fields"] == documented["fields"]
