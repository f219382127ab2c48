"""Benchmark the ingest service: sustained Kafka -> Feast throughput, the Feast write floor, freshness.

Usage: .venv/bin/python -m benchmarks.ingest [--users 3000 --days 20 --live-rate 1000 --live-seconds 20]
Needs the local broker (infra/kafka/broker.sh start). Three measurements in one run:
1. sustained: a backlog of simulated events on a fresh topic, consumed by the real ingest service
   (validation, GX batch check, features, atomic offline write, online push, offset commits);
2. floor: Feast's own `write_to_online_store` for the same feature rows in large batches (what no
   ingest can beat: the store write itself);
3. freshness: events stamped "now" produced at a fixed rate, event time to online write, p50/p99
   in the steady state (the first --warmup-seconds of traffic are processed, not measured); beside
   them, fraud labels (one per --label-every events, sent --label-delay-seconds after their event,
   stamped "now") through `fraud ingest-labels` into the label history, and label time to the online
   write of the risk features they change (`label_freshness_p50_s`/`_p99_s`).
Writes benchmarks/results/ingest.json and prints a table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import write_results

BOOTSTRAP = "127.0.0.1:9092"


def _payloads(events: pd.DataFrame) -> list[tuple[bytes, dict[str, Any]]]:
    from fraud.contracts import Transaction

    out = []
    for row in events.to_dict("records"):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        txn = Transaction.model_validate(row)
        out.append((txn.user_id.encode(), txn.model_dump(mode="json")))
    return out


def _settings(data_dir: Path, topic: str, **kw: Any) -> Any:
    from fraud.settings import IngestSettings

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "ingest_topic": topic,
        "ingest_dlq_topic": f"{topic}.dlq",
        "ingest_group_id": f"bench-{topic}",
        "ingest_batch_max_events": 5000,
        "ingest_batch_max_seconds": 1.0,
        "ingest_idle_exit_seconds": 3.0,
    }
    values.update(kw)
    return IngestSettings(**values)


def _consume(ingestor: Any, done: Callable[[], bool], give_up_s: float = 30.0) -> list[Any]:
    """The loop of `Ingestor.run` until `done()` (or `give_up_s` without a batch), keeping each batch's
    result; at the end every event is written online and offline and its offsets are committed."""
    results = []
    last_batch = time.monotonic()
    while True:
        records = ingestor.poll_batch()
        ingestor.refresh_labels()  # as `Ingestor.run` does: labels go online events or not
        if not records and not ingestor.pending:
            ingestor.commit(flush=True)
            if done() or time.monotonic() - last_batch > give_up_s:
                break
            continue
        results.append(ingestor.process(records))
        ingestor.commit()
        last_batch = time.monotonic()
    ingestor.commit(flush=True)
    return results


def sustained(events: pd.DataFrame, tmp: Path) -> dict[str, Any]:
    """Backlog throughput of the real service, startup excluded."""
    import json

    from fraud.kafka import ensure_topics, make_producer
    from services.ingest import build

    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    ensure_topics(BOOTSTRAP, [topic], partitions=3)
    producer = make_producer(BOOTSTRAP)
    for key, value in _payloads(events):
        producer.send(topic, key=key, value=json.dumps(value).encode())
    producer.flush()
    producer.close()
    ingestor = build(_settings(tmp / "sustained", topic))
    started = time.perf_counter()
    _consume(ingestor, lambda: ingestor.totals["processed"] >= len(events))
    seconds = time.perf_counter() - started
    processed = ingestor.totals["processed"]
    ingestor.close()
    return {"events": processed, "seconds": seconds, "events_per_s": processed / seconds}


def floor(events: pd.DataFrame, tmp: Path) -> dict[str, Any]:
    """Feast write_to_online_store of every view's rows after these events, 10k rows a call."""
    from fraud import store as S
    from fraud.settings import FeatureStoreSettings
    from pipelines.backfill import online_view_rows

    settings = FeatureStoreSettings(data_dir=tmp / "floor")
    store = S.apply(settings)
    rows = online_view_rows(events, None)
    seconds = 0.0
    written = 0
    for view in ("user_activity", "address_activity", "device_activity", "ip_activity"):
        frame = S.to_feast_frame(view, rows[view])  # each entity's state in its array fields, as ingest writes
        for start in range(0, len(frame), 10_000):
            chunk = frame.iloc[start : start + 10_000]
            t0 = time.perf_counter()
            store.write_to_online_store(view, chunk)
            seconds += time.perf_counter() - t0
            written += len(chunk)
    return {"rows": written, "seconds": seconds, "events_per_s": len(events) / seconds}


