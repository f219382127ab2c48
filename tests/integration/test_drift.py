"""Drift monitoring: a price shock moves exactly the features it should, found through Kafka too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_quality import drift as D
from data_quality.traffic import traffic_frame
from fraud import features as F
from fraud.kafka import make_producer
from fraud.settings import MonitorSettings
from services.monitor import MonitorMetrics, check_window, load_reference, read_window
from tests.drift_data import SHOCK_AFFECTED, audit_records, config, feature_frame, simulate

pytestmark = pytest.mark.integration
SAMPLE = 3000
CRASH = 0.2  # crypto prices fall 80%: the same USD buys five times the units


@pytest.fixture(scope="module")
def reference() -> D.DriftReference:
    train = feature_frame(simulate(config(seed=1)))
    return D.build_reference(train, F.model_feature_names(), source="seed-1 simulation")


@pytest.fixture(scope="module")
def control() -> pd.DataFrame:
    """Later traffic of the same world (another seed): no drift."""
    return feature_frame(simulate(config(seed=2))).sample(SAMPLE, random_state=0)


@pytest.fixture(scope="module")
def crash() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same later traffic after a price crash: transactions and their features."""
    txns = simulate(config(seed=2), price_shock=CRASH)
    frame = feature_frame(txns)
    idx = frame.sample(SAMPLE, random_state=0).index
    return txns.loc[idx], frame.loc[idx]


def test_psi_core() -> None:
    assert D.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert D.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5))
    x = np.r_[np.arange(1000.0), [np.nan] * 100]
    bins = D.fit(x)
    assert len(bins.cuts) == 9 and sum(bins.shares) == pytest.approx(1.0)
    assert bins.shares[-1] == pytest.approx(100 / 1100)  # missing values have a bin of their own
    assert D.psi(bins.shares, D.shares(bins.cuts, x)) == pytest.approx(0.0)
    assert D.psi(bins.shares, D.shares(bins.cuts, x * 3)) > 1.0
    codes = D.fit(np.array([0, 1, 1, 2, 2, 2]))  # few distinct values: one bin each
    assert codes.cuts == (0.5, 1.5)
    ref = D.DriftReference({"a": bins}, score=codes, decision_rates={"review": 0.05, "decline": 0.01})
    assert D.DriftReference.from_json(ref.to_json()) == ref


def test_no_drift_in_unshifted_traffic(reference: D.DriftReference, control: pd.DataFrame) -> None:
    result = D.assess(reference, control)
    assert result.breached == [], [(d.name, d.psi) for d in result.breached]
    assert result.features[0].psi < 0.15


def test_price_crash_drifts_the_unit_balances_and_nothing_else(
    reference: D.DriftReference, crash: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    result = D.assess(reference, crash[1])
    assert {d.name for d in result.breached} == set(SHOCK_AFFECTED)
    assert all(d.psi > 0.3 for d in result.breached)
    assert result.alert_kinds == ["feature_psi"] * len(SHOCK_AFFECTED)


def test_rate_and_missing_alerts(reference: D.DriftReference, control: pd.DataFrame) -> None:
    window = control.assign(
        decision=np.where(np.arange(len(control)) % 10 == 0, "decline", "approve"),
        missing_groups=np.where(np.arange(len(control)) % 4 == 0, 1, 0),
        degraded=0,
    )
    ref = D.DriftReference(reference.features, decision_rates={"review": 0.0, "decline": 0.01})
    result = D.assess(ref, window, D.Thresholds(missing_rate=0.1))
    assert set(result.alert_kinds) == {"decision_rate", "missing_rate"}
    assert result.live_rates["decline"] == pytest.approx(0.1)
    few = D.assess(ref, window.iloc[:50], D.Thresholds(min_rows=200))
    assert few.alerts == [] and not few.enough_rows  # too few rows to call drift


def test_monitor_finds_the_crash_through_kafka(
    kafka_bootstrap: str,
    topic_factory,
    tmp_path: Path,
    reference: D.DriftReference,
    crash: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    topic = topic_factory("scores")
    txns, frame = crash
    records = audit_records(txns.iloc[:2000], frame.iloc[:2000])
    producer = make_producer(kafka_bootstrap, linger_ms=20)
    for rec in records:
        producer.send(topic, key=rec["transaction_id"].encode(), value=json.dumps(rec).encode())
    producer.flush()
    producer.close()

    window = read_window(kafka_bootstrap, topic, max_records=1500, timeout_s=60)
    assert len(window) == 1500
    assert {r["transaction_id"] for r in window} <= {r["transaction_id"] for r in records}

    ref_path = tmp_path / "reference.json"
    ref_path.write_text(reference.to_json())
    settings = MonitorSettings(
        data_dir=tmp_path, monitor_reference_path=ref_path, monitor_data_docs=False, monitor_psi_threshold=0.2
    )
    metrics = MonitorMetrics()
    outcome = check_window(settings, load_reference(settings), window, metrics)
    assert {d.name for d in outcome.result.breached} == set(SHOCK_AFFECTED)
    assert outcome.report.exists() and outcome.report.parent == tmp_path / "reports"
    page = outcome.report.read_text()
    assert "balance_BTC" in page and 'id="psi"' in page and "data:image/png;base64," in page
    summary = json.loads(outcome.report.with_suffix(".json").read_text())
    assert set(summary["features_breached"]) == set(SHOCK_AFFECTED)
    registry = metrics.registry
    assert (registry.get_sample_value("fraud_drift_feature_psi", {"feature": "balance_BTC"}) or 0.0) > 0.2
    assert (registry.get_sample_value("fraud_drift_feature_psi", {"feature": "amount_usd"}) or 1.0) < 0.2
    assert registry.get_sample_value("fraud_drift_alerts_total", {"kind": "feature_psi"}) == len(SHOCK_AFFECTED)
    assert registry.get_sample_value("fraud_drift_breach") == 1.0
    assert registry.get_sample_value("fraud_drift_window_rows") == 1500


def test_traffic_frame_reads_audit_records(crash: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    txns, frame = crash
    records = audit_records(txns.iloc[:5], frame.iloc[:5])
    records[0]["features"]["amount_usd"] = None
    records[1]["missing_features"] = ["user_activity"]
    table = traffic_frame(records)
    assert list(table.columns[:8]) == [
        "transaction_id",
        "event_time",
        "scored_at",
        "model_version",
        "score",
        "decision",
        "degraded",
        "missing_groups",
    ]
    assert np.isnan(table["amount_usd"].iloc[0]) and table["missing_groups"].iloc[1] == 1
    assert len(table.columns) == 8 + len(F.model_feature_names())
