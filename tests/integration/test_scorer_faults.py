"""The scorer under faults of its dependencies, each ending in an accounting check.

- MLflow unreachable at start: a real `mlflow server` (SQLite backend, artifacts served by the
  server) is down when the scorer starts; the scorer comes up, answers 503 and not-ready, retries in
  the background with a backoff, and serves the champion once the server is back, with no restart.
- MLflow unreachable during a hot swap: the server stops while the scorer serves v1 under load; v2 is
  made champion while it is down; the scorer keeps serving v1, logs the failed polls, and swaps to v2
  once the server is back (v2's artifacts can only come through the server).
- Redis (the compose online store) down and back: a real `redis-server` holding the backfilled
  features is killed under load and started again; responses follow `FRAUD_SCORER_STORE_DOWN`, and
  full features come back without a restart.

Accounting, for every request sent: a 200 with a score or a documented 503, never another status,
never a hang (client timeout); every 200 decision is in the audit topic with its score and model.
Every server a test starts is stopped by it, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from fraud import features as F
from fraud.settings import BackfillSettings, ScorerSettings
from models.bundle import load_bundle
from pipelines.backfill import backfill
from services.scorer.app import create_app
from tests.integration.test_scorer import KEY, NAME, World, _closed_port, _source, register, world

__all__ = ["world"]  # the shared registry, stores and transaction of tests/integration/test_scorer.py

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
NO_MODEL = "no model loaded: not scoring"  # services.scorer.app: the 503 bodies
NO_STORE = "online feature store unavailable"
log = logging.getLogger(__name__)


def _until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


class Daemon:
    """A server process of the test's own, in its own process group; stop() ends the whole group."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path, self.env = name, argv, log_path, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None, f"{self.name} already running"
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the group, wait; SIGKILL what is left after 15 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # children that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])


class MlflowServer(Daemon):
    """`mlflow server` on a free loopback port: SQLite backend, artifacts served (proxied) by the server."""

    def __init__(self, home: Path) -> None:
        self.port = _closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = home / "mlflow.db"
        argv = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(home / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        # The background job runner (six more Python processes) is for GenAI jobs: not needed here.
        # Nor the Prometheus folder Feast's import sets in this process: the server's metric files would
        # land among the scorer's (its multiprocess exposition reads that folder).
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        super().__init__("mlflow", argv, home / "mlflow.log", env)

    def up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start_and_wait(self, timeout: float = 90) -> None:
        self.start()
        try:
            _until("mlflow server healthy", self.up, timeout, every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None


@dataclass
class Registry:
    server: MlflowServer
    v1: str
    v2: str


@pytest.fixture(scope="module")
def registry(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real MLflow server holding v1 (@champion) and v2, their artifacts stored through the server."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start_and_wait()
    try:
        # The experiment `register` uses, made first with the server's default (proxied) artifact root.
        mlflow.MlflowClient(tracking_uri=server.url).create_experiment("scorer-tests")
        names = F.model_feature_names()
        unused = server.db.parent / "unused"  # `register`'s local artifact root: not taken, the experiment exists
        v1 = register(server.url, unused, world.booster(names, rounds=20, seed=1))
        v2 = register(server.url, unused, world.booster(names, rounds=30, seed=2), champion=False)
        yield Registry(server, v1, v2)
    finally:
        server.stop()
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous)


class Scorer:
    """The scorer app served by uvicorn on a thread of the test (as in test_scorer's hot-swap test)."""

    def __init__(self, settings: ScorerSettings, **app_kw: Any) -> None:
        import uvicorn

        self.app = create_app(settings, **app_kw)
        self.url = f"http://127.0.0.1:{_closed_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Scorer:
        self.thread.start()
        _until("scorer live (/healthz)", self._live, 60)  # uvicorn listens once the lifespan is done
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "scorer did not stop"

    def _live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def holder(self) -> Any:
        return self.app.state.service.holder

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=5)

    def serving(self, version: str) -> bool:
        r = self.ready()
        return r.status_code == 200 and r.json()["model_version"] == version


@dataclass
class Answer:
    """One request: what was sent, when, and what came back (status None: no answer, an error)."""

    ids: list[str]
    sent: float
    done: float
    status: int | None
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Load:
    """Client threads sending /v1/score and, every third request, a /v1/score/batch of two, until stopped."""

    def __init__(self, world: World, url: str, threads: int = 3, pause_s: float = 0.02) -> None:
        self.world, self.url, self.pause_s = world, url, pause_s
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(threads)]
        self.run_id = uuid.uuid4().hex[:6]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=10) as http:
            i = 0
            while not self._stop.is_set():
                ids = (
                    [f"f{self.run_id}-{worker}-{i}"] if i % 3 else [f"f{self.run_id}-{worker}-{i}-{j}" for j in (0, 1)]
                )
                sent = time.monotonic()
                try:
                    if len(ids) == 1:
                        r = http.post("/v1/score", json=self.world.transaction(transaction_id=ids[0]))
                    else:
                        batch = {"transactions": [self.world.transaction(transaction_id=t) for t in ids]}
                        r = http.post("/v1/score/batch", json=batch)
                    answer = Answer(ids, sent, time.monotonic(), r.status_code, r.json())
                    if r.status_code == 503:
                        answer.body["retry_after"] = r.headers.get("retry-after")
                except Exception as exc:  # a hang (timeout) or a broken answer: counted, asserted later
                    answer = Answer(ids, sent, time.monotonic(), None, error=repr(exc))
                with self._lock:
                    self.answers.append(answer)
                i += 1
                time.sleep(self.pause_s)

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= t]


