"""`fraud quarantine`: the events a failed batch check isolated, kept until an operator replays them.

The ingest puts the rows a failing `ingest_batch` check blames here (the whole batch only when a
failure blames no row), one entry per check: `<id>.parquet` (the events, canonical columns) and
`<id>.txt` (the check's report). `replay` sends an entry's events back to the transactions topic,
keyed by user, so they take the path every event takes (contract, event-time policy, batch check,
features) and land where the stream would have put them; an event the history already holds is
skipped by the ingest as a duplicate, so a replay can be repeated safely. An entry replayed is marked
(`<id>.replayed`) and kept for the record. Events older than the ingest's allowed lateness behind its
watermark are dead-lettered as late on replay: those belong to a backfill (`fraud backfill`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from fraud.contracts import transaction_messages
from fraud.kafka import make_producer
from fraud.settings import IngestSettings

log = logging.getLogger(__name__)


def folder(data_dir: Path) -> Path:
    return data_dir / "quarantine"


@dataclass(frozen=True)
class Entry:
    """One quarantined set of events."""

    id: str
    rows: int
    batch_rows: int  # the batch they were isolated from
    created: str
    first_failure: str
    replayed: str | None  # when, if it was

    @property
    def whole_batch(self) -> bool:
        return self.rows == self.batch_rows


def put(data_dir: Path, events: pd.DataFrame, report: str, batch_rows: int) -> Path:
    """Keep `events` (isolated from a batch of `batch_rows`) with the check's report; returns the report's path."""
    target = folder(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    entry = f"batch-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
    events.to_parquet(target / f"{entry}.parquet", index=False)
    meta = {"rows": len(events), "batch_rows": batch_rows}
    (target / f"{entry}.txt").write_text(f"{report}\n# {json.dumps(meta)}\n")
    return target / f"{entry}.txt"


def _meta(report: str, rows: int) -> dict[str, int]:
    for line in reversed(report.splitlines()):
        if line.startswith("# {"):
            return dict(json.loads(line[2:]))
    return {"rows": rows, "batch_rows": rows}  # an entry written before the metadata line existed


def entries(data_dir: Path) -> list[Entry]:
    """Every quarantined entry, oldest first."""
    out = []
    for events in sorted(folder(data_dir).glob("batch-*.parquet")):
        report = events.with_suffix(".txt").read_text() if events.with_suffix(".txt").exists() else ""
        rows = len(pd.read_parquet(events, columns=["transaction_id"]))
        meta = _meta(report, rows)
        failures = [line.strip() for line in report.splitlines() if line.strip().startswith("- ")]
        marker = events.with_suffix(".replayed")
        out.append(
            Entry(
                id=events.stem,
                rows=meta["rows"],
                batch_rows=meta["batch_rows"],
                created=datetime.strptime(events.stem.removeprefix("batch-"), "%Y%m%dT%H%M%S%f")
                .replace(tzinfo=UTC)
                .isoformat(timespec="seconds"),
                first_failure=failures[0].removeprefix("- ") if failures else "",
                replayed=marker.read_text().strip() if marker.exists() else None,
            )
        )
    return out


def load(data_dir: Path, entry: str) -> tuple[pd.DataFrame, str]:
    """An entry's events and report (KeyError with the known ids when there is no such entry)."""
    events = folder(data_dir) / f"{entry}.parquet"
    if not events.exists():
        known = ", ".join(e.id for e in entries(data_dir)) or "none"
        raise KeyError(f"no quarantined entry {entry!r} (known: {known})")
    report = events.with_suffix(".txt")
    return pd.read_parquet(events), report.read_text() if report.exists() else ""


def replay(settings: IngestSettings, entry: str, force: bool = False) -> int:
    """Send an entry's events back to the transactions topic; returns how many were sent.

    An entry already replayed is not sent again unless `force` (the ingest would skip its events as
    duplicates anyway).
    """
    events, _ = load(settings.data_dir, entry)
    marker = folder(settings.data_dir) / f"{entry}.replayed"
    if marker.exists() and not force:
        log.info("%s was replayed at %s: nothing sent (force to send again)", entry, marker.read_text().strip())
        return 0
    producer = make_producer(settings.kafka_bootstrap_servers)
    try:
        futures = [producer.send(settings.ingest_topic, key=k, value=v) for k, v in transaction_messages(events)]
        producer.flush()
        for fut in futures:
            fut.get(timeout=60)
    finally:
        producer.close()
    marker.write_text(datetime.now(UTC).isoformat(timespec="seconds"))
    log.info("replayed %d events of %s to %s", len(events), entry, settings.ingest_topic)
    return len(events)