def _produce_live(
    topic: str,
    payloads: list[tuple[bytes, dict[str, Any]]],
    rate: float,
    duration: float,
    sent: Any,
    replay: tuple[int, int, int] | None = None,
) -> None:
    """Send events on schedule at `rate` for `duration` seconds, stamped with the wall clock.

    `replay` = (first event time, microseconds between events, index of the first event): a replayed
    stream instead, event i dated first + (index + i) * step, its id `replay-<index + i>`. (n events
    as fast as the producer goes: rate n, duration 1.)"""
    import json

    from fraud.kafka import make_producer

    producer = make_producer(BOOTSTRAP, linger_ms=5)
    t0 = time.perf_counter()
    for i in range(int(rate * duration)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key, value = payloads[i % len(payloads)]
        if replay is None:
            value = value | {"transaction_id": f"live-{i}", "event_time": datetime.now(UTC).isoformat()}
        else:
            first, step, index = replay
            at = datetime.fromtimestamp((first + (index + i) * step) / 1e6, UTC)
            value = value | {"transaction_id": f"replay-{index + i}", "event_time": at.isoformat()}
        producer.send(topic, key=key, value=json.dumps(value).encode())
        sent.value += 1
    producer.flush()
    producer.close()


def _produce_labels(topic: str, rate: float, duration: float, every: int, delay: float) -> None:
    """A fraud label for every `every`-th live event, `delay` seconds after it, stamped with the wall clock."""
    from fraud.contracts import FraudLabel
    from fraud.kafka import make_producer

    producer = make_producer(BOOTSTRAP, linger_ms=5)
    t0 = time.perf_counter()
    for i in range(0, int(rate * duration), every):
        wait = t0 + i / rate + delay - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        label = FraudLabel(
            transaction_id=f"live-{i}", is_fraud=True, fraud_type="account_takeover", label_time=datetime.now(UTC)
        )
        producer.send(topic, key=label.transaction_id.encode(), value=label.model_dump_json().encode())
    producer.flush()
    producer.close()


def _run_labels(settings: Any) -> None:
    """`fraud ingest-labels` in its own process, until idle."""
    from services.ingest_labels import build

    service = build(settings)
    try:
        service.run()
    finally:
        service.close()


def freshness(
    events: pd.DataFrame, tmp: Path, rate: float, duration: float, warmup: float, every: int, delay: float
) -> dict[str, Any]:
    """Events stamped with the wall clock at send, at a fixed rate; event time to online write.

    The first `warmup` seconds of traffic are sent and processed but not measured: they pay one-off
    costs (the first offsets request opens its connection, the first state update and batch check
    warm up), so the figures are those of the steady state. The p99 over every event is kept too.
    """

    from fraud.kafka import ensure_topics
    from services.ingest import build

    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    labels_topic = f"{topic}-labels"
    ensure_topics(BOOTSTRAP, [topic, labels_topic], partitions=3)
    settings = _settings(
        tmp / "fresh",
        topic,
        ingest_batch_max_seconds=0.2,
        ingest_batch_max_events=2000,
        ingest_labels_topic=labels_topic,
        ingest_labels_group_id=f"bench-{labels_topic}",
        ingest_idle_exit_seconds=warmup + duration + 10,
    )
    ingestor = build(settings)
    while not ingestor.consumer.assignment():  # join the group first: freshness in steady state, not start-up
        ingestor.consumer.poll(timeout_ms=100)
    payloads = _payloads(events)
    # The producer is another service: its own process, so it does not share the ingest's interpreter lock.
    ctx = mp.get_context("spawn")
    sent = ctx.Value("q", 0)
    producer = ctx.Process(target=_produce_live, args=(topic, payloads, rate, warmup + duration, sent), daemon=True)
    labeller = ctx.Process(target=_produce_labels, args=(labels_topic, rate, warmup + duration, every, delay))
    label_ingest = ctx.Process(
        target=_run_labels, args=(settings.model_copy(update={"ingest_idle_exit_seconds": 5.0}),)
    )
    for process in (producer, labeller, label_ingest):
        process.start()
    expected_labels = len(range(0, int(rate * (warmup + duration)), every))

    def done() -> bool:
        caught_up = not producer.is_alive() and ingestor.totals["processed"] >= sent.value
        return (
            caught_up
            and not labeller.is_alive()
            and (len(ingestor.label_lags) >= expected_labels or not label_ingest.is_alive())
        )

    results = _consume(ingestor, done)
    for process in (producer, labeller, label_ingest):
        process.join(timeout=60)
    ingestor.close()
    label_lags = np.array(ingestor.label_lags)
    label_steady = label_lags[int(len(label_lags) * warmup / (warmup + duration)) :]
    lags = [lag for r in results for lag in r.freshness_s]
    event_times = [r.written_at - lag for r in results if r.written_at is not None for lag in r.freshness_s]
    arr = np.array(lags)
    steady = arr[np.array(event_times) >= min(event_times) + warmup]
    return {
        "rate": rate,
        "events": int(steady.size),
        "achieved_rate": sent.value / (warmup + duration),
        "p50_s": float(np.percentile(steady, 50)),
        "p99_s": float(np.percentile(steady, 99)),
        "p99_all_s": float(np.percentile(arr, 99)),
        "max_s": float(steady.max()),
        "labels": int(label_steady.size),
        "labels_sent": expected_labels,
        "label_p50_s": float(np.percentile(label_steady, 50)),
        "label_p99_s": float(np.percentile(label_steady, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--live-rate", type=float, default=1000.0)
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="live traffic sent before measuring")
    parser.add_argument("--label-every", type=int, default=20, help="a fraud label for one live event in N")
    parser.add_argument("--label-delay-seconds", type=float, default=2.0, help="label sent this long after its event")
    args = parser.parse_args()

    from fraud.settings import SimulatorSettings
    from pipelines.simulate import run as simulate

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim = SimulatorSettings(data_dir=tmp / "sim", sim_users=args.users, sim_days=args.days, sim_seed=5)
        simulate(sim, "parquet")
        events = pd.read_parquet(tmp / "sim" / "simulated" / "transactions.parquet")
        print(f"{len(events)} simulated events")
        sus = sustained(events, tmp)
        flo = floor(events, tmp)
        fresh = freshness(
            events,
            tmp,
            args.live_rate,
            args.live_seconds,
            args.warmup_seconds,
            args.label_every,
            args.label_delay_seconds,
        )
    result = {
        "events": sus["events"],
        "events_per_s": round(sus["events_per_s"]),
        "feast_write_floor_events_per_s": round(flo["events_per_s"]),
        "ratio_to_floor": round(sus["events_per_s"] / flo["events_per_s"], 2),
        "feast_floor_rows": flo["rows"],
        "freshness_rate_per_s": fresh["rate"],
        "freshness_achieved_rate_per_s": round(fresh["achieved_rate"]),
        "freshness_p50_s": round(fresh["p50_s"], 3),
        "freshness_p99_s": round(fresh["p99_s"], 3),
        "freshness_max_s": round(fresh["max_s"], 3),
        "freshness_events_measured": fresh["events"],
        "freshness_warmup_s": args.warmup_seconds,
        "freshness_p99_including_warmup_s": round(fresh["p99_all_s"], 3),
        "label_freshness_p50_s": round(fresh["label_p50_s"], 3),
        "label_freshness_p99_s": round(fresh["label_p99_s"], 3),
        "label_freshness_labels_measured": fresh["labels"],
        "label_freshness_labels_sent": fresh["labels_sent"],
        "store": "embedded: SQLite online (WAL), Parquet offline",
    }
    path = write_results("ingest", result)
    print(f"{'metric':36} value")
    for key, value in result.items():
        print(f"{key:36} {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
