"""`fraud simulate`: generate a history, check it with the raw-events GX suites, then write or stream it."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from fraud.settings import SimulatorSettings
from pipelines.simulator.config import SimConfig
from pipelines.simulator.generate import History, generate

log = logging.getLogger(__name__)
Target = Literal["kafka", "parquet"]
FILES = ("transactions", "labels", "accounts", "address_lists")


class DataQualityError(RuntimeError):
    """The simulator's output failed its Great Expectations suites."""


@dataclass
class SimulationReport:
    """What a run produced and how long each part took."""

    transactions: int
    fraud: int
    accounts: int
    seconds: dict[str, float] = field(default_factory=dict)
    validation: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    kafka_events_per_s: float | None = None
    by_type: dict[str, int] = field(default_factory=dict)


def config_from(settings: SimulatorSettings) -> SimConfig:
    """The simulation parameters in `settings`."""
    return SimConfig(
        seed=settings.sim_seed,
        users=settings.sim_users,
        days=settings.sim_days,
        start=datetime.combine(settings.sim_start, dtime(0, 0), tzinfo=UTC),
        fraud_rate=settings.sim_fraud_rate,
    )


def fraud_rate_bounds(rate: float, rows: int) -> tuple[float, float]:
    """The fraud share the labels suite accepts for a configured rate (no floor for tiny runs)."""
    low = 0.5 * rate if rows * rate >= 50 else 0.0
    return low, max(1.5 * rate, 0.001)


def validate_history(history: History, fraud_rate: float, docs_dir: Path | None = None) -> list[str]:
    """Run the raw-events suites; raise DataQualityError with a readable report when any fails."""
    from data_quality.runner import validate

    transactions = history.transactions.to_pandas()
    labels = history.labels.to_pandas().merge(
        transactions[["transaction_id", "event_time"]], on="transaction_id", how="left"
    )
    lo, hi = fraud_rate_bounds(fraud_rate, len(labels))
    summaries = [
        validate(transactions, "raw_transactions", docs_dir=docs_dir, docs_run="simulator", docs_batch="transactions"),
        validate(
            labels,
            "raw_labels",
            docs_dir=docs_dir,
            docs_run="simulator",
            docs_batch="labels",
            min_fraud_rate=lo,
            max_fraud_rate=hi,
        ),
    ]
    report = [s.report() for s in summaries]
    if not all(s.success for s in summaries):
        raise DataQualityError("simulated data failed its expectations:\n" + "\n".join(report))
    return report


def write_parquet(history: History, out_dir: Path) -> list[Path]:
    """Write the four canonical tables as `<name>.parquet` under `out_dir` (atomic per file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = out_dir / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(getattr(history, name), tmp, compression="zstd")
        tmp.replace(path)
        written.append(path)
    return written


def run(settings: SimulatorSettings, to: Target, progress: bool = False) -> SimulationReport:
    """Generate, validate, then write Parquet or stream to Kafka."""
    cfg = config_from(settings)
    seconds: dict[str, float] = {}
    # Importing GX takes seconds on a small machine: do it while the simulator works.
    warm_up = threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True)
    warm_up.start()
    t = time.perf_counter()
    history = generate(cfg)
    seconds["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    warm_up.join()
    docs = settings.data_dir / "data_docs" if settings.sim_data_docs else None
    validation = validate_history(history, cfg.fraud_rate, docs)
    seconds["validate"] = time.perf_counter() - t
    labels = history.labels.column("is_fraud").to_numpy(zero_copy_only=False)
    report = SimulationReport(
        transactions=history.transactions.num_rows,
        fraud=int(labels.sum()),
        accounts=history.accounts.num_rows,
        seconds=seconds,
        validation=validation,
        by_type=history.labels.column("fraud_type").to_pandas().fillna("legit").value_counts().to_dict(),
    )
    t = time.perf_counter()
    if to == "parquet":
        report.written = write_parquet(history, settings.out_dir)
        seconds["write"] = time.perf_counter() - t
    else:
        report.kafka_events_per_s = _to_kafka(settings, history, progress)
        seconds["kafka"] = time.perf_counter() - t
    return report


def _to_kafka(settings: SimulatorSettings, history: History, progress: bool) -> float:
    from tqdm import tqdm

    from fraud.kafka import ensure_topics, make_producer, wait_for_broker
    from pipelines.simulator.kafka_out import stream

    servers = settings.kafka_bootstrap_servers
    wait_for_broker(servers, settings.kafka_wait_seconds)
    ensure_topics(servers, [settings.sim_transactions_topic, settings.sim_labels_topic])
    producer = make_producer(servers, linger_ms=50, batch_size=512 * 1024)
    total = history.transactions.num_rows + history.labels.num_rows
    bar = tqdm(total=total, unit="msg", disable=not progress, desc="kafka")
    try:
        stats = stream(
            history,
            producer,
            settings.sim_transactions_topic,
            settings.sim_labels_topic,
            rate=settings.sim_rate,
            realtime=settings.sim_realtime,
            on_progress=bar.update,
        )
    finally:
        bar.close()
        producer.close()
    return stats.events_per_s
