"""`fraud demo`: the whole story on one machine, with the embedded defaults (what `make demo` runs).

Starts the local Kafka broker, applies the feature repository, simulates a history and backfills it,
starts the ingest services and a live simulated stream, trains and promotes a champion, starts the
scorer, sends live transactions through it and prints a summary. Every step shows progress; a failing
step stops the demo and names its log. Services keep running afterwards so you can explore them;
`fraud demo --stop` (or Ctrl-C during the run) stops exactly what the demo started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
BROKER = ROOT / "infra" / "kafka" / "broker.sh"


class DemoFailed(RuntimeError):
    """A demo step failed; the message names the step and its log."""


@dataclass
class DemoConfig:
    data_dir: Path
    users: int = 6000
    days: int = 45
    seed: int = 7
    fraud_rate: float = 0.01
    live_rate: float = 40.0
    sample: int = 300
    port: int = 8000
    api_key: str = "demo-key"
    keep_running: bool = True


@dataclass
class Demo:
    """Runs the steps; remembers the background processes it started (pid file) to stop them."""

    cfg: DemoConfig
    console: Console = field(default_factory=Console)
    started: dict[str, int] = field(default_factory=dict)
    traffic: Any = None
    owns_broker: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    @property
    def report_path(self) -> Path:
        return self.cfg.data_dir / "demo" / "train_report.json"

    @property
    def logs(self) -> Path:
        return self.cfg.data_dir / "demo" / "logs"

    @property
    def pid_file(self) -> Path:
        return self.cfg.data_dir / "demo" / "pids.json"

    def env(self) -> dict[str, str]:
        return os.environ | {
            "FRAUD_DATA_DIR": str(self.cfg.data_dir),
            "FRAUD_SCORER_API_KEYS": json.dumps([self.cfg.api_key]),
            "FRAUD_SCORER_PORT": str(self.cfg.port),
            "PYTHONUNBUFFERED": "1",
        }

    def fraud(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fraud.cli", *args]

    def step(self, title: str, cmd: list[str], timeout: float = 1800) -> None:
        """Run one command to completion with a spinner; on failure raise with its log's tail."""
        self.logs.mkdir(parents=True, exist_ok=True)
        name = title.lower().replace(" ", "-").replace("/", "-")
        log_path = self.logs / f"{name}.log"
        started = time.perf_counter()
        with self.console.status(f"[bold]{title}[/] ...", spinner="dots"), open(log_path, "w") as out:
            # the project's own commands, from fixed argument lists in this module
            proc = subprocess.run(  # noqa: S603
                cmd, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise DemoFailed(f"step '{title}' failed (exit {proc.returncode}); log: {log_path}\n{tail}")
        self.console.print(f"[green]✓[/] {title} [dim]({time.perf_counter() - started:.1f}s, log {log_path})[/]")

    def background(self, name: str, cmd: list[str]) -> None:
        """Start a long-running service; its pid goes to the pid file."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        proc = subprocess.Popen(  # noqa: S603 - the project's own services, fixed argument lists
            cmd,
            cwd=ROOT,
            env=self.env(),
            stdout=open(log_path, "a"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started[name] = proc.pid
        self.save_pids()
        self.console.print(f"[green]✓[/] started {name} [dim](pid {proc.pid}, log {log_path})[/]")

    def save_pids(self) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({"services": self.started, "owns_broker": self.owns_broker}))

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        with self.console.status(f"waiting for {what} ..."):
            while not check():
                if time.monotonic() > deadline:
                    raise DemoFailed(f"{what} not ready after {timeout:.0f}s; log: {self.logs / (log_name + '.log')}")
                time.sleep(0.5)

    def stop_all(self) -> None:
        """Stop the services this demo started (from the pid file), then the broker if it started it."""
        saved = json.loads(self.pid_file.read_text()) if self.pid_file.exists() else {}
        pids: dict[str, int] = saved.get("services", self.started)
        owns_broker = saved.get("owns_broker", self.owns_broker)
        for name, pid in pids.items():
            try:
                os.killpg(pid, signal.SIGTERM)
                self.console.print(f"stopping {name} (pid {pid})")
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 30
        for pid in pids.values():
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                    time.sleep(0.3)
                except ProcessLookupError:
                    break
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if self.pid_file.exists():
            self.pid_file.unlink()
        if owns_broker:  # a broker that ran before the demo (e.g. for the tests) stays up
            subprocess.run([str(BROKER), "stop"], check=False)  # noqa: S603 - the project's broker script


def run(cfg: DemoConfig, steps: list[Callable[[Demo], Any]]) -> Demo:
    """Run `steps` in order; Ctrl-C or a failure stops everything the demo started."""
    demo = Demo(cfg)
    try:
        for step in steps:
            step(demo)
    except (DemoFailed, KeyboardInterrupt, subprocess.TimeoutExpired) as exc:
        demo.console.print(f"[red]demo stopped:[/] {exc}")
        demo.stop_all()
        raise
    if not cfg.keep_running:
        demo.stop_all()
    return demo


def default_steps() -> list[Callable[[Demo], Any]]:
    """The demo's story, step by step."""

    def broker(d: Demo) -> None:
        status = [str(BROKER), "status"]
        running = subprocess.run(status, capture_output=True, check=False).returncode == 0  # noqa: S603 - our script
        d.step("Kafka broker", [str(BROKER), "start"], timeout=600)
        d.owns_broker = not running
        d.save_pids()
        d.step("Kafka topics", d.fraud("topics"))

    def history(d: Demo) -> None:
        d.step("Feature repository", d.fraud("features", "apply"))
        sim = d.cfg.data_dir / "simulated"
        d.step(
            "Simulate history",
            d.fraud(
                "simulate",
                "--to",
                "parquet",
                "--out",
                str(sim),
                "--users",
                str(d.cfg.users),
                "--days",
                str(d.cfg.days),
                "--seed",
                str(d.cfg.seed),
                "--start",  # the history ends yesterday: live transactions continue it
                str(date.today() - timedelta(days=d.cfg.days + 1)),
                "--fraud-rate",
                str(d.cfg.fraud_rate),
            ),
        )
        d.step(
            "Backfill features",
            d.fraud(
                "backfill",
                "--transactions",
                str(sim / "transactions.parquet"),
                "--labels",
                str(sim / "labels.parquet"),
                "--accounts",
                str(sim / "accounts.parquet"),
                "--address-lists",
                str(sim / "address_lists.parquet"),
            ),
        )

    def streaming(d: Demo) -> None:
        d.background("ingest", d.fraud("ingest"))
        d.background("ingest-labels", d.fraud("ingest-labels"))
        d.background(
            "live-stream",
            d.fraud(
                "simulate",
                "--to",
                "kafka",
                "--realtime",
                "--rate",
                str(d.cfg.live_rate),
                "--users",
                "400",
                "--days",
                "2",
                "--seed",
                str(d.cfg.seed + 1),
            ),
        )

    def train(d: Demo) -> None:
        d.step("Train, evaluate, register", d.fraud("train", "--report", str(d.report_path)))
        report = json.loads(d.report_path.read_text())
        if not report.get("champion_after"):
            raise DemoFailed(
                f"training registered no champion ({report.get('gate_reason', 'see the log')}); "
                f"log: {d.logs / 'train,-evaluate,-register.log'}. A larger history (--users/--days) helps."
            )

    def serve(d: Demo) -> None:
        import httpx

        d.background("scorer", d.fraud("serve"))

        def ready() -> bool:
            try:
                return httpx.get(f"{d.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        d.wait_for("the scorer", ready, timeout=180, log_name="scorer")
        d.console.print(f"[green]✓[/] scorer ready at {d.url}")

    def sample(d: Demo) -> None:
        from fraud.settings import TrafficSettings
        from services.traffic import send

        settings = TrafficSettings(  # the history's customers (same population), so their features are known
            traffic_url=d.url,
            traffic_api_key=d.cfg.api_key,
            traffic_rate=50.0,
            traffic_users=d.cfg.users,
            traffic_seed=d.cfg.seed,
        )
        with d.console.status(f"sending {d.cfg.sample} live transactions through the scorer ..."):
            d.traffic = send(settings, count=d.cfg.sample)
        if d.traffic.sent == 0 or d.traffic.errors == d.traffic.sent:
            raise DemoFailed(f"the scorer answered no request; log: {d.logs / 'scorer.log'}")
        d.console.print(f"[green]✓[/] scored {d.traffic.sent} transactions")

    return [broker, history, streaming, train, serve, sample, summary]


def summary(d: Demo) -> None:
    """The closing table: model quality beside the baselines, decisions, latency, where to look."""
    console = d.console
    report = json.loads(d.report_path.read_text()) if d.report_path.exists() else {}
    metrics = report.get("test_metrics") or report.get("metrics") or {}
    if metrics:
        table = Table(title="Model quality on the held-out test period")
        table.add_column("model")
        for col in ("average_precision", "roc_auc", "recall_at_1pct_fpr"):
            table.add_column(col)
        for name, values in metrics.items():
            if isinstance(values, dict):
                table.add_row(
                    name,
                    *(
                        f"{values.get(c, float('nan')):.3f}"
                        for c in ("average_precision", "roc_auc", "recall_at_1pct_fpr")
                    ),
                )
        console.print(table)
    if d.traffic is not None:
        t = d.traffic
        table = Table(title="Live scoring sample")
        table.add_column("sent")
        table.add_column("decisions")
        table.add_column("degraded")
        table.add_column("latency p50 / p99 (ms, client side)")
        table.add_row(
            str(t.sent),
            ", ".join(f"{k} {v}" for k, v in sorted(t.decisions.items())),
            str(t.degraded),
            f"{t.percentile(50):.1f} / {t.percentile(99):.1f}",
        )
        console.print(table)
    mlflow_db = d.cfg.data_dir / "mlflow" / "mlflow.db"
    console.print("\n[bold]Where to look[/]")
    console.print(f"  scorer        {d.url}  (API docs: {d.url}/docs, metrics: {d.url}/metrics)")
    console.print(
        f"  try it        curl -s -X POST {d.url}/v1/score -H 'X-API-Key: {d.cfg.api_key}' "
        "-H 'Content-Type: application/json' -d @docs/examples/transaction.json"
    )
    console.print(f"  MLflow UI     .venv/bin/mlflow ui --backend-store-uri sqlite:///{mlflow_db} --port 5000")
    console.print(f"  Data Docs     {d.cfg.data_dir / 'data_docs' / 'index.html'}")
    console.print(f"  logs          {d.logs}")
    console.print("  stop it       make demo-stop   (stops the services and the broker this demo started)")
