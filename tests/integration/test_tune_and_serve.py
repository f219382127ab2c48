"""`fraud train --tune` with a tiny time budget, then its registered version served by `mlflow models serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmarks.score import _free_port, _stop, _wait_ready  # the benchmark's server handling
from fraud.cli import app
from models import registry
from models.bundle import MODEL_NAME
from tests.training_fixtures import fresh_registry, small_history

pytestmark = pytest.mark.integration

BUDGET_SECONDS = 4.0
OVERRUN_SECONDS = 3.0  # the trial running at the deadline stops at its next boosting round
READY_SECONDS = 90.0


@dataclass(frozen=True)
class TunedRun:
    """A `fraud train --tune` run: its registry and its `--report`."""

    tracking_uri: str
    report: dict[str, Any]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> TunedRun:
    hist = small_history(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("tuned")
    settings = fresh_registry(hist, tmp)
    env = {
        "FRAUD_DATA_DIR": str(settings.data_dir),
        "FRAUD_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "FRAUD_TRAIN_GAP_DAYS": str(settings.train_gap_days),
        "FRAUD_TRAIN_WARMUP_DAYS": str(settings.train_warmup_days),
    }
    args = ["train", "--tune", "--tune-seconds", str(BUDGET_SECONDS), "--report", str(tmp / "report.json")]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    return TunedRun(settings.tracking_uri, json.loads((tmp / "report.json").read_text()))


def test_tune_searches_within_its_budget_and_logs_the_best_params(tuned: TunedRun) -> None:
    tuning = tuned.report["tuning"]
    assert tuning["budget_seconds"] == BUDGET_SECONDS
    assert tuning["completed"] >= 1 and tuning["trials"] >= tuning["completed"]
    assert tuning["seconds"] <= BUDGET_SECONDS + OVERRUN_SECONDS

    mc = registry.client(tuned.tracking_uri)
    run = mc.get_run(tuned.report["run_id"])
    params, metrics = run.data.params, run.data.metrics
    assert params["tuned"] == "True" and params["tune_trials"] == str(tuning["trials"])
    # the registered model is the best trial refitted: same parameters, same validation AP
    for name, value in tuning["best_params"].items():
        assert params[f"lgbm_{name}"] == str(value)
    assert metrics["valid_model_average_precision"] == pytest.approx(tuning["best_valid_ap"], abs=1e-9)
    logged = mc.download_artifacts(run.info.run_id, "tuning.json")
    assert json.loads(Path(logged).read_text())["best_params"] == tuning["best_params"]

    # and it took the same calibration / threshold / gate path as an untuned model
    assert tuned.report["version"] == "1" and tuned.report["promoted"]
    assert registry.alias_version(mc, "champion") == "1"
    assert 0 < tuned.report["thresholds"]["review"] <= tuned.report["thresholds"]["decline"] <= 1
    assert tuned.report["calibration"]["a"] != 0


@pytest.mark.timeout(150, func_only=True)  # the server part; the fixture trains first
def test_mlflow_models_serve_returns_the_boosters_probability(tuned: TunedRun) -> None:
    import httpx
    import mlflow

    uri = f"models:/{MODEL_NAME}/{tuned.report['version']}"
    mlflow.set_tracking_uri(tuned.tracking_uri)
    mlflow.set_registry_uri(tuned.tracking_uri)
    local = mlflow.pyfunc.load_model(uri)
    rows = local.input_example
    assert isinstance(rows, pd.DataFrame) and len(rows) >= 3
    booster = mlflow.lightgbm.load_model(uri)

    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = os.environ | {"MLFLOW_TRACKING_URI": tuned.tracking_uri, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ping", proc, timeout=READY_SECONDS)
        body = '{"dataframe_split": ' + rows.to_json(orient="split", index=False) + "}"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["predictions"], dtype=np.float64)
    finally:
        _stop(proc)

    # the served output is the booster's uncalibrated probability, as pyfunc gives it locally
    assert served.shape == (len(rows),)
    np.testing.assert_allclose(served, np.asarray(local.predict(rows), dtype=np.float64), rtol=1e-9)
    np.testing.assert_allclose(served, booster.predict(rows.to_numpy(dtype=np.float64)), rtol=1e-9)
