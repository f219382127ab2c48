"""`fraud traffic`: a client that keeps sending simulated transactions to the scorer.

It plays the exchange's payment flow: simulated transactions (the simulator's own generator, so the
mix of legitimate and fraudulent behaviour is realistic), stamped with the current time, posted to
`/v1/score` at a fixed rate. Used by compose (to keep dashboards alive) and by the demo (to send a
sample and summarise the decisions and latencies).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd

from fraud.settings import TrafficSettings

log = logging.getLogger(__name__)


@dataclass
class TrafficReport:
    sent: int = 0
    errors: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    degraded: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan


def transactions(users: int, seed: int) -> Iterator[dict[str, Any]]:
    """Endless simulated transactions as JSON-ready dicts, re-stamped with the current time."""
    from fraud.settings import SimulatorSettings
    from pipelines.simulate import config_from
    from pipelines.simulator.generate import generate

    round_no = 0
    while True:
        settings = SimulatorSettings(sim_users=users, sim_days=2, sim_seed=seed + round_no)
        frame: pd.DataFrame = generate(config_from(settings)).transactions.to_pandas()
        for row in frame.to_dict("records"):
            clean = {
                str(k): v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None
            }
            clean["event_time"] = datetime.now(UTC).isoformat()
            clean["transaction_id"] = f"{clean['transaction_id']}-r{round_no}"
            yield clean
        round_no += 1


def send(settings: TrafficSettings, count: int | None = None, duration_s: float | None = None) -> TrafficReport:
    """Post transactions at `settings.traffic_rate` per second until `count` or `duration_s` is reached."""
    report = TrafficReport()
    headers = {"X-API-Key": settings.traffic_api_key}
    interval = 1.0 / settings.traffic_rate if settings.traffic_rate > 0 else 0.0
    started = time.monotonic()
    source = transactions(settings.traffic_users, settings.traffic_seed)
    with httpx.Client(base_url=settings.traffic_url, timeout=10.0, headers=headers) as client:
        for i, txn in enumerate(source):
            if count is not None and i >= count:
                break
            if duration_s is not None and time.monotonic() - started > duration_s:
                break
            due = started + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter()
            try:
                response = client.post("/v1/score", json=txn)
            except httpx.HTTPError as exc:
                report.errors += 1
                log.warning("scorer unreachable: %s", exc)
                time.sleep(1.0)
                continue
            report.latencies_ms.append((time.perf_counter() - t0) * 1000)
            report.sent += 1
            if response.status_code != 200:
                report.errors += 1
                log.warning("scorer answered %d: %s", response.status_code, response.text[:200])
                continue
            body = response.json()
            report.decisions[body.get("decision", "?")] += 1
            report.degraded += int(bool(body.get("degraded")))
            if body.get("decision") != "approve" and len(report.examples) < 3:
                report.examples.append({"request": txn, "response": body})
            if report.sent % 500 == 0:
                log.info("sent %d transactions: %s", report.sent, dict(report.decisions))
    return report


def main(settings: TrafficSettings) -> None:
    """Run until stopped (or for `traffic_duration_s` when set)."""
    report = send(settings, duration_s=settings.traffic_duration_s or None)
    log.info(
        "traffic done: %d sent, %d errors, decisions %s, p50 %.1f ms, p99 %.1f ms",
        report.sent,
        report.errors,
        dict(report.decisions),
        report.percentile(50),
        report.percentile(99),
    )
