"""Schemathesis against the scorer's OpenAPI schema, in process (ASGI), on the real stack of test_scorer.

Every operation gets schema-valid and schema-invalid requests (Schemathesis' positive and negative
modes), each checked by all of Schemathesis' default checks: no 5xx; status codes, content types,
headers and bodies as documented; invalid data rejected and valid data accepted, which holds only
because the schema says everything the `Transaction` contract checks
(`services.scorer.schemas.TransactionRequest`). On top: every 4xx is an `ErrorBody`, a 422 names its
fields. Bounded: `MAX_EXAMPLES` generated cases per operation and mode.

Schemathesis' own pytest entry (`schemathesis.pytest.from_fixture(...).parametrize()`) sets the
private `Node._nodeid`, which pytest 9.2 no longer has; its documented `APIOperation.as_strategy`
with Hypothesis' `@given` drives the same generation and checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.core.result import Ok

from services.scorer.app import create_app
from services.scorer.model_holder import MlflowChampion
from services.scorer.schemas import ErrorBody
from tests.integration.test_scorer import KEY, NAME, World

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_EXAMPLES = 50
OPERATIONS = [
    ("POST", "/v1/score"),
    ("POST", "/v1/score/batch"),
    ("GET", "/v1/model"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# Negative cases only where there is an input to make invalid: the GETs take none but the API key, which
# is fixed (Hypothesis would find no case at all: `Unsatisfiable`).
RUNS = [(m, p, POSITIVE) for m, p in OPERATIONS] + [(m, p, NEGATIVE) for m, p in OPERATIONS if m == "POST"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("scorer-schemathesis"))


@pytest.fixture
def scorer_schema(world: World, topic_factory: Any, kafka_bootstrap: str) -> Iterator[BaseSchema]:
    """The scorer as `fraud serve` builds it (Feast store, MLflow champion, audit to Kafka), and its schema.

    Schemathesis runs the app's lifespan at the first request and its pytest plugin ends it after the test."""
    settings_ = world.settings(topic_factory("scores"), kafka_bootstrap_servers=kafka_bootstrap)
    app = create_app(settings_, model_source=MlflowChampion(world.tracking_uri, NAME, "champion"))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(scorer_schema: BaseSchema) -> None:
    operations = set()
    for result in scorer_schema.get_all_operations():
        assert isinstance(result, Ok), result  # an Err: the schema has an operation Schemathesis cannot read
        operations.add((result.ok().method.upper(), result.ok().path))
    assert operations == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), RUNS, ids=[f"{m} {p} {mode}" for m, p, mode in RUNS])
def test_the_scorer_answers_as_its_schema_says(
    scorer_schema: BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = scorer_schema[path][method]
    # The API key is fixed, never generated: a random key only ever gets a 401.
    cases = operation.as_strategy(generation_mode=mode, headers={"X-API-Key": KEY})

    @given(case=cases)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def answers_as_documented(case: Case) -> None:
        response = case.call_and_validate()  # all of Schemathesis' default checks
        if 400 <= response.status_code < 500:
            body = ErrorBody.model_validate_json(response.content)
            assert body.error and "Traceback" not in response.text
            if response.status_code == 422:
                assert body.fields, "a 422 names the fields at fault"

    answers_as_documented()
