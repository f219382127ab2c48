"""The scoring API against a real Feast store, a real MLflow registry (SQLite) and the real broker.

A small history is backfilled up to just before a chosen transaction: the online store then holds
what it holds when that transaction arrives, and the offline store gives its point-in-time training
row. A LightGBM model trained on that history's training frame is registered as `champion`.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from feature_repo.repo import is_array, is_time
from fraud import features as F
from fraud import store as S
from fraud.settings import BackfillSettings, ScorerSettings
from models.bundle import BUNDLE_FILE, Calibration, ModelBundle, Thresholds, load_bundle
from pipelines.backfill import backfill
from pipelines.training_set import training_frame
from services.scorer.app import create_app
from services.scorer.model_holder import MlflowChampion
from tests.factories import history, labels_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "test-key-" + uuid.uuid4().hex[:8]
NAME = "crypto-fraud-detector"


def register(tracking_uri: str, artifacts: Path, booster: lgb.Booster, champion: bool = True) -> str:
    """Log a booster with its bundle.json (as `fraud train` does), register it, and make it champion."""
    import mlflow

    bundle = ModelBundle(booster, list(booster.feature_name()), Calibration(0.8, -0.1), Thresholds(0.3, 0.7))
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if mlflow.get_experiment_by_name("scorer-tests") is None:
        mlflow.create_experiment("scorer-tests", artifact_location=artifacts.resolve().as_uri())
    mlflow.set_experiment("scorer-tests")
    with mlflow.start_run():
        mlflow.log_dict(bundle.to_json(), BUNDLE_FILE)
        info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name=NAME)
    version = str(info.registered_model_version)
    if champion:
        mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", version)
    return version


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path)
    return path


class World:
    """The shared setup: stores, the chosen transaction, its training row and the registry."""

    def __init__(self, root: Path) -> None:
        ev = history(n=200, users=6, seed=21)
        labels = labels_for(ev, fraud_share=0.25, seed=5)
        ev = ev.sort_values(["event_time", "transaction_id"]).reset_index(drop=True)
        sends = ev.index[(ev.type == "send") & ~ev.event_time.duplicated(keep=False)]
        self.target = ev.loc[sends[sends > 150][0]]
        t = self.target.event_time
        self.before = BackfillSettings(data_dir=root / "before")
        prior = ev[ev.event_time < t]
        prior_labels = labels[labels.transaction_id.isin(prior.transaction_id)]
        backfill(
            self.before,
            _write(prior, root / "tp.parquet"),
            _write(prior_labels, root / "lp.parquet"),
            show_progress=False,
        )
        # The offline store holds every row before the target: its point-in-time training row, and the
        # training rows of the history before it, come from there; the online store holds the latest rows.
        known = ev[ev.event_time <= t]
        frame = training_frame(S.open_store(self.before), known, labels, cutoff=labels.label_time.max())
        names = F.model_feature_names()
        request = frame.iloc[:, -len(F.REQUEST_FEATURES) :]  # last: `amount_usd` is also a transaction column
        assert list(request.columns) == F.REQUEST_FEATURES
        X = F.model_matrix(frame[F.stored_feature_names()], request)
        self.train_X, self.train_y = X, frame["is_fraud"].astype(int).to_numpy()
        self.target_row = X[frame["transaction_id"].to_numpy() == self.target.transaction_id].iloc[0]
        self.tracking_uri = f"sqlite:///{(root / 'mlflow.db').resolve()}"
        self.artifacts = root / "artifacts"
        self.v1 = register(self.tracking_uri, self.artifacts, self.booster(names, rounds=20, seed=1))
        self.v2 = register(self.tracking_uri, self.artifacts, self.booster(names, rounds=30, seed=2), champion=False)

    def booster(self, names: list[str], rounds: int, seed: int) -> lgb.Booster:
        params = {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": seed, "num_threads": 1}
        return lgb.train(params, lgb.Dataset(self.train_X.to_numpy(), self.train_y, feature_name=names), rounds)

    def transaction(self, **overrides: Any) -> dict[str, Any]:
        """The chosen transaction as a request body."""
        row = self.target.to_dict()
        body = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        body["event_time"] = pd.Timestamp(row["event_time"]).isoformat()
        body.update(overrides)
        return body

    def settings(self, topic: str, **kw: Any) -> ScorerSettings:
        values: dict[str, Any] = {
            "data_dir": self.before.data_dir,
            "mlflow_tracking_uri": self.tracking_uri,
            "scorer_api_keys": [KEY],
            "scorer_audit_topic": topic,
            "scorer_poll_seconds": 0.2,
        }
        values.update(kw)
        return ScorerSettings(**values)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("scorer"))


def _source(world: World, uri: str | None = None) -> MlflowChampion:
    return MlflowChampion(uri or world.tracking_uri, NAME, "champion")


@pytest.fixture
def client(world: World, topic_factory: Any, kafka_bootstrap: str) -> Iterator[TestClient]:
    topic = topic_factory("scores")
    settings = world.settings(topic, kafka_bootstrap_servers=kafka_bootstrap)
    with TestClient(create_app(settings, model_source=_source(world)), raise_server_exceptions=False) as c:
        c.headers["X-API-Key"] = KEY
        c.app.state.topic = topic  # type: ignore[attr-defined]
        yield c


def _audit(bootstrap: str, topic: str, transaction_id: str, timeout: float = 30.0) -> dict[str, Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    value = json.loads(rec.value)
                    if value["transaction_id"] == transaction_id:
                        return value
    finally:
        consumer.close()
    raise AssertionError(f"no audit record for {transaction_id} on {topic}")


def test_response_contract_and_audit_record(client: TestClient, world: World, kafka_bootstrap: str) -> None:
    resp = client.post("/v1/score", json=world.transaction(), params={"explain": "true"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "transaction_id",
        "score",
        "decision",
        "reason_codes",
        "explained",
        "model_version",
        "raw_score",
        "base_value",
        "other_contribution",
        "degraded",
        "missing_features",
        "feature_freshness",
    }
    assert body["transaction_id"] == world.target.transaction_id and body["model_version"] == world.v1
    assert 0.0 <= body["score"] <= 1.0 and body["decision"] in ("approve", "review", "decline")
    assert body["explained"] and not body["degraded"] and "user_activity" in body["feature_freshness"]
    assert body["feature_freshness"]["user_activity"]["age_seconds"] > 0  # the row is from before the transaction
    for reason in body["reason_codes"]:
        assert reason["contribution"] > 0 and reason["description"] and " " in reason["description"]
    total = body["base_value"] + sum(r["contribution"] for r in body["reason_codes"]) + body["other_contribution"]
    assert total == pytest.approx(body["raw_score"], abs=1e-9)
    assert resp.headers["x-request-id"]
    record = _audit(kafka_bootstrap, client.app.state.topic, world.target.transaction_id)  # type: ignore[attr-defined]
    assert record["score"] == body["score"] and record["decision"] == body["decision"]
    assert record["model_version"] == world.v1 and record["transaction"]["user_id"] == world.target.user_id
    # audited once its reasons (computed off the event loop) are in
    assert record["explained"] and record["reason_codes"] == [r["code"] for r in body["reason_codes"]]
    assert record["base_value"] == body["base_value"]
    assert set(record["features"]) == set(F.model_feature_names())
    plain = client.post("/v1/score", json=world.transaction(transaction_id="not-asked")).json()
    assert plain["score"] == body["score"]
    assert plain["explained"] == (plain["decision"] != "approve")  # reasons by default only where acted upon


@pytest.mark.parametrize("per_view", [False, True], ids=["sqlite-one-query", "provider-per-view"])
def test_scorer_online_read_equals_feast_get_online_features(world: World, per_view: bool) -> None:
    """The scorer's reads (SQLite in one query; Feast's provider view by view, as for Redis) return what
    the SDK's get_online_features returns."""
    from services.scorer import core
    from services.scorer.online import ABSENT, ENTITY_KEYS, OnlineFeatureReader

    store = S.open_store(world.before)
    reader = OnlineFeatureReader(store, timeout_s=10, retry_s=1, per_view=per_view)
    t = world.target
    rows = [
        {k: t[k] if isinstance(t[k], str) else ABSENT for k in ENTITY_KEYS},
        {k: "never-seen" for k in ENTITY_KEYS},
        {**{k: t[k] if isinstance(t[k], str) else ABSENT for k in ENTITY_KEYS}, "destination_address": ABSENT},
    ]
    ours = reader.read([_txn_like(r) for r in rows])
    if not per_view:  # the rows' event times too: as Feast's provider reads them
        provider = OnlineFeatureReader(store, timeout_s=10, retry_s=1, per_view=True)
        assert ours.as_of == provider.read([_txn_like(r) for r in rows]).as_of
    sdk = store.get_online_features(features=store.get_feature_service(S.SERVICE_NAME), entity_rows=rows).to_dict()
    assert set(ours.values) == {name for _, names in S.ALL_VIEWS.values() for name in names}
    for name, column in ours.values.items():
        expected = sdk[name]
        for i, (mine, theirs) in enumerate(zip(column, expected, strict=True)):
            view = next(v for v, (_, names) in S.ALL_VIEWS.items() if name in names)
            if rows[i][core.VIEW_KEYS[view]] == ABSENT:
                continue  # the SDK reads the "" key; the scorer does not look up an absent entity
            if theirs is None:
                assert mine is None or (isinstance(mine, float) and np.isnan(mine)) or np.isnat(mine), name
            elif is_array(name):  # an entity's state: its events, carry, label times
                np.testing.assert_array_equal(mine, np.asarray(theirs, dtype=np.float64), err_msg=name)
            elif is_time(name):  # stored as Int64 microseconds (`feature_repo.repo`)
                assert mine == np.datetime64(theirs, "us"), name
            else:
                assert mine == theirs, name
    assert ours.as_of["user_activity"][0] is not None and ours.as_of["user_activity"][1] is None
    assert ours.as_of["address_activity"][2] is None


