"""Benchmark the feature store: backfill throughput for ~1M transactions, online read latency.

Usage: .venv/bin/python -m benchmarks.features [--users 46000 --days 30 --reads 3000]
Simulates a history (Parquet), backfills it into a fresh embedded store (SQLite online, Parquet
offline) and reads the FeatureService online, all its views in one call, for random entities, the
way the scorer does (the FeatureService object held, the response used as it comes).
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
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=3_000)
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
        "online_read_fields": sum(len(f) for f in S.FIELDS.values()),
        "online_reads": len(lat),
        "note": "backfill_rows_per_s = transactions / (feature computation + offline write); "
        "online reads: Feast SDK get_online_features(FeatureService) with 4 entity keys, SQLite, "
        "the features packed in their Feast fields (feature_repo/repo.py), "
        "the service fetched once (as the scorer holds it), the response not converted to a DataFrame",
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
    ):
        print(f"{key:40} {result[key]}")
    print(f"phases: {result['backfill_seconds']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
