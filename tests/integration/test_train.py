"""`fraud train` end to end on a small simulated history, into a throwaway MLflow registry."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud import history as H
from fraud.cli import app
from models import registry
from models.bundle import load_bundle
from pipelines.train import TrainOptions, run
from tests.training_fixtures import fresh_registry, small_history

pytestmark = pytest.mark.integration

WORSE = {"num_leaves": 2, "learning_rate": 0.005, "feature_fraction": 0.05, "min_child_samples": 2000}


def test_train_registers_gates_promotes_and_rolls_back(tmp_path_factory: pytest.TempPathFactory) -> None:
    hist = small_history(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("registry")
    settings = fresh_registry(hist, tmp)
    mc = registry.client(settings.tracking_uri)

    first = run(settings, TrainOptions(report=tmp / "report.json", model_card=tmp / "MODEL_CARD.md"))
    assert first.promoted and first.version == "1"
    assert registry.alias_version(mc, "champion") == "1" and registry.alias_version(mc, "challenger") == "1"
    report = json.loads((tmp / "report.json").read_text())
    assert set(report["test_metrics"]) == {"model", "rules", "logistic"}
    assert report["data_quality"]["success"] and report["data_quality"]["suite"] == "training_set"
    assert report["test_metrics"]["model"]["average_precision"] > report["test_metrics"]["model"]["frauds"] / max(
        report["test_metrics"]["model"]["rows"], 1
    )  # better than random
    assert "Recall by fraud type" in (tmp / "MODEL_CARD.md").read_text()

    # the run holds what the scorer needs: the bundle loads from the registry and explains its margin
    bundle = load_bundle(settings.tracking_uri)
    assert bundle.version == "1" and bundle.feature_service == "fraud_detection_v1"
    X = np.random.default_rng(0).normal(size=(5, len(bundle.feature_names)))
    contrib = bundle.contributions(X)
    assert np.allclose(contrib.sum(axis=1), bundle.margin(X))
    assert np.allclose(
        bundle.proba(X), 1 / (1 + np.exp(-(bundle.calibration.a * bundle.margin(X) + bundle.calibration.b)))
    )
    assert set(bundle.decide(np.array([0.0, 1.0]))) <= {"approve", "review", "decline"}

    # a worse model: registered as challenger, refused by the gate, champion unchanged
    worse = run(settings, TrainOptions(params=WORSE, max_rounds=3))
    assert not worse.promoted and worse.version == "2"
    assert worse.champion_before == "1" and "<=" in worse.gate_reason
    assert registry.alias_version(mc, "champion") == "1" and registry.alias_version(mc, "challenger") == "2"
    listed = {r["version"]: r for r in registry.list_versions(mc)}
    assert listed["1"]["aliases"] == ["champion"] and listed["2"]["aliases"] == ["challenger"]
    assert listed["2"]["gate"] == "refused" and listed["2"]["test_ap"] is not None

    # explicit promotion and rollback, through the CLI
    env = {"FRAUD_DATA_DIR": str(settings.data_dir), "FRAUD_MLFLOW_TRACKING_URI": settings.tracking_uri}
    cli = CliRunner()
    promoted = cli.invoke(app, ["promote", "2"], env=env)
    assert promoted.exit_code == 0, promoted.output
    assert registry.alias_version(mc, "champion") == "2"
    rolled = cli.invoke(app, ["rollback"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert registry.alias_version(mc, "champion") == "1"
    assert cli.invoke(app, ["rollback"], env=env).exit_code == 1  # nothing left to roll back to
    listing = cli.invoke(app, ["models"], env=env)
    assert listing.exit_code == 0 and "champion" in listing.output and "challenger" in listing.output

    # backtest: point-in-time scores and decisions for historical transactions, with a chosen version
    sample = pd.read_parquet(hist.sim_dir / "transactions.parquet").tail(300)
    sample.to_parquet(tmp / "sample.parquet")
    out = tmp / "scores.csv"
    done = cli.invoke(
        app,
        ["backtest", "--transactions", str(tmp / "sample.parquet"), "--out", str(out), "--model-version", "1"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    scores = pd.read_csv(out)
    assert list(scores.columns[:4]) == ["transaction_id", "event_time", "score", "decision"]
    assert len(scores) == 300 and scores["score"].between(0, 1).all()
    assert set(scores["decision"]) <= {"approve", "review", "decline"}


def test_training_data_failing_its_suite_stops_training(tmp_path_factory: pytest.TempPathFactory) -> None:
    hist = small_history(tmp_path_factory)
    data = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(hist.settings.data_dir, data)
    # a broken label feed: most transactions re-labelled as fraud (later verdicts win on read)
    labels = H.read(data, "labels")
    flipped = labels.sample(frac=0.6, random_state=0).assign(
        is_fraud=True, fraud_type="account_takeover", label_time=lambda d: d["label_time"] + pd.Timedelta(seconds=1)
    )
    H.append(data, "labels", flipped, tag="broken-feed")
    uri = f"sqlite:///{data.parent / 'mlflow.db'}"
    env = {
        "FRAUD_DATA_DIR": str(data),
        "FRAUD_MLFLOW_TRACKING_URI": uri,
        "FRAUD_TRAIN_GAP_DAYS": "4",
        "FRAUD_TRAIN_WARMUP_DAYS": "5",
    }
    result = CliRunner().invoke(app, ["train"], env=env)
    assert result.exit_code == 1
    assert "training_set: FAILED" in result.output and "is_fraud" in result.output
    assert registry.list_versions(registry.client(uri)) == []  # nothing registered, nothing to serve