def _txn_like(row: dict[str, str]) -> Any:
    """The entity fields the reader takes from a transaction."""
    from types import SimpleNamespace

    return SimpleNamespace(**{k: (v or None) for k, v in row.items()})


def test_served_features_and_score_equal_the_training_row(
    client: TestClient, world: World, kafka_bootstrap: str
) -> None:
    """Training/serving parity: online state just before the transaction == its point-in-time training row."""
    body = client.post("/v1/score", json=world.transaction()).json()
    record = _audit(kafka_bootstrap, client.app.state.topic, world.target.transaction_id)  # type: ignore[attr-defined]
    served = pd.Series(record["features"], dtype="float64")[F.model_feature_names()]
    pd.testing.assert_series_equal(served, world.target_row.astype("float64"), check_names=False, rtol=1e-12)
    offline = load_bundle(world.tracking_uri, NAME, "champion")
    X = world.target_row.to_numpy()[None, :]
    assert body["raw_score"] == pytest.approx(offline.margin(X)[0], abs=1e-9)  # contributions sum == predict
    assert body["score"] == pytest.approx(offline.proba(X)[0], abs=1e-12)


def test_batch_scores_in_order_and_is_bounded(client: TestClient, world: World) -> None:
    txns = [world.transaction(transaction_id=f"b{i}", amount_usd=10.0 * (i + 1)) for i in range(3)]
    resp = client.post("/v1/score/batch", json={"transactions": txns})
    assert resp.status_code == 200
    assert [r["transaction_id"] for r in resp.json()["results"]] == ["b0", "b1", "b2"]
    many = [world.transaction(transaction_id=f"m{i}") for i in range(101)]
    resp = client.post("/v1/score/batch", json={"transactions": many})
    assert resp.status_code == 422 and resp.json()["fields"][0]["field"] == "transactions"