def scores(answer: Answer) -> list[dict[str, Any]]:
    """The per-transaction results of a 200 (one for /v1/score, several for a batch)."""
    return list(answer.body["results"]) if "results" in answer.body else [answer.body]


def account(answers: list[Answer], allowed_503: set[str], bootstrap: str, topic: str) -> dict[str, int]:
    """Every request answered: 200 with scores, or a 503 whose error is in `allowed_503` (with Retry-After);
    no other status, no hang. Every 200 decision is in the audit topic, as answered. Returns the counts."""
    assert answers, "no requests were sent"
    failed = [a for a in answers if a.status is None]
    assert not failed, f"{len(failed)} requests got no answer, e.g. {failed[0].error}"
    other = [a for a in answers if a.status not in (200, 503)]
    assert not other, f"unexpected statuses {sorted({a.status or 0 for a in other})}: {other[0].body}"
    for a in answers:
        if a.status == 503:
            assert a.body["error"] in allowed_503 and a.body["retry_after"], a.body
            assert "score" not in a.body and "results" not in a.body
    decided: dict[str, dict[str, Any]] = {}
    for a in answers:
        if a.status == 200:
            results = scores(a)
            assert [r["transaction_id"] for r in results] == a.ids
            assert len({r["model_version"] for r in results}) == 1, "two models in one response"
            if "results" in a.body:
                assert a.body["model_version"] == results[0]["model_version"]
            for r in results:
                assert 0.0 <= r["score"] <= 1.0 and r["decision"] in ("approve", "review", "decline")
                decided[r["transaction_id"]] = r
    audited = _audited(bootstrap, topic, set(decided))
    missing = set(decided) - set(audited)
    assert not missing, f"{len(missing)} of {len(decided)} decisions not in the audit topic, e.g. {sorted(missing)[:3]}"
    for tid, r in decided.items():
        record = audited[tid]
        assert (record["score"], record["decision"], record["model_version"]) == (
            r["score"],
            r["decision"],
            r["model_version"],
        ), tid
    counts = {"requests": len(answers), "ok": sum(a.status == 200 for a in answers), "decisions": len(decided)}
    counts["unavailable"] = counts["requests"] - counts["ok"]
    log.info("accounting: %s", counts)
    return counts


