"""The ingest service against the real broker and real Feast stores: nothing lost, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import aggregates as A
from fraud import history
from fraud import store as S
from fraud.contracts import transaction_messages
from fraud.kafka import make_producer
from fraud.settings import IngestSettings
from services.ingest import build
from tests.factories import history as make_history
from tests.online_check import assert_serves_the_history, served

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _good_payloads(events: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    return transaction_messages(events)


def _bad_payloads(template: bytes, n: int) -> list[tuple[bytes, bytes]]:
    """n bad events, every kind of defect in turn."""
    base = json.loads(template)
    kinds: list[Callable[[dict[str, object], int], bytes]] = [
        lambda e, i: b"{not json at all " + str(i).encode(),
        lambda e, i: json.dumps(e | {"transaction_id": f"bad-type-{i}", "amount": "12.5"}).encode(),
        lambda e, i: json.dumps(e | {"transaction_id": f"bad-asset-{i}", "asset": "DOGE"}).encode(),
        lambda e, i: json.dumps(e | {"transaction_id": f"bad-neg-{i}", "amount": -3.0}).encode(),
        lambda e, i: json.dumps(e | {"transaction_id": f"bad-naive-{i}", "event_time": "2026-01-01T10:00:00"}).encode(),
        lambda e, i: json.dumps(
            {k: v for k, v in e.items() if k != "user_id"} | {"transaction_id": f"bad-miss-{i}"}
        ).encode(),
    ]
    return [(b"bad", kinds[i % len(kinds)](dict(base), i)) for i in range(n)]


def _produce(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(bootstrap)
    for key, value in payloads:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _settings(tmp: Path, topic: str, bootstrap: str, **kw: object) -> IngestSettings:
    values: dict[str, object] = {
        "data_dir": tmp,
        "kafka_bootstrap_servers": bootstrap,
        "ingest_topic": topic,
        "ingest_dlq_topic": f"{topic}.dlq",
        "ingest_group_id": f"g-{topic}",
        "ingest_batch_max_events": 2000,
        "ingest_batch_max_seconds": 0.5,
        "ingest_idle_exit_seconds": 4.0,
        "ingest_validate_batches": True,
    }
    values.update(kw)
    return IngestSettings(**values)  # type: ignore[arg-type]


def _count_dlq(bootstrap: str, topic: str, expected: int) -> list[dict[str, object]]:
    from fraud.kafka import make_consumer

    consumer = make_consumer(bootstrap, f"dlq-reader-{topic}", topic)
    letters: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while len(letters) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            letters.extend(json.loads(r.value) for r in batch)
    consumer.close()
    return letters


def _end_state(data_dir: Path, users: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The committed history (sorted) and every user's online row."""
    settings = IngestSettings(data_dir=data_dir)
    hist = history.read(data_dir, "transactions").sort_values("transaction_id").reset_index(drop=True)
    online = S.online_features(S.open_store(settings), [{"user_id": u} for u in users], view="user_activity")
    return hist, online.sort_values("user_id").reset_index(drop=True)


def test_20k_events_with_5_percent_bad_nothing_lost_online_equals_backfill(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=19_000, users=400, seed=21)
    good = _good_payloads(events)
    bad = _bad_payloads(good[0][1], 1_000)
    rng = np.random.default_rng(0)
    mixed = good + bad
    # bad events land anywhere in the stream; good events keep their per-user order
    order = np.argsort(np.r_[np.arange(len(good)), rng.integers(0, len(good), len(bad))], kind="stable")
    topic = topic_factory("ingest20k", partitions=3)
    _produce(kafka_bootstrap, topic, [mixed[i] for i in order])

    settings = _settings(tmp_path, topic, kafka_bootstrap)
    ingestor = build(settings)
    ingestor.run()
    ingestor.close()

    totals = ingestor.totals
    assert totals["events_in"] == 20_000
    assert totals["processed"] + totals["dlq"] == 20_000
    assert totals["dlq"] == 1_000 and totals["quarantined"] == 0 and totals["duplicates"] == 0
    letters = _count_dlq(kafka_bootstrap, f"{topic}.dlq", 1_000)
    assert len(letters) == 1_000
    assert all(
        {"original_b64", "error", "source_topic", "source_partition", "source_offset"} <= set(x) for x in letters
    )
    assert {str(x["source_topic"]) for x in letters} == {topic}
    # each good event exactly once in the offline history and in every view
    hist = pd.concat([pd.read_parquet(p) for p in history.parts(tmp_path, "transactions")])
    assert len(hist) == 19_000 and hist.transaction_id.is_unique
    # every user's online row serves what training computes over the good events
    assert assert_serves_the_history(settings, events) == events.user_id.nunique()


