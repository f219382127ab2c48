"""The audit trail against the real broker: stopped, the scorer restarted (and one killed), the broker back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from fraud.kafka import json_bytes, wait_for_broker
from services.scorer import core
from services.scorer.audit import AuditPublisher, unpublished_gauge
from tests.unit.test_audit_spool import FEATURES, T0, scored, spool_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "infra" / "kafka" / "broker.sh"
GAUGE = "fraud_scorer_audit_unpublished"

# A scorer process that spools decisions while the broker is away and is then killed with SIGKILL. At its
# start it claims the spool of the scorer stopped before it: it waits until that and its own are on disk.
CRASHING_SCORER = """
import sys, time
from pathlib import Path
from services.scorer.audit import AuditPublisher
from tests.unit.test_audit_spool import FEATURES, scored
pub = AuditPublisher(sys.argv[1], sys.argv[2], Path(sys.argv[3]), interval_s=0.02, retry_max_s=60.0)
pub.start()
pub.publish([scored(i, score=i / 400) for i in range(int(sys.argv[4]), int(sys.argv[5]))], FEATURES)
while pub.spool.pending < int(sys.argv[6]):
    time.sleep(0.02)
pub.spool.sync()
print("spooled", flush=True)
time.sleep(600)
"""


def _broker(command: str) -> None:
    subprocess.run([str(BROKER), command], check=True, timeout=150, cwd=ROOT)


def _broker_running() -> bool:
    return subprocess.run([str(BROKER), "status"], capture_output=True, timeout=30, cwd=ROOT).returncode == 0


@pytest.fixture
def broker_restored(kafka_bootstrap: str) -> Iterator[str]:
    """The test may stop the broker: it runs again when the test ends, failed or not."""
    yield kafka_bootstrap
    if not _broker_running():
        _broker("start")
    wait_for_broker(kafka_bootstrap, timeout_s=60)


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_topic(bootstrap: str, topic: str, want_keys: set[bytes], timeout_s: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while {m.key for m in out} < want_keys and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        consumer.close()


def test_every_decision_reaches_the_topic_across_an_outage_and_restarts(
    broker_restored: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    bootstrap = broker_restored
    topic = topic_factory("audit", partitions=3)
    spool_dir = tmp_path / "audit-spool"
    registry = CollectorRegistry()
    gauge = unpublished_gauge(registry)

    made_publishers: list[AuditPublisher] = []

    def publisher() -> AuditPublisher:
        pub = AuditPublisher(
            bootstrap,
            topic,
            spool_dir,
            interval_s=0.02,
            on_pending=gauge.set,
            retry_max_s=2.0,
            stall_s=1.0,
            probe_timeout_s=3.0,
            flush_timeout_s=10.0,
        )
        made_publishers.append(pub)
        return pub

    decisions = {s.transaction.transaction_id: s for s in (scored(i, score=i / 400) for i in range(400))}
    made = list(decisions.values())
    first = publisher()
    first.start()
    first.publish(made[:50], FEATURES)  # the broker is up: published live
    _wait(lambda: first.published == 50 and first.unpublished == 0, 30, "live decisions acknowledged")

    crashed: subprocess.Popen[str] | None = None
    try:
        _broker("stop")
        first.publish(made[50:75], FEATURES)  # in flight: the producer holds them, no acknowledgement comes
        _wait(lambda: not first._up, 20, "the stalled broker noticed")
        for i in range(75, 200, 25):  # decisions while the broker is known to be away: to the spool
            first.publish(made[i : i + 25], FEATURES)
        _wait(lambda: first.spool.pending >= 125, 20, "decisions spooled")  # (150 if the 25 failed meanwhile)
        _wait(lambda: registry.get_sample_value(GAUGE) == 150, 5, "gauge counting in flight and spooled")
        first.close(timeout_s=2.0)  # the scorer stops before the broker returns: in flight goes to the spool
        assert len(spool_lines(spool_dir)) == 150

        # Another scorer process spools decisions, then is killed: no clean shutdown, its lock dies with it.
        crashed = subprocess.Popen(
            [sys.executable, "-c", CRASHING_SCORER, bootstrap, topic, str(spool_dir), "200", "300", "250"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert crashed.stdout is not None and crashed.stdout.readline().strip() == "spooled"
        crashed.send_signal(signal.SIGKILL)
        crashed.wait(timeout=30)

        second = publisher()  # the scorer restarted while the broker is still away
        second.start()
        _wait(lambda: second.spool.pending >= 250, 20, "earlier spools claimed")
        second.publish(made[300:], FEATURES)
        _wait(lambda: registry.get_sample_value(GAUGE) == 350, 20, "gauge counting every unpublished decision")
        assert second.published == 0

        _broker("start")
        _wait(lambda: second.unpublished == 0, 60, "spool published after the broker returned")
        _wait(lambda: registry.get_sample_value(GAUGE) == 0, 5, "gauge back to 0")
        assert not list(spool_dir.glob("*.jsonl")), "spool files deleted once acknowledged"
        second.close()
    finally:
        if crashed is not None and crashed.poll() is None:
            crashed.kill()
        for pub in made_publishers:
            pub.close(timeout_s=2.0)  # no-op when already closed
        if not _broker_running():
            _broker("start")

    messages = _read_topic(bootstrap, topic, {k.encode() for k in decisions})
    by_key: dict[bytes, set[bytes]] = {}
    for m in messages:
        by_key.setdefault(m.key, set()).add(m.value)
    assert set(by_key) == {k.encode() for k in decisions}, "every decision on the topic"
    for key, values in by_key.items():
        assert len(values) == 1, f"{key!r}: a copy published twice must be byte-identical"
        (value,) = values
        scored_at = datetime.fromisoformat(json.loads(value)["scored_at"])
        assert value == json_bytes(core.audit_record(decisions[key.decode()], FEATURES, scored_at)), f"{key!r}"


class _NoStore:
    """The online reader's stand-in: this test is about the audit trail, not features."""

    healthy = True

    def __init__(self, *args: Any) -> None:
        pass

    def warm_up(self) -> bool:
        return True

    def close(self) -> None:
        pass