def _audited(bootstrap: str, topic: str, wanted: set[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """The audit records of `wanted` transactions on `topic` (stops when all are seen or at the timeout)."""
    found: dict[str, dict[str, Any]] = {}
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not wanted <= set(found):
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    value = json.loads(rec.value)
                    if value["transaction_id"] in wanted:
                        found[value["transaction_id"]] = value
    finally:
        consumer.close()
    return found


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_mlflow_unreachable_at_start_then_back(
    world: World, registry: Registry, topic_factory: Any, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.scorer.model_holder")
    server = registry.server
    server.stop()
    assert not server.up()
    topic = topic_factory("scores")
    # The scorer's own composition root: MlflowChampion on the server's URL (no model source passed).
    settings = world.settings(topic, kafka_bootstrap_servers=kafka_bootstrap, mlflow_tracking_uri=server.url)
    try:
        with Scorer(settings) as scorer:  # comes up (liveness) although the registry is down
            ready = scorer.ready()
            assert ready.status_code == 503 and ready.json()["detail"] == "no model loaded"
            r = httpx.post(f"{scorer.url}/v1/score", json=world.transaction(), headers={"X-API-Key": KEY}, timeout=10)
            assert r.status_code == 503 and r.json()["error"] == NO_MODEL and r.headers["retry-after"]
            assert scorer.holder.status == "model registry unreachable; retrying"
            with Load(world, scorer.url) as load:
                _until("two background retries", lambda: scorer.holder.failures >= 3, 30)
                retries = _messages(caplog, "model registry unreachable")
                assert "not ready: no model loaded" in retries[0] and "retrying in 1.0s" in retries[0]
                assert "retrying in 2.0s" in retries[1] and "retrying in 4.0s" in retries[2]  # the backoff
                back = time.monotonic()
                server.start_and_wait()
                _until("serving v1 once the server is back", lambda: scorer.serving(registry.v1), 60)
                time.sleep(1.0)
            answers = load.answers
            ok = [a for a in answers if a.status == 200]
            assert ok and all(a.sent >= back for a in ok)  # no score before the registry answered
            first_ok = min(a.done for a in ok)
            assert all(a.status == 200 for a in answers if a.sent > first_ok)  # once serving, never 503 again
            assert {r["model_version"] for a in ok for r in scores(a)} == {registry.v1}
            assert _messages(caplog, "model registry reachable again")
            counts = account(answers, {NO_MODEL}, kafka_bootstrap, topic)
            assert counts["unavailable"] > 0 and counts["ok"] > 0
    finally:
        if not server.up():
            server.start_and_wait()  # the module's other tests expect it up


def test_mlflow_unreachable_during_hot_swap(
    world: World, registry: Registry, topic_factory: Any, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow import MlflowClient

    caplog.set_level(logging.INFO, logger="services.scorer.model_holder")
    server = registry.server
    if not server.up():
        server.start_and_wait()
    topic = topic_factory("scores")
    settings = world.settings(topic, kafka_bootstrap_servers=kafka_bootstrap, mlflow_tracking_uri=server.url)
    # The server's own store, written directly while the server is down (as an operator could).
    backend = MlflowClient(tracking_uri=f"sqlite:///{server.db}", registry_uri=f"sqlite:///{server.db}")
    try:
        with Scorer(settings) as scorer:
            _until("serving v1", lambda: scorer.serving(registry.v1), 30)
            with Load(world, scorer.url) as load:
                time.sleep(1.0)
                server.stop()
                _until("a failed poll", lambda: scorer.holder.failures >= 1, 15)
                backend.set_registered_model_alias(NAME, "champion", registry.v2)  # promoted while unreachable
                time.sleep(2.0)
                assert scorer.serving(registry.v1)  # still v1, still ready
                back = time.monotonic()
                server.start_and_wait()
                _until("swapped to v2 once the server is back", lambda: scorer.serving(registry.v2), 60)
                time.sleep(1.0)
            answers = load.answers
        failed_polls = _messages(caplog, "model registry unreachable")
        assert failed_polls and all(f"still serving v{registry.v1}" in m for m in failed_polls)
        assert all(a.status == 200 for a in answers), "a request failed during the outage"
        seen = [(a.sent, r["model_version"]) for a in answers for r in scores(a)]
        assert {v for _, v in seen} == {registry.v1, registry.v2}
        assert all(sent >= back for sent, v in seen if v == registry.v2)  # v2 only through the server, once back
        account(answers, set(), kafka_bootstrap, topic)
    finally:
        backend.set_registered_model_alias(NAME, "champion", registry.v1)


class Redis(Daemon):
    """`redis-server` on a free loopback port, as compose runs it (append-only file), in a folder of the test."""

    def __init__(self, home: Path) -> None:
        self.port = _closed_port()
        argv = [
            _redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(home),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        super().__init__("redis", argv, home / "redis.log")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start_and_wait(self) -> None:
        self.start()
        _until("redis answers PING", self.ping, 30)


def _redis_server() -> str:
    """redis-server, installed by infra/compose_emulation.sh (Debian's package) when missing."""
    found = shutil.which("redis-server")
    if found is None:
        env = os.environ | {"EMU_HOME": str(ROOT / "data" / "compose-emulation")}
        done = subprocess.run(
            [str(ROOT / "infra" / "compose_emulation.sh"), "install"], env=env, capture_output=True, timeout=900
        )
        assert done.returncode == 0, f"could not install redis-server: {done.stderr.decode(errors='replace')}"
        found = shutil.which("redis-server")
    assert found, "redis-server is not on PATH after infra/compose_emulation.sh install"
    return found


@dataclass
class ComposeStore:
    redis: Redis
    settings: BackfillSettings


@pytest.fixture(scope="module")
def compose_store(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStore]:
    """The world's history backfilled in compose mode: Feast's file registry, online rows in a real Redis."""
    home = tmp_path_factory.mktemp("compose-store")
    redis_server = Redis(home)
    redis_server.start_and_wait()
    try:
        settings = BackfillSettings(
            data_dir=home / "data", feast_mode="compose", feast_redis_url=f"127.0.0.1:{redis_server.port}"
        )
        root = world.before.data_dir.parent  # World's inputs: the history before the target, and its labels
        backfill(settings, root / "tp.parquet", root / "lp.parquet", show_progress=False)
        yield ComposeStore(redis_server, settings)
    finally:
        redis_server.stop()


@pytest.mark.parametrize("policy", ["degraded", "unavailable"])
def test_redis_down_and_back(
    world: World, compose_store: ComposeStore, topic_factory: Any, kafka_bootstrap: str, policy: str
) -> None:
    redis_server = compose_store.redis
    if not redis_server.ping():
        redis_server.start_and_wait()
    topic = topic_factory("scores")
    settings = world.settings(
        topic,
        kafka_bootstrap_servers=kafka_bootstrap,
        data_dir=compose_store.settings.data_dir,
        feast_mode="compose",
        feast_redis_url=compose_store.settings.feast_redis_url,
        scorer_store_down=policy,
        scorer_store_timeout_ms=500,
        scorer_store_retry_seconds=1.0,
    )
    try:
        with Scorer(settings, model_source=_source(world)) as scorer:
            _until("ready", lambda: scorer.ready().status_code == 200, 30)
            first = httpx.post(f"{scorer.url}/v1/score", json=world.transaction(), headers={"X-API-Key": KEY})
            full = first.json()
            assert first.status_code == 200 and not full["degraded"], full
            # Full features from Redis: the score of the transaction's point-in-time training row.
            bundle = load_bundle(world.tracking_uri, NAME, alias=None, version=full["model_version"])
            expected = float(bundle.proba(world.target_row.to_numpy()[None, :])[0])
            assert full["score"] == pytest.approx(expected, abs=1e-12)

            def faulted(a: Answer) -> bool:
                return a.status == 503 or (a.status == 200 and any(r["degraded"] for r in scores(a)))

            def whole(a: Answer) -> bool:
                if a.status != 200:
                    return False
                return all(not r["degraded"] and r["missing_features"] == full["missing_features"] for r in scores(a))

            with Load(world, scorer.url) as load:
                time.sleep(1.0)
                down = time.monotonic()
                redis_server.stop(signal.SIGKILL)  # a crash
                _until("requests see the store down", lambda: any(faulted(a) for a in load.since(down)), 15)
                time.sleep(2.0)
                ready = scorer.ready()
                if policy == "unavailable":
                    assert ready.status_code == 503 and ready.json()["detail"] == NO_STORE
                else:
                    assert ready.status_code == 200 and ready.json()["detail"] == "online store down: scoring degraded"
                back = time.monotonic()
                redis_server.start_and_wait()
                _until("full features again", lambda: any(whole(a) for a in load.since(back)), 30)
                time.sleep(1.0)
            answers = load.answers
            assert scorer.ready().status_code == 200
        for a in answers:
            if a.status == 200:
                for r in scores(a):
                    if r["degraded"]:  # the documented degraded answer: request features only, every group missing
                        assert policy == "degraded" and r["missing_features"], r
                    else:  # whole: the same features as before the fault, so the same score
                        assert r["missing_features"] == full["missing_features"], r
                        assert r["score"] == pytest.approx(full["score"], abs=1e-12)
        assert any(faulted(a) for a in answers) and any(whole(a) for a in answers if a.sent >= back)
        if policy == "degraded":
            assert all(a.status == 200 for a in answers)
        else:
            assert not any(r["degraded"] for a in answers if a.status == 200 for r in scores(a))
        last = max((a for a in answers if a.done < back), key=lambda a: a.done, default=None)
        assert last is not None and faulted(last)  # down until it came back: never a stale full answer
        account(answers, {NO_STORE} if policy == "unavailable" else set(), kafka_bootstrap, topic)
    finally:
        if not redis_server.ping():
            redis_server.start_and_wait()


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    """The watcher's retry delays (no services): 1, 2, 4 ... capped, and back to the poll interval on success."""
    from services.scorer.model_holder import ModelHolder, RegistryUnreachable

    class Flaky:
        down = True

        def champion_version(self) -> str | None:
            if self.down:
                raise RegistryUnreachable("refused")
            return None

        def load(self) -> Any:
            raise AssertionError("not reached")

    source = Flaky()
    holder = ModelHolder(source, ["a"], retry_min_s=1.0, retry_max_s=5.0)
    delays = []
    for _ in range(5):
        assert not holder.refresh()
        delays.append(holder.retry_delay())
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0] and holder.current is None
    assert holder.status == "model registry unreachable; retrying"
    source.down = False
    assert not holder.refresh() and holder.failures == 0 and holder.status == "no champion registered yet"
