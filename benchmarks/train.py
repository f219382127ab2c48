"""Benchmark `fraud train`: about 1,000,000 labelled transactions from features to a registered model.

Simulates a history of ~1M transactions, backfills it (features into the offline and online stores;
not part of the timed figure), creates an empty MLflow tracking store (untimed, as a running server
would be), then times `fraud train` end to end as a user runs it (a fresh
process: point-in-time retrieval, data-quality suite, LightGBM, baselines, evaluation, MLflow logging
and registration). `seconds_1m` is that wall time scaled to exactly one million labelled transactions.

Usage: .venv/bin/python -m benchmarks.train [--users 23400 --days 60 --workdir /tmp/bench-train] [--reuse]
Writes benchmarks/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "train.json"
ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """The shared machine description (benchmarks.common)."""
    from benchmarks.common import machine as common_machine

    return common_machine()


def prepare(workdir: Path, users: int, days: int, seed: int) -> dict[str, float]:
    """Simulate and backfill the history (timed separately, not part of `seconds_1m`)."""
    from fraud.settings import BackfillSettings, SimulatorSettings
    from pipelines.backfill import backfill
    from pipelines.simulate import run

    sim = workdir / "sim"
    started = time.perf_counter()
    run(SimulatorSettings(data_dir=workdir, sim_users=users, sim_days=days, sim_seed=seed, sim_out=sim), "parquet")
    simulated = time.perf_counter() - started
    started = time.perf_counter()
    backfill(
        BackfillSettings(data_dir=workdir / "data"),
        sim / "transactions.parquet",
        sim / "labels.parquet",
        sim / "accounts.parquet",
        sim / "address_lists.parquet",
        show_progress=True,
    )
    return {"simulate": round(simulated, 1), "backfill": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=23_400, help="simulated customers (~43 transactions each)")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("data/bench-train"))
    parser.add_argument("--reuse", action="store_true", help="reuse a backfilled workdir from a previous run")
    args = parser.parse_args()

    data = args.workdir / "data"
    prep: dict[str, float] = {}
    if not (args.reuse and (data / "history").exists()):
        shutil.rmtree(args.workdir, ignore_errors=True)
        args.workdir.mkdir(parents=True)
        prep = prepare(args.workdir, args.users, args.days, args.seed)
    shutil.rmtree(data / "mlflow", ignore_errors=True)  # a fresh registry: the version is new
    from mlflow import MlflowClient

    from fraud.settings import TrainSettings

    # the tracking store exists before training (as the compose server does): create its tables untimed
    MlflowClient(TrainSettings(data_dir=data).tracking_uri).search_experiments()

    from fraud import history

    labelled = len(history.read(data, "labels"))
    report_path = args.workdir / "train_report.json"
    env = os.environ | {"FRAUD_DATA_DIR": str(data), "FRAUD_LOG_LEVEL": "WARNING"}
    env.pop("FRAUD_MLFLOW_TRACKING_URI", None)
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "fraud"),
            "train",
            "--report",
            str(report_path),
            "--model-card",
            str(args.workdir / "MODEL_CARD.md"),
        ],
        check=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    report = json.loads(report_path.read_text())
    phases = report["seconds"]
    phases["startup_and_imports"] = round(wall - sum(phases.values()), 2)
    metrics = {
        name: {
            k: m[k]
            for k in (
                "average_precision",
                "roc_auc",
                "recall_at_1pct_fpr",
                "precision_top100_per_day",
                "frauds",
                "rows",
            )
        }
        | {"cost_per_1k_txns": m["cost"]["per_1k_txns"], "recall_by_fraud_type": m["recall_by_fraud_type"]}
        for name, m in report["test_metrics"].items()
    }
    result = {
        "benchmark": "train",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "labelled_transactions": labelled,
        "rows": report["rows"],
        "seconds_end_to_end": round(wall, 1),
        "seconds_1m": round(wall * 1_000_000 / labelled, 1),
        "phases_seconds": phases,
        "preparation_seconds": prep,
        "registered_version": report["version"],
        "promoted": report["promoted"],
        "best_iteration": report["best_iteration"],
        "test_metrics": metrics,
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "machine": machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nfraud train: {labelled:,} labelled transactions -> registered v{report['version']}")
    print(f"  end to end {wall:.1f}s  (per 1M: {result['seconds_1m']:.1f}s; budget 180s)")
    for name, seconds in phases.items():
        print(f"  {name:<22}{seconds:>8.1f}s")
    print(f"\n  {'scorer':<10}{'AP':>8}{'ROC-AUC':>9}{'R@1%FPR':>9}")
    for name, m in metrics.items():
        print(f"  {name:<10}{m['average_precision']:>8.4f}{m['roc_auc']:>9.4f}{m['recall_at_1pct_fpr']:>9.3f}")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