def test_a_fraud_label_changes_the_online_risk_features_with_no_further_event(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """A label committed by `fraud ingest-labels` reaches the online rows of its transaction's device,
    IP and address on the ingest's next turn, though none of them transacts again."""
    events = make_history(n=400, users=10, seed=7)
    topic = topic_factory("ingestlabel", partitions=1)
    _produce(kafka_bootstrap, topic, _good_payloads(events))
    settings = _settings(tmp_path, topic, kafka_bootstrap, ingest_idle_exit_seconds=2.0)
    ingestor = build(settings)
    try:
        ingestor.run()
        assert ingestor.totals["processed"] == len(events)
        target = events.sort_values("event_time").iloc[-3]
        end = events["event_time"].max()
        request = pd.DataFrame([target]).assign(transaction_id="later", event_time=end + pd.Timedelta(hours=1))
        before = served(settings, request).iloc[0]
        label = pd.DataFrame(
            {
                "transaction_id": [target.transaction_id],
                "is_fraud": [True],
                "fraud_type": ["account_takeover"],
                "label_time": [end + pd.Timedelta(minutes=1)],
            }
        )
        history.append(tmp_path, "labels", label, tag="stream")  # what `fraud ingest-labels` commits
        assert ingestor.refresh_labels() == 1
        ingestor.commit(flush=True)
        after = served(settings, request).iloc[0]
    finally:
        ingestor.close()
    for kind in ("device", "ip"):
        assert after[f"{kind}_fraud_count_7d"] == before[f"{kind}_fraud_count_7d"] + 1, kind
        assert after[f"{kind}_fraud_rate_7d"] > before[f"{kind}_fraud_rate_7d"], kind
    assert after["txn_count_total"] == before["txn_count_total"]  # no event was added
    assert ingestor.label_lags, "the label's online write was not timed"

    # a label committed while the ingest is down (or just before a crash, before its rows were
    # written) reaches the online store once it is back
    other = events.sort_values("event_time").iloc[-5]
    late = label.assign(transaction_id=other.transaction_id, label_time=end + pd.Timedelta(minutes=2))
    history.append(tmp_path, "labels", late, tag="stream")
    ingestor = build(settings)
    try:
        ingestor.refresh_labels()
        ingestor.commit(flush=True)
    finally:
        ingestor.close()
    again = served(
        settings, pd.DataFrame([other]).assign(transaction_id="later", event_time=end + pd.Timedelta(hours=1))
    )
    want = A.features_at(
        events, pd.concat([label, late]), pd.DataFrame([other]).assign(event_time=end + pd.Timedelta(hours=1))
    )
    for kind in ("device", "ip"):
        assert again[f"{kind}_fraud_count_7d"].iloc[0] == want[f"{kind}_fraud_count_7d"].iloc[0] >= 1, kind


def _spawn_ingest(settings: IngestSettings, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        f"FRAUD_{k.upper()}": str(v)
        for k, v in settings.model_dump().items()
        if k.startswith(("ingest_", "kafka_", "data_dir")) and v is not None
    }
    return subprocess.Popen(
        [sys.executable, "-m", "fraud.cli", "ingest"],
        cwd=ROOT,
        env=env,
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_parts(data_dir: Path, at_least: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(history.parts(data_dir, "transactions")) < at_least:
        assert time.monotonic() < deadline, "ingest made no progress"
        time.sleep(0.2)


def test_kill_9_mid_stream_then_restart_reaches_the_same_end_state(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=6_000, users=120, seed=33)
    payloads = _good_payloads(events)
    topic = topic_factory("ingestkill", partitions=3)
    _produce(kafka_bootstrap, topic, payloads)
    # offline commits every 0.3 s: the kill finds batches written online and not yet offline
    small = {"ingest_batch_max_events": 200, "ingest_batch_max_seconds": 0.3, "ingest_offline_commit_seconds": 0.3}

    # uninterrupted reference run
    ref_topic_settings = _settings(tmp_path / "ref", topic, kafka_bootstrap, ingest_group_id=f"ref-{topic}", **small)
    ref = build(ref_topic_settings)
    ref.run()
    ref.close()

    crash = _settings(tmp_path / "crash", topic, kafka_bootstrap, **small)
    proc = _spawn_ingest(crash, tmp_path / "ingest.log")
    _wait_parts(crash.data_dir, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(pd.read_parquet(history.folder(crash.data_dir, "transactions")))
    assert 0 < done_before < 6_000
    proc = _spawn_ingest(crash, tmp_path / "ingest.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "ingest.log").read_text()[-3000:]

    users = sorted(events.user_id.unique())
    ref_hist, _ = _end_state(tmp_path / "ref", users)
    got_hist, _ = _end_state(tmp_path / "crash", users)
    assert len(got_hist) == 6_000 and list(got_hist.transaction_id) == list(ref_hist.transaction_id)
    for run in (ref_topic_settings, crash):  # both serve what training computes over the same events
        assert assert_serves_the_history(run, events) == len(users)


def test_broker_restart_mid_stream_loses_nothing(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=4_000, users=80, seed=44).sort_values("event_time").reset_index(drop=True)
    payloads = _good_payloads(events)
    topic = topic_factory("ingestbroker", partitions=3)
    _produce(kafka_bootstrap, topic, payloads[:2_000])
    settings = _settings(
        tmp_path,
        topic,
        kafka_bootstrap,
        ingest_batch_max_events=300,
        ingest_idle_exit_seconds=0,  # runs until stopped: how long the broker takes to come back is no matter
        kafka_wait_seconds=120,
    )
    proc = _spawn_ingest(settings, tmp_path / "ingest.log")
    try:
        _wait_parts(tmp_path, 1)
        broker = ROOT / "infra" / "kafka" / "broker.sh"
        subprocess.run([str(broker), "stop"], check=True, timeout=60)
        try:
            time.sleep(3)
            assert proc.poll() is None, "ingest died while the broker was away"
        finally:  # the broker serves every later test: it comes back whatever happened here
            subprocess.run([str(broker), "start"], check=True, timeout=120)
        _produce(kafka_bootstrap, topic, payloads[2_000:])
        deadline = time.monotonic() + 300
        while len(history.read(tmp_path, "transactions")) < 4_000 and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "ingest.log").read_text()[-3000:]
            time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)  # finishes its batch, commits, closes
        assert proc.wait(timeout=120) == 0, (tmp_path / "ingest.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    hist = pd.read_parquet(history.folder(tmp_path, "transactions"))
    assert len(hist) == 4_000 and hist.transaction_id.is_unique


def test_batch_failing_its_expectations_is_quarantined_not_written(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=300, users=10, seed=5)
    # valid events (the contract takes up to $1e12) above the batch suite's plausible $50M: the batch
    # check fails. (Events dated years ahead used to be the example: the event-time policy now
    # dead-letters them one by one, see tests/integration/test_hostile_input.py.)
    events["amount_usd"] = 60_000_000.0
    topic = topic_factory("ingestskew", partitions=1)
    _produce(kafka_bootstrap, topic, _good_payloads(events))
    ingestor = build(_settings(tmp_path, topic, kafka_bootstrap, ingest_idle_exit_seconds=3.0))
    ingestor.run()
    ingestor.close()
    assert ingestor.totals["quarantined"] == 300
    assert ingestor.totals["processed"] == 0
    assert history.parts(tmp_path, "transactions") == []
    reports = list((tmp_path / "quarantine").glob("*.txt"))
    assert reports and "amount_usd" in reports[0].read_text()
    assert sum(len(pd.read_parquet(p)) for p in (tmp_path / "quarantine").glob("*.parquet")) == 300