def test_start_up_heap_is_frozen_out_of_garbage_collection(client: TestClient) -> None:
    # the objects loaded at start-up are never walked by a full collection (a ~300 ms stall otherwise)
    assert client.get("/readyz").status_code == 200
    assert gc.get_freeze_count() > 10_000


def test_model_info_and_probes(client: TestClient, world: World) -> None:
    info = client.get("/v1/model").json()
    assert info["version"] == world.v1 and info["feature_count"] == len(F.model_feature_names())
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["model_version"] == world.v1
    client.post("/v1/score", json=world.transaction())
    metrics = client.get("/metrics").text
    for name in ("fraud_scorer_request_seconds_bucket", "fraud_scorer_decisions_total", "fraud_scorer_score_bucket"):
        assert name in metrics


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"amount": -1.0}, "amount"),
        ({"asset": "DOGE"}, "asset"),
        ({"event_time": "2026-01-10T12:00:00"}, "event_time"),  # naive: rejected, never assumed UTC
        ({"ip_address": "not-an-ip"}, "ip_address"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient, world: World, override: dict[str, Any], field: str
) -> None:
    resp = client.post("/v1/score", json=world.transaction(**override))
    assert resp.status_code == 422
    body = resp.json()
    assert field in [f["field"] for f in body["fields"]]
    assert "Traceback" not in resp.text


