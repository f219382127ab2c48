"""`make demo`'s flow at a small size: every step runs for real and the summary is printed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_runs_end_to_end_and_prints_where_to_look(tmp_path: Path, kafka_bootstrap: str) -> None:
    port = _free_port()
    env = os.environ | {"FRAUD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraud.cli",
            "demo",
            "--users",
            "1500",
            "--days",
            "42",
            "--fraud-rate",
            "0.04",
            "--sample",
            "40",
            "--port",
            str(port),
            "--no-keep-running",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for expected in (
        "Backfill features",
        "Train, evaluate, register",
        "scorer ready",
        "Live scoring sample",
        "Where to look",
        f"http://127.0.0.1:{port}/docs",
    ):
        assert expected in out, expected
    # everything the demo started is stopped, the shared broker is not
    assert not (tmp_path / "data" / "demo" / "pids.json").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert subprocess.run([str(ROOT / "infra/kafka/broker.sh"), "status"], check=False).returncode == 0
