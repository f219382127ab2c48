"""Quarantine that loses nothing: a failed batch check isolates the rows it blames, the rest goes on,
and `fraud quarantine list|show|replay` brings the isolated events back once fixed (real broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud import history
from fraud.cli import app
from fraud.contracts import transaction_messages
from fraud.kafka import make_producer
from fraud.settings import IngestSettings
from services import quarantine
from services.ingest import build
from tests.factories import history as make_history

pytestmark = pytest.mark.integration


def _send(bootstrap: str, topic: str, events: pd.DataFrame) -> None:
    producer = make_producer(bootstrap)
    for key, value in transaction_messages(events):
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def _ingest(settings: IngestSettings) -> dict[str, int]:
    ingestor = build(settings)
    ingestor.run()
    ingestor.close()
    return dict(ingestor.totals)


def test_a_failed_check_isolates_its_rows_and_replay_brings_them_back(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_history(n=300, users=10, seed=5).sort_values("event_time", kind="stable").reset_index(drop=True)
    wrong = events.index[-5:]  # the latest events: on replay they are not late behind the watermark
    broken = events.copy()
    broken.loc[wrong, "amount_usd"] = broken.loc[wrong, "amount_usd"] * 1e6  # a unit error upstream
    topic = topic_factory("quarantine", partitions=1)
    _send(kafka_bootstrap, topic, broken)
    settings = IngestSettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        ingest_topic=topic,
        ingest_dlq_topic=f"{topic}.dlq",
        ingest_group_id=f"g-{topic}",
        ingest_batch_max_events=1000,
        ingest_batch_max_seconds=1.0,
        ingest_idle_exit_seconds=4.0,
        ingest_data_docs_every=0,
    )
    totals = _ingest(settings)
    blamed = broken.loc[wrong][broken.loc[wrong, "amount_usd"] > 50_000_000]
    assert len(blamed) >= 1
    assert totals["quarantined"] == len(blamed) and totals["processed"] == 300 - len(blamed)
    assert set(history.read(tmp_path, "transactions").transaction_id) == set(events.transaction_id) - set(
        blamed.transaction_id
    )

    for name, value in {
        "FRAUD_DATA_DIR": str(tmp_path),
        "FRAUD_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FRAUD_INGEST_TOPIC": topic,
    }.items():
        monkeypatch.setenv(name, value)
    cli = CliRunner()
    listed = cli.invoke(app, ["quarantine", "list"])
    assert listed.exit_code == 0, listed.output
    (entry,) = quarantine.entries(tmp_path)
    assert entry.id in listed.output and "not replayed" in listed.output and "amount_usd" in entry.first_failure
    shown = cli.invoke(app, ["quarantine", "show", entry.id])
    assert shown.exit_code == 0 and blamed.transaction_id.iloc[0] in shown.output
    assert cli.invoke(app, ["quarantine", "show", "batch-nope"]).exit_code != 0

    # the operator fixes the events, then replays them: they land like any event, once
    fixed, _ = quarantine.load(tmp_path, entry.id)
    fixed["amount_usd"] = fixed["amount_usd"] / 1e6
    fixed.to_parquet(quarantine.folder(tmp_path) / f"{entry.id}.parquet", index=False)
    replayed = cli.invoke(app, ["quarantine", "replay", entry.id])
    assert replayed.exit_code == 0 and f"{len(blamed)} events sent" in replayed.output
    assert "0 events sent" in cli.invoke(app, ["quarantine", "replay", entry.id]).output  # marked: not sent twice
    assert cli.invoke(app, ["quarantine", "replay", entry.id, "--force"]).exit_code == 0  # sent again on purpose
    totals = _ingest(settings)
    assert totals["processed"] == len(blamed) and totals["duplicates"] == len(blamed)  # the forced copy skipped
    stored = history.read(tmp_path, "transactions")
    assert len(stored) == 300 and set(stored.transaction_id) == set(events.transaction_id)
    assert quarantine.entries(tmp_path)[0].replayed is not None
