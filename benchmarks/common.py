"""Shared helpers of the benchmark scripts: the machine they ran on, and writing results."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """CPU, memory and software versions of this machine."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        ram_gb = round(kb / 1024**2, 1)
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: version(p)
            for p in ("numpy", "pandas", "pyarrow", "kafka-python", "feast", "lightgbm", "mlflow", "great-expectations")
        },
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>.json` with the run time and the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {"benchmark": name, "run_at": datetime.now(UTC).isoformat(timespec="seconds"), **payload}
    body["machine"] = machine()
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path
