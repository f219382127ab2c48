"""Soak: the scorer at twice its 200 req/s target and the ingest at 2,000 events/s, for minutes, bounded.

Usage: .venv/bin/python -m benchmarks.soak [--seconds 300 --scorer-rate 400 --ingest-rate 2000]

Scorer: `fraud serve` (2 workers) on the score benchmark's store and champion (`benchmarks.score.setup`,
reused from data/bench-score when present), 10 s of warm-up, then open-loop load at `--scorer-rate`
in 30 s windows for `--seconds`: every request counted, errors are anything but a 200, p99 per window
and overall (the median of the windows' p99s beside the worst), resident memory of the server's
process tree after the warm-up, after each window and at the end.

Ingest, in two runs of `--seconds` at `--ingest-rate`, each on the real ingest service:
- live: events stamped with the wall clock, from an empty state. At the end every event sent must be
  accounted for (processed + dead-lettered + quarantined + duplicates); freshness (event time to
  online write) and the time to catch up after the producer stops. Its memory grows with the events
  the state retains (31 days of event time, none of which expires in five minutes): `ingest_fill_*`.
- steady: the same traffic replayed on an event clock of `--replay-per-day` events a day, after a
  warm-up of the state's whole retention (33 days of events, sent first and consumed as a backlog).
  Old events leave the retention as fast as new ones come, so the state is at its steady size: the
  resident memory of the ingest (its process tree, producers excluded) after the warm-up, after each
  30 s and at the end is what `ingest_rss_growth_pct` compares. Every event is accounted for too.
Writes benchmarks/results/soak.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from benchmarks import score as S
from benchmarks.common import write_results
from benchmarks.ingest import BOOTSTRAP, _consume, _payloads, _produce_live, _settings

WINDOW_S = 30.0


def rss_mb(pid: int, exclude: frozenset[int] = frozenset()) -> float:
    """Resident memory of a process and all its children (but those in `exclude`), in MB."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that exited meanwhile
            if child.pid not in exclude:
                total += child.memory_info().rss
    return total / 2**20


class RssSampler:
    """Resident memory of a process tree, sampled once a second on a thread: (after `settle_s`, last)."""

    def __init__(self, pid: int, settle_s: float = 10.0, exclude: frozenset[int] = frozenset()) -> None:
        self.pid, self.settle_s, self.exclude = pid, settle_s, exclude
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        while not self.stopping.wait(1.0):
            self.samples.append((time.monotonic() - started, rss_mb(self.pid, self.exclude)))

    def stop(self) -> tuple[float, float]:
        self.stopping.set()
        self.thread.join(timeout=5)
        settled = [mb for t, mb in self.samples if t >= self.settle_s] or [rss_mb(self.pid, self.exclude)]
        return settled[0], settled[-1]

    def every(self, seconds: float) -> list[float]:
        """The samples at each multiple of `seconds` (MB, rounded)."""
        out, mark = [], seconds
        for t, mb in self.samples:
            if t >= mark:
                out.append(round(mb, 1))
                mark += seconds
        return out


def growth_pct(start: float, end: float) -> float:
    return round(100.0 * (end - start) / start, 1)


