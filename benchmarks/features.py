"""Benchmark the feature store: backfill throughput for ~1M transactions, online read latency, and the
streaming state's cost per micro-batch and memory.

Usage: .venv/bin/python -m benchmarks.features [--users 46000 --days 32 --reads 3000 --batches 30]
Simulates a history (Parquet), backfills it into a fresh embedded store (SQLite online, Parquet
offline) and reads the FeatureService online, all its views in one call, for random entities, the
way the scorer does (the FeatureService object held, the response used as it comes).

The state (`fraud.feature_state`): built from the last 1, 7 and 30 days before the history's final
day, then fed that day's events 500 at a time; `state_batch_ms_retained_<d>` is the median time of
one update (the new rows of the entities the batch touches, and their online frames, as the ingest
service computes them). `state_mb_per_million_events` is the memory the 30-day state holds
(tracemalloc: Python objects and numpy arrays) per million events it retains.
Writes benchmarks/results/features.json and prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=46_000)
    parser.add_argument("--days", type=int, default=32)
    parser.add_argument("--reads", type=int, default=3_000)
    parser.add_argument("--batches", type=int, default=30, help="500-event batches timed per retention")
    args = parser.parse_args()

    from fraud import history
    from fraud import store as S
    from fraud.settings import BackfillSettings, SimulatorSettings
    from pipelines.backfill import backfill
    from pipelines.simulate import run as simulate

    with tempfile.TemporaryDirectory() as tmp:
        sim = SimulatorSettings(data_dir=Path(tmp) / "sim", sim_users=args.users, sim_days=args.days, sim_seed=3)
        simulate(sim, "parquet")
        out = Path(tmp) / "sim" / "simulated"
        settings = BackfillSettings(data_dir=Path(tmp) / "data")
        started = time.perf_counter()
        report = backfill(
            settings,
            out / "transactions.parquet",
            out / "labels.parquet",
            out / "accounts.parquet",
            out / "address_lists.parquet",
        )
        total = time.perf_counter() - started
        n = report.transactions_in
        online_rows = sum(report.online_rows.values())

        store = S.open_store(settings)
        txns = history.read(settings.data_dir, "transactions")
        rng = np.random.default_rng(0)
        picks = txns.iloc[rng.integers(0, len(txns), args.reads)]
        rows: list[dict[str, Any]] = [
            {
                "user_id": r.user_id,
                "device_id": r.device_id,
                "ip_address": r.ip_address,
                "destination_address": r.destination_address or "none",
            }
            for r in picks.itertuples()
        ]
        service = store.get_feature_service(S.SERVICE_NAME)  # fetched once, as the scorer does
        for row in rows[:50]:  # warm-up
            store.get_online_features(features=service, entity_rows=[row])
        latencies = []
        for row in rows:
            t0 = time.perf_counter()
            store.get_online_features(features=service, entity_rows=[row])
            latencies.append((time.perf_counter() - t0) * 1000)
        n_features = sum(len(f) for _, f in S.ALL_VIEWS.values())
        labels = history.read(settings.data_dir, "labels")
        state = state_costs(txns, labels, args.batches)

    lat = np.array(latencies)
    result = {
        "transactions": n,
        "backfill_rows_per_s": round(report.rows_per_s),
        "backfill_seconds": {k: round(v, 2) for k, v in report.seconds.items()} | {"total": round(total, 2)},
        "backfill_end_to_end_rows_per_s": round(n / total),
        "online_entities_materialized": online_rows,
        "online_materialize_rows_per_s": round(online_rows / report.seconds["online"]),
        "online_read_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "online_read_p99_ms": round(float(np.percentile(lat, 99)), 3),
        "online_read_mean_ms": round(float(lat.mean()), 3),
        "online_read_views": len(S.ALL_VIEWS),
        "online_read_features": n_features,
        "online_reads": len(lat),
        **state,
        "note": "backfill_rows_per_s = transactions / (state build + history and reference writes); "
        "online reads: Feast SDK get_online_features(FeatureService) with 4 entity keys, SQLite, "
        "each entity's state (recent events, carry, label times) in array fields (feature_repo/repo.py), "
        "the service fetched once (as the scorer holds it), the response not converted to a DataFrame; "
        "state_batch_ms_retained_<d>: median ms of FeatureState.update of 500 events plus their online "
        "frames, with d days retained; state_mb_per_million_events: tracemalloc of the 30-day state",
    }
    path = write_results("features", result)
    print(f"{'metric':40} value")
    for key in (
        "transactions",
        "backfill_rows_per_s",
        "backfill_end_to_end_rows_per_s",
        "online_materialize_rows_per_s",
        "online_read_p50_ms",
        "online_read_p99_ms",
        "state_batch_ms_retained_1d",
        "state_batch_ms_retained_7d",
        "state_batch_ms_retained_30d",
        "state_mb_per_million_events",
    ):
        print(f"{key:40} {result[key]}")
    print(f"phases: {result['backfill_seconds']}")
    print(f"wrote {path}")


def state_costs(txns: Any, labels: Any, batches: int, size: int = 500) -> dict[str, float]:
    """Per-batch update time of the streaming state with 1, 7 and 30 days retained, and its memory."""
    import gc
    import tracemalloc

    import pandas as pd

    from fraud.feature_state import KINDS, FeatureState, rows_frame

    times = pd.to_datetime(txns["event_time"], utc=True)
    cut = times.max() - pd.Timedelta(days=1)
    stream = txns[times > cut].sort_values(["event_time", "transaction_id"]).reset_index(drop=True)
    out: dict[str, float] = {}
    for days in (1, 7, 30):
        held = txns[(times <= cut) & (times > cut - pd.Timedelta(days=days))]
        gc.collect()
        if days == 30:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        state = FeatureState.from_history(held, labels[pd.to_datetime(labels["label_time"], utc=True) <= cut])
        if days == 30:
            size_mb = (tracemalloc.get_traced_memory()[0] - before) / 1e6
            tracemalloc.stop()
            out["state_mb_per_million_events"] = round(size_mb / (len(held) / 1e6), 1)
            out["state_events_retained_30d"] = len(held)
        spent = []
        for i in range(batches):
            batch = stream.iloc[i * size : (i + 1) * size]
            started = time.perf_counter()
            change = state.update(batch)
            for kind in KINDS:
                rows_frame(kind, change.rows.get(kind, {}))
            spent.append((time.perf_counter() - started) * 1000)
        out[f"state_batch_ms_retained_{days}d"] = round(float(np.median(spent)), 2)
        out[f"state_entities_retained_{days}d"] = sum(len(r) for r in state.rows.values())
    ratio = out["state_batch_ms_retained_30d"] / out["state_batch_ms_retained_1d"]
    out["state_batch_ratio_30d_to_1d"] = round(ratio, 2)
    return out


if __name__ == "__main__":
    main()
