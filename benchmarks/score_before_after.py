"""The scorer's latency before and after a change, side by side on this machine.

Usage: .venv/bin/python -m benchmarks.score_before_after --before COMMIT [--rounds 2]
Checks COMMIT out in a git worktree (data/bench-before/src), puts this checkout's load driver
(`benchmarks/score.py`, `benchmarks/common.py`) in it so both sides are measured the same way, then
runs `benchmarks.score` there and here in alternation, `--rounds` times each (the scorer only:
no `mlflow models serve`, no explain-all run), each side with its own setup (simulated history,
backfill, 400-tree model). Alternating spreads this VM's slow spells over both sides. Needs the
local broker (audit topic).
Writes benchmarks/results/score_before_after.json: every run's p50/p99 at 200 req/s (the median of
its windows), /healthz at the same rate, the highest rate with p99 < 50 ms, and after/before ratios
of the medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git") or "/usr/bin/git"


def _run(src: Path, data_dir: Path, name: str, latency_runs: int) -> dict[str, Any]:
    """One `benchmarks.score` run in `src`, its results written to (and read back from) `<name>.json`."""
    cmd = [sys.executable, "-m", "benchmarks.score", "--skip-mlflow", "--skip-explain-all"]
    cmd += ["--data-dir", str(data_dir), "--latency-runs", str(latency_runs), "--results-name", name]
    subprocess.run(cmd, cwd=src, check=True, timeout=3600)
    written = src / "benchmarks" / "results" / f"{name}.json"
    out = json.loads(written.read_text())
    written.unlink()
    return {
        "p50_ms_at_200rps": out["p50_ms_at_200rps"],
        "p99_ms_at_200rps": out["p99_ms_at_200rps"],
        "healthz_p99_ms_at_200rps": out["healthz_at_200rps"]["p99_ms"],
        "max_rps": out["max_rps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=3)
    args = parser.parse_args()
    work = ROOT / "data" / "bench-before"
    src = work / "src"
    if src.exists():
        subprocess.run([GIT, "worktree", "remove", "--force", str(src)], cwd=ROOT, check=False)
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([GIT, "worktree", "add", "--detach", str(src), args.before], cwd=ROOT, check=True)
    for driver in ("score.py", "common.py"):  # the same load driver (ramp, windows) on both sides
        shutil.copy2(ROOT / "benchmarks" / driver, src / "benchmarks" / driver)
    commit = subprocess.run([GIT, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        for i in range(args.rounds):
            print(f"round {i + 1}: before ({args.before})", flush=True)
            runs["before"].append(_run(src, work / "data-before", "score_before_run", args.latency_runs))
            print(f"round {i + 1}: after ({commit[:7]})", flush=True)
            runs["after"].append(_run(ROOT, work / "data-after", "score_after_run", args.latency_runs))
    finally:
        subprocess.run([GIT, "worktree", "remove", "--force", str(src)], cwd=ROOT, check=False)

    def median(side: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[side]))

    keys = ("p50_ms_at_200rps", "p99_ms_at_200rps", "healthz_p99_ms_at_200rps", "max_rps")
    result: dict[str, Any] = {"before_commit": args.before, "after_commit": commit, "rounds": args.rounds, "runs": runs}
    for key in keys:
        result[f"before_{key}"] = median("before", key)
        result[f"after_{key}"] = median("after", key)
    result["p99_at_200rps_after_over_before"] = round(
        median("after", "p99_ms_at_200rps") / median("before", "p99_ms_at_200rps"), 3
    )
    result["max_rps_after_over_before"] = round(median("after", "max_rps") / median("before", "max_rps"), 3)
    path = write_results("score_before_after", result)
    print(f"{'':<28}{'before':>10}{'after':>10}")
    for key in keys:
        print(f"{key:<28}{result[f'before_{key}']:>10}{result[f'after_{key}']:>10}")
    print(
        f"p99 ratio {result['p99_at_200rps_after_over_before']}, max rate ratio {result['max_rps_after_over_before']}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