class _NoChampion:
    def champion_version(self) -> str | None:
        return None

    def load(self) -> Any:
        raise AssertionError("no champion to load")


def test_the_scorer_publishes_a_dead_workers_spool_at_start_and_reports_it_in_metrics(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from fraud.settings import ScorerSettings
    from services.scorer import app as scorer_app
    from services.scorer.audit import encode_line

    topic = topic_factory("auditapp", partitions=1)
    settings = ScorerSettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        scorer_audit_topic=topic,
        scorer_api_keys="k",  # parsed by the validator
        scorer_poll_seconds=3600,
    )
    spool_dir = tmp_path / "scorer" / "audit-spool"  # the default under data_dir
    spool_dir.mkdir(parents=True)
    made = [scored(i) for i in range(5)]
    left = [(s.transaction.transaction_id.encode(), json_bytes(core.audit_record(s, FEATURES, T0))) for s in made]
    (spool_dir / "4242-0123456789ab-000001.jsonl").write_bytes(b"".join(encode_line(k, v) for k, v in left))
    monkeypatch.setattr(scorer_app, "OnlineFeatureReader", _NoStore)

    with TestClient(scorer_app.create_app(settings, model_source=_NoChampion(), store=object())) as client:
        _wait(lambda: not list(spool_dir.glob("*.jsonl")), 30, "the spool published and deleted")
        _wait(lambda: f"{GAUGE} 0.0" in client.get("/metrics").text, 5, "the gauge in /metrics")
    messages = _read_topic(kafka_bootstrap, topic, {k for k, _ in left})
    assert sorted((m.key, m.value) for m in messages) == sorted(left)  # byte for byte as spooled
