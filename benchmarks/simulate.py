"""Benchmark `fraud simulate`: 1M transactions to Parquet, and Kafka throughput through kafka-python.

Usage: .venv/bin/python -m benchmarks.simulate [--users 46000 --days 30 --kafka-users 10000]
Writes benchmarks/results/simulate.json and prints a table. Needs the local broker for the Kafka part.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import machine

RESULTS = Path(__file__).parent / "results" / "simulate.json"


def bench_parquet(users: int, days: int) -> dict[str, Any]:
    """Generate, validate and write about a million transactions through the command's own code path."""
    from fraud.settings import SimulatorSettings
    from pipelines.simulate import run

    with tempfile.TemporaryDirectory() as tmp:
        settings = SimulatorSettings(data_dir=Path(tmp), sim_users=users, sim_days=days, sim_seed=1)
        started = time.perf_counter()
        report = run(settings, "parquet")
        total = time.perf_counter() - started
    n = report.transactions
    per_million = 1_000_000 / n
    s = report.seconds
    return {
        "transactions": n,
        "parquet_seconds_1m": round((s["generate"] + s["write"]) * per_million, 2),
        "validate_seconds_1m": round(s["validate"] * per_million, 2),
        "end_to_end_seconds_1m": round(total * per_million, 2),
        "seconds": {k: round(v, 2) for k, v in s.items()},
    }


def bench_kafka(users: int, days: int, servers: str) -> dict[str, Any]:
    """Stream a history (transactions and labels) into fresh topics as fast as possible."""
    from kafka import KafkaAdminClient

    from fraud.kafka import ensure_topics, make_producer, wait_for_broker
    from pipelines.simulator.config import SimConfig
    from pipelines.simulator.generate import generate
    from pipelines.simulator.kafka_out import stream

    wait_for_broker(servers, 30)
    history = generate(SimConfig(seed=2, users=users, days=days))
    suffix = uuid.uuid4().hex[:8]
    topics = [f"bench-transactions-{suffix}", f"bench-labels-{suffix}"]
    ensure_topics(servers, topics, partitions=3)
    producer = make_producer(servers, linger_ms=50, batch_size=512 * 1024)
    try:
        stats = stream(history, producer, topics[0], topics[1])
    finally:
        producer.close()
        admin = KafkaAdminClient(bootstrap_servers=servers)
        try:
            admin.delete_topics(topics)
        finally:
            admin.close()
    return {
        "kafka_events_per_s": round(stats.events_per_s),
        "kafka_messages": stats.transactions + stats.labels,
        "kafka_seconds": round(stats.seconds, 2),
        "kafka_producer": "kafka-python, acks=all, idempotent, lz4, linger 50 ms, batch 512 KiB, 3 partitions",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=46_000, help="about 1M transactions over 30 days")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--kafka-users", type=int, default=10_000)
    parser.add_argument("--kafka-days", type=int, default=30)
    parser.add_argument("--bootstrap", default=os.environ.get("FRAUD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--skip-kafka", action="store_true")
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "simulate", "run_at": datetime.now(UTC).isoformat(timespec="seconds")}
    result.update(bench_parquet(args.users, args.days))
    if not args.skip_kafka:
        result.update(bench_kafka(args.kafka_users, args.kafka_days, args.bootstrap))
    result["machine"] = machine()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title="fraud simulate")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("transactions generated", f"{result['transactions']:,}", "")
    table.add_row("generate + write Parquet, per 1M (s)", f"{result['parquet_seconds_1m']:.1f}", "<= 30")
    table.add_row("GX validation, per 1M (s)", f"{result['validate_seconds_1m']:.1f}", "")
    table.add_row("whole command, per 1M (s)", f"{result['end_to_end_seconds_1m']:.1f}", "")
    if "kafka_events_per_s" in result:
        table.add_row("Kafka messages/s", f"{result['kafka_events_per_s']:,}", ">= 20,000")
    m = result["machine"]
    table.caption = f"{m['cpu_count']} x {m['cpu_model']}, {m['ram_gb']} GB RAM, Python {m['python']}"
    Console().print(table)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