def soak_scorer(data_dir: Path, rate: float, seconds: float, workers: int) -> dict[str, Any]:
    info = S.setup(data_dir, 3000, 21, 400)
    env = os.environ | {
        "FRAUD_DATA_DIR": str(data_dir),
        "FRAUD_MLFLOW_TRACKING_URI": info["tracking_uri"],
        "FRAUD_SCORER_API_KEYS": S.API_KEY,
        "FRAUD_SCORER_AUDIT_TOPIC": f"soak-scores-{os.getpid()}",
        "FRAUD_SCORER_POLL_SECONDS": "3600",
        "FRAUD_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    S._create_topic(env)
    payloads = S._scorer_payloads(data_dir)
    port = S._free_port()
    cmd = [sys.executable, "-m", "fraud.cli", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    windows: list[dict[str, Any]] = []
    rss_windows: list[float] = []  # after each window: a slow leak climbs, a warming cache levels off
    try:
        S._wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        S.load(port, payloads, 200, S.WARM_UP_SECONDS)
        rss_start = rss_mb(proc.pid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline - 1:
            span = min(WINDOW_S, deadline - time.monotonic())
            step = S.load(port, payloads, rate, span)
            windows.append(step)
            rss_windows.append(round(rss_mb(proc.pid), 1))
            summary = f"p99 {step['p99_ms']} ms, errors {step['errors']}, RSS {rss_windows[-1]} MB"
            print(f"  scorer {rate:.0f} req/s: {summary}", flush=True)
        rss_end = rss_mb(proc.pid)
    finally:
        S._stop(proc)
    p99s = [w["p99_ms"] for w in windows if w["p99_ms"] is not None]
    return {
        "scorer_rate": rate,
        "scorer_seconds": seconds,
        "scorer_requests": int(sum(w["sent"] for w in windows)),
        "scorer_errors": int(sum(w["errors"] for w in windows)),
        "scorer_p99_ms": round(float(np.median(p99s)), 2) if p99s else None,
        "scorer_p99_worst_window_ms": max(p99s) if p99s else None,
        "scorer_p99_windows_ms": p99s,
        "scorer_rss_start_mb": round(rss_start, 1),
        "scorer_rss_end_mb": round(rss_end, 1),
        "scorer_rss_growth_pct": growth_pct(rss_start, rss_end),
        "scorer_rss_windows_mb": rss_windows,
    }


def _retained(ingestor: Any) -> int:
    """Events the ingest's streaming state holds, over every kind's rows."""
    return int(sum(len(row.events) for rows in ingestor.state.rows.values() for row in rows.values()))


def _accounted(ingestor: Any) -> int:
    return int(sum(ingestor.totals[k] for k in OUTCOMES))


def _joined_ingestor(folder: Path, name: str) -> tuple[str, Any, Any]:
    """A fresh topic (and its DLQ), and the real ingest service on it, in its consumer group already."""
    from fraud.kafka import ensure_topics
    from services.ingest import build

    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    ensure_topics(BOOTSTRAP, [topic, f"{topic}.dlq"], partitions=3)
    settings = _settings(folder, topic, ingest_batch_max_seconds=0.2, ingest_batch_max_events=5000)
    ingestor = build(settings)
    while not ingestor.consumer.assignment():
        ingestor.consumer.poll(timeout_ms=100)
    return topic, settings, ingestor


def soak_ingest(tmp: Path, events: pd.DataFrame, rate: float, seconds: float) -> dict[str, Any]:
    from fraud import history

    topic, settings, ingestor = _joined_ingestor(tmp / "ingest", "soak-ingest")
    ctx = mp.get_context("spawn")
    sent = ctx.Value("q", 0)
    producer = ctx.Process(target=_produce_live, args=(topic, _payloads(events), rate, seconds, sent), daemon=True)
    producer.start()
    # this process runs the ingest; its side processes are children (the producer is not counted)
    sampler = RssSampler(os.getpid(), exclude=frozenset({producer.pid or 0}))
    started = time.monotonic()

    def done() -> bool:
        return not producer.is_alive() and _accounted(ingestor) >= sent.value

    results = _consume(ingestor, done, give_up_s=120)
    rss_start, rss_end = sampler.stop()
    producer.join(timeout=30)
    retained = _retained(ingestor)
    ingestor.close()
    stored = len(history.read(settings.data_dir, "transactions"))
    accounted = _accounted(ingestor)
    lags = np.array([lag for r in results for lag in r.freshness_s])
    return {
        "ingest_rate": rate,
        "ingest_seconds": seconds,
        "ingest_live_events": int(sent.value),
        "ingest_processed": int(ingestor.totals["processed"]),
        "ingest_stored": stored,
        "ingest_dlq": int(ingestor.totals["dlq"]),
        "ingest_live_lost": int(sent.value - accounted),
        "ingest_achieved_rate": round(sent.value / seconds, 1),
        "ingest_freshness_p50_s": round(float(np.percentile(lags, 50)), 3) if lags.size else None,
        "ingest_freshness_p99_s": round(float(np.percentile(lags, 99)), 3) if lags.size else None,
        "ingest_catch_up_s": round(time.monotonic() - started - seconds, 1),
        "ingest_fill_rss_start_mb": round(rss_start, 1),
        "ingest_fill_rss_end_mb": round(rss_end, 1),
        "ingest_fill_rss_growth_pct": growth_pct(rss_start, rss_end),
        "ingest_fill_retained_events_end": retained,
    }


def soak_ingest_steady(tmp: Path, events: pd.DataFrame, rate: float, seconds: float, per_day: float) -> dict[str, Any]:
    """The ingest at its steady state size: a replayed event clock, after a warm-up of its whole retention."""
    from fraud.feature_state import RETENTION_US

    day_us = 86400 * 1_000_000
    step = int(day_us / per_day)
    warm = int((RETENTION_US / day_us + 2) * per_day)
    live = int(rate * seconds)
    last = int(time.time() * 1e6) - 60 * 1_000_000  # the last event, a minute before now: nothing ahead
    first = last - (warm + live) * step
    topic, _, ingestor = _joined_ingestor(tmp / "steady", "soak-steady")
    payloads = _payloads(events)
    ctx = mp.get_context("spawn")
    warm_sent = ctx.Value("q", 0)
    warmer = ctx.Process(target=_produce_live, args=(topic, payloads, float(warm), 1.0, warm_sent, (first, step, 0)))
    warmer.start()
    print(f"  steady: warming up with {warm:,} events ({warm / per_day:.0f} days of event time)", flush=True)
    started = time.monotonic()
    _consume(ingestor, lambda: not warmer.is_alive() and _accounted(ingestor) >= warm_sent.value, give_up_s=120)
    warm_s = time.monotonic() - started
    warmer.join(timeout=30)
    retained_start = _retained(ingestor)
    sent = ctx.Value("q", 0)
    producer = ctx.Process(target=_produce_live, args=(topic, payloads, rate, seconds, sent, (first, step, warm)))
    producer.start()
    sampler = RssSampler(os.getpid(), settle_s=0.0, exclude=frozenset({producer.pid or 0}))
    rss_start = rss_mb(os.getpid(), sampler.exclude)
    print(f"  steady: {retained_start:,} events retained, RSS {rss_start:.0f} MB; replaying", flush=True)
    started = time.monotonic()

    def done() -> bool:
        return not producer.is_alive() and _accounted(ingestor) >= warm_sent.value + sent.value

    _consume(ingestor, done, give_up_s=120)
    catch_up = time.monotonic() - started - seconds
    rss_end = rss_mb(os.getpid(), sampler.exclude)
    sampler.stop()
    producer.join(timeout=30)
    retained_end = _retained(ingestor)
    ingestor.close()
    total = warm_sent.value + sent.value
    return {
        "ingest_steady_replay_events_per_day": per_day,
        "ingest_steady_warmup_events": int(warm_sent.value),
        "ingest_steady_warmup_s": round(warm_s, 1),
        "ingest_steady_events": int(sent.value),
        "ingest_steady_days_replayed": round(sent.value / per_day, 1),
        "ingest_steady_lost": int(total - _accounted(ingestor)),
        "ingest_steady_dlq": int(ingestor.totals["dlq"]),
        "ingest_steady_catch_up_s": round(catch_up, 1),
        "ingest_retained_events_start": retained_start,
        "ingest_retained_events_end": retained_end,
        "ingest_rss_start_mb": round(rss_start, 1),
        "ingest_rss_end_mb": round(rss_end, 1),
        "ingest_rss_growth_pct": growth_pct(rss_start, rss_end),
        "ingest_rss_windows_mb": sampler.every(WINDOW_S),
    }


OUTCOMES = ("processed", "dlq", "quarantined", "duplicates")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="duration of each soak")
    parser.add_argument("--scorer-rate", type=float, default=400.0, help="req/s (twice the 200 req/s target)")
    parser.add_argument("--ingest-rate", type=float, default=2000.0, help="events/s")
    parser.add_argument("--replay-per-day", type=float, default=20_000.0, help="steady run: events a day of event time")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench-score"), help="score benchmark's setup")
    parser.add_argument("--skip-scorer", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if not args.skip_scorer:
        print(f"scorer soak: {args.scorer_rate:.0f} req/s for {args.seconds:.0f}s", flush=True)
        result |= soak_scorer(args.data_dir.resolve(), args.scorer_rate, args.seconds, args.workers)
    if not args.skip_ingest:
        from fraud.settings import SimulatorSettings
        from pipelines.simulate import run as simulate

        with tempfile.TemporaryDirectory() as tmp:
            sim = SimulatorSettings(data_dir=Path(tmp) / "sim", sim_users=3000, sim_days=7, sim_seed=5)
            simulate(sim, "parquet")
            events = pd.read_parquet(sim.out_dir / "transactions.parquet")
            print(f"ingest soak, live: {args.ingest_rate:.0f} events/s for {args.seconds:.0f}s", flush=True)
            result |= soak_ingest(Path(tmp), events, args.ingest_rate, args.seconds)
            print(f"ingest soak, steady: {args.ingest_rate:.0f} events/s for {args.seconds:.0f}s", flush=True)
            result |= soak_ingest_steady(Path(tmp), events, args.ingest_rate, args.seconds, args.replay_per_day)
        # both runs (the steady run's lost count covers its warm-up too)
        result["ingest_events"] = result["ingest_live_events"] + result["ingest_steady_events"]
        result["ingest_lost"] = result["ingest_live_lost"] + result["ingest_steady_lost"]
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    path = write_results("soak", result)
    for key, value in result.items():
        if not isinstance(value, list):
            print(f"{key:34} {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