def test_auth_body_limit_and_malformed_json(client: TestClient, world: World) -> None:
    assert client.post("/v1/score", json=world.transaction(), headers={"X-API-Key": ""}).status_code == 401
    resp = client.post("/v1/score", json=world.transaction(), headers={"X-API-Key": "wrong"})
    assert resp.status_code == 401 and resp.json()["error"].startswith("missing or invalid API key")
    assert client.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
    huge = world.transaction(transaction_id="x" * 300_000)
    assert client.post("/v1/score", json=huge).status_code == 413
    resp = client.post("/v1/score", content=b'{"transaction_id": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "Traceback" not in resp.text


def test_several_keys_at_once_each_with_its_own_rate_limit(
    world: World, topic_factory: Any, kafka_bootstrap: str
) -> None:
    """Keys rotate (old and new both valid); past its rate a key gets 429 with Retry-After, others do not."""
    settings = world.settings(
        topic_factory("scores"),
        kafka_bootstrap_servers=kafka_bootstrap,
        scorer_api_keys=["old-key-in-rotation", "new-key-in-rotation"],
        scorer_client_rate_limit=0.5,  # a burst of 1 request, then one every 2 s
        scorer_client_burst_seconds=1.0,
    )
    with TestClient(create_app(settings, model_source=_source(world)), raise_server_exceptions=False) as c:
        first = c.get("/v1/model", headers={"X-API-Key": "old-key-in-rotation"})
        limited = c.get("/v1/model", headers={"X-API-Key": "old-key-in-rotation"})
        other = c.get("/v1/model", headers={"X-API-Key": "new-key-in-rotation"})
    assert first.status_code == 200 and other.status_code == 200
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "limit" in limited.json()["error"]


def _degraded_total(metrics: str) -> float:
    lines = [line for line in metrics.splitlines() if line.startswith("fraud_scorer_degraded_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("policy", ["degraded", "unavailable"])
def test_online_store_down(world: World, topic_factory: Any, kafka_bootstrap: str, policy: str) -> None:
    settings = world.settings(
        topic_factory("scores"),
        kafka_bootstrap_servers=kafka_bootstrap,
        scorer_store_down=policy,
        scorer_store_timeout_ms=500,
    )
    dead = S.open_store(
        BackfillSettings(
            data_dir=world.before.data_dir, feast_mode="compose", feast_redis_url=f"127.0.0.1:{_closed_port()}"
        )
    )
    app = create_app(settings, model_source=_source(world), store=dead)
    with TestClient(app, raise_server_exceptions=False) as c:
        # Feast puts prometheus_client in multiprocess mode: counters are shared by every app built in
        # this process, so the check is on the change this request makes
        before = _degraded_total(c.get("/metrics").text)
        resp = c.post("/v1/score", json=world.transaction(), headers={"X-API-Key": KEY})
        if policy == "degraded":
            assert resp.status_code == 200
            body = resp.json()
            assert body["degraded"] and "user_activity" in body["missing_features"]
            assert c.get("/readyz").status_code == 200
            assert _degraded_total(c.get("/metrics").text) == before + 1
        else:
            assert resp.status_code == 503 and resp.json()["error"] == "online feature store unavailable"
            assert c.get("/readyz").status_code == 503


def test_no_model_means_503_never_a_score(
    world: World, tmp_path: Path, topic_factory: Any, kafka_bootstrap: str
) -> None:
    empty = f"sqlite:///{(tmp_path / 'empty.db').resolve()}"
    settings = world.settings(topic_factory("scores"), kafka_bootstrap_servers=kafka_bootstrap)
    with TestClient(create_app(settings, model_source=_source(world, empty)), raise_server_exceptions=False) as c:
        assert c.get("/readyz").status_code == 503
        resp = c.post("/v1/score", json=world.transaction(), headers={"X-API-Key": KEY})
        assert resp.status_code == 503 and "score" not in resp.json()
        assert c.get("/healthz").status_code == 200


def test_hot_swap_under_concurrent_requests_loses_none(world: World, topic_factory: Any, kafka_bootstrap: str) -> None:
    import mlflow
    import uvicorn

    v2 = world.v2  # registered, not champion yet
    registry = mlflow.MlflowClient(tracking_uri=world.tracking_uri)
    settings = world.settings(topic_factory("scores"), kafka_bootstrap_servers=kafka_bootstrap)
    app = create_app(settings, model_source=_source(world))
    port = _closed_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        stop = threading.Event()

        def adds_up(body: dict[str, Any]) -> bool:
            """Reasons from the model that scored it: base + reasons + other = its raw score."""
            reasons = sum(r["contribution"] for r in body["reason_codes"])
            return bool(abs(body["base_value"] + reasons + body["other_contribution"] - body["raw_score"]) < 1e-9)

        def hammer(worker: int) -> list[tuple[int, str]]:
            seen = []
            with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10) as http:
                i = 0
                while not stop.is_set():
                    explain = {"explain": "true"} if i % 2 else {}  # half explained: reasons across the swap too
                    r = http.post("/v1/score", json=world.transaction(transaction_id=f"h{worker}-{i}"), params=explain)
                    body = r.json()
                    seen.append((r.status_code, body.get("model_version", "")))
                    assert not explain or adds_up(body), body
                    i += 1
                    time.sleep(0.01)
            return seen

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(hammer, w) for w in range(3)]
            time.sleep(0.5)
            registry.set_registered_model_alias(NAME, "champion", v2)  # the promotion the scorer must pick up
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and httpx.get(f"{url}/readyz").json()["model_version"] != v2:
                time.sleep(0.1)
            time.sleep(0.5)
            stop.set()
            results = [r for f in futures for r in f.result()]
        assert results and all(code == 200 for code, _ in results)
        versions = [v for _, v in results]
        assert set(versions) == {world.v1, v2}
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        registry.set_registered_model_alias(NAME, "champion", world.v1)  # v1 again for any later test
