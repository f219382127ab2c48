"""Every Great Expectations suite passes on good data and fails on crafted bad data; stages refuse bad data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from data_quality import docs as D
from data_quality.runner import ValidationSummary, validate
from data_quality.suites import features_frame
from data_quality.traffic import traffic_frame
from fraud import features as F
from fraud.settings import IngestSettings
from pipelines.simulate import DataQualityError, validate_history
from pipelines.simulator.config import SimConfig
from pipelines.simulator.generate import History, generate
from tests.drift_data import audit_records, feature_frame

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def history() -> History:
    return generate(SimConfig(seed=11, users=300, days=10, start=datetime(2025, 2, 3, tzinfo=UTC)))


@pytest.fixture(scope="module")
def txns(history: History) -> pd.DataFrame:
    return history.transactions.to_pandas()


@pytest.fixture(scope="module")
def labels(history: History, txns: pd.DataFrame) -> pd.DataFrame:
    return history.labels.to_pandas().merge(txns[["transaction_id", "event_time"]], on="transaction_id")


@pytest.fixture(scope="module")
def at_instants(txns: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return features_frame(txns, labels)


@pytest.fixture(scope="module")
def user_rows(at_instants: pd.DataFrame) -> pd.DataFrame:
    return at_instants[["user_id", "event_time", *F.user_feature_names()]]


@pytest.fixture(scope="module")
def address_rows(at_instants: pd.DataFrame) -> pd.DataFrame:
    rows = at_instants[["destination_address", "event_time", *F.counterparty_feature_names("address")]]
    return rows[rows["destination_address"].notna()]


@pytest.fixture(scope="module")
def traffic(txns: pd.DataFrame) -> pd.DataFrame:
    sample = txns.iloc[-600:].reset_index(drop=True)
    frame = feature_frame(txns).iloc[-600:].reset_index(drop=True)
    return traffic_frame(audit_records(sample, frame))


def failed(summary: ValidationSummary) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in summary.failures}


def assert_fails(summary: ValidationSummary, expectation: str, column: str | None) -> None:
    assert not summary.success, summary.report()
    assert (expectation, column) in failed(summary), summary.report()


# -- raw events ---------------------------------------------------------------------------------------


def test_raw_transactions(txns: pd.DataFrame) -> None:
    assert validate(txns, "raw_transactions").success
    schema_break = txns.rename(columns={"amount_usd": "usd"})
    assert_fails(validate(schema_break, "raw_transactions"), "expect_table_columns_to_match_set", None)
    nulls = txns.copy()
    nulls.loc[nulls.index[::5], "device_id"] = None  # a null spike: 20% of device ids
    assert_fails(validate(nulls, "raw_transactions"), "expect_column_values_to_not_be_null", "device_id")
    shifted = txns.assign(amount_usd=txns["amount_usd"] * 1e5)  # a unit bug: cents as dollars, times 1000
    assert_fails(validate(shifted, "raw_transactions"), "expect_column_values_to_be_between", "amount_usd")


def test_raw_labels(labels: pd.DataFrame) -> None:
    assert validate(labels, "raw_labels", min_fraud_rate=0.001, max_fraud_rate=0.05).success
    leak = labels.copy()
    leak.loc[leak.index[:50], "label_time"] = leak.loc[leak.index[:50], "event_time"] - pd.Timedelta(hours=1)
    assert_fails(
        validate(leak, "raw_labels"), "expect_column_pair_values_a_to_be_greater_than_b", "label_time,event_time"
    )
    wave = labels.assign(is_fraud=True, fraud_type="card_testing")  # shifted: everything labelled fraud
    assert_fails(validate(wave, "raw_labels"), "expect_column_mean_to_be_between", "is_fraud")


def test_ingest_batch(txns: pd.DataFrame) -> None:
    now = datetime(2025, 2, 14, tzinfo=UTC)
    batch = txns.iloc[:500]
    assert validate(batch, "ingest_batch", now=now).success
    replayed = pd.concat([batch, batch.iloc[:10]])
    assert_fails(validate(replayed, "ingest_batch", now=now), "expect_column_values_to_be_unique", "transaction_id")
    future = batch.assign(event_time=batch["event_time"] + pd.Timedelta(days=30))
    assert_fails(validate(future, "ingest_batch", now=now), "expect_column_values_to_be_between", "event_time")


# -- feature batches ----------------------------------------------------------------------------------


def test_user_features(user_rows: pd.DataFrame) -> None:
    assert validate(user_rows, "user_features").success, validate(user_rows, "user_features").report()
    schema_break = user_rows.drop(columns=["txn_count_7d"])
    assert_fails(validate(schema_break, "user_features"), "expect_table_columns_to_match_set", None)
    assert user_rows["txn_count_total"].isna().any()  # a user's first transaction: nothing before it
    negative = user_rows.copy()
    negative.loc[negative.index[::3], "usd_sum_24h"] = -1.0
    assert_fails(validate(negative, "user_features"), "expect_column_values_to_be_between", "usd_sum_24h")
    inconsistent = user_rows.copy()
    inconsistent.loc[inconsistent.index[:20], "txn_count_1h"] = inconsistent["txn_count_24h"].iloc[:20] + 1
    assert_fails(
        validate(inconsistent, "user_features"),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "txn_count_24h,txn_count_1h",
    )
    leak = user_rows.copy()  # the transaction itself (or a later one) seen by its own features
    leak.loc[leak.index[:20], "last_event_time"] = leak["event_time"].iloc[:20]
    assert_fails(
        validate(leak, "user_features"),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "event_time,last_event_time",
    )
    doubled = user_rows.assign(**{c: user_rows[c] * 500 for c in ("txn_count_24h", "txn_count_7d", "txn_count_30d")})
    assert_fails(validate(doubled, "user_features"), "expect_column_mean_to_be_between", "txn_count_24h")


def test_counterparty_features(address_rows: pd.DataFrame) -> None:
    assert validate(address_rows, "counterparty_features", kind="address").success
    leak = address_rows.copy()
    leak.loc[leak.index[:10], "address_first_seen"] = leak["event_time"].iloc[:10] + pd.Timedelta(days=1)
    assert_fails(
        validate(leak, "counterparty_features", kind="address"),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "event_time,address_first_seen",
    )
    nulls = address_rows.assign(destination_address=None)
    assert_fails(
        validate(nulls, "counterparty_features", kind="address"),
        "expect_column_values_to_not_be_null",
        "destination_address",
    )
    above_one = address_rows.copy()  # a "rate" that counts more frauds than transactions
    above_one.loc[above_one.index[:5], "address_fraud_rate_7d"] = 1.5
    assert_fails(
        validate(above_one, "counterparty_features", kind="address"),
        "expect_column_values_to_be_between",
        "address_fraud_rate_7d",
    )


def test_training_set_bounds_fraud_rates_to_a_share(txns: pd.DataFrame, labels: pd.DataFrame) -> None:
    from data_quality.suites import training_set_frame

    event_time = pd.Series(txns["event_time"].to_numpy())
    past = {c: event_time - pd.Timedelta(hours=1) for c in ["last_event_time", "signup_time"]}
    past |= {f"{k}_first_seen": event_time - pd.Timedelta(days=1) for k in F.COUNTERPARTIES}
    frame = feature_frame(txns).assign(
        transaction_id=txns["transaction_id"].to_numpy(),
        event_time=event_time,
        label_time=event_time + pd.Timedelta(days=3),
        is_fraud=txns["transaction_id"].isin(labels.loc[labels["is_fraud"], "transaction_id"]).to_numpy(),
        **past,
    )
    frame = frame[frame["seconds_since_prev_txn"] > 0].reset_index(drop=True)  # each user's later events
    rates = [n for n in F.model_feature_names() if "_fraud_rate_" in n]
    frame[rates] = 0.2
    good = training_set_frame(frame)
    assert validate(good, "training_set", min_rows=10).success, validate(good, "training_set", min_rows=10).report()
    frame.loc[frame.index[:3], "device_fraud_rate_30d"] = 1.5
    assert_fails(
        validate(training_set_frame(frame), "training_set", min_rows=10),
        "expect_column_values_to_be_between",
        "max_fraud_rate_feature",
    )


# -- scoring traffic ----------------------------------------------------------------------------------


def test_scoring_traffic(traffic: pd.DataFrame) -> None:
    good = validate(traffic, "scoring_traffic")
    assert good.success, good.report()
    assert_fails(
        validate(traffic.drop(columns=["amount_usd"]), "scoring_traffic"), "expect_table_columns_to_match_set", None
    )
    assert_fails(
        validate(traffic.assign(score=traffic["score"] * 3), "scoring_traffic"),
        "expect_column_values_to_be_between",
        "score",
    )
    assert_fails(
        validate(traffic.assign(decision="block"), "scoring_traffic"), "expect_column_values_to_be_in_set", "decision"
    )
    declines = traffic.assign(decision=np.where(np.arange(len(traffic)) % 2 == 0, "decline", "approve"))
    summary = validate(declines, "scoring_traffic", max_decline_rate=0.2)
    assert_fails(summary, "expect_column_values_to_be_in_set", "decision")
    assert_fails(
        validate(traffic.assign(degraded=1), "scoring_traffic"), "expect_column_mean_to_be_between", "degraded"
    )
    store_down = traffic.copy()  # null spike: the online store returned nothing for most rows
    store_down.loc[store_down.index[: int(len(traffic) * 0.8)], "txn_count_total"] = np.nan
    assert_fails(validate(store_down, "scoring_traffic"), "expect_column_values_to_not_be_null", "txn_count_total")
    leak = traffic.copy()
    leak.loc[leak.index[:5], "seconds_since_prev_txn"] = -30.0
    assert_fails(validate(leak, "scoring_traffic"), "expect_column_values_to_be_between", "seconds_since_prev_txn")


# -- stages refuse bad data ---------------------------------------------------------------------------


def test_simulator_refuses_bad_history(history: History) -> None:
    amounts = history.transactions.column("amount").to_numpy().copy()
    amounts[:25] = -1.0
    index = history.transactions.schema.get_field_index("amount")
    broken = History(
        history.transactions.set_column(index, "amount", pa.array(amounts)),
        history.labels,
        history.accounts,
        history.address_lists,
        history.opening_balances,
    )
    assert validate_history(history, 0.01)
    with pytest.raises(DataQualityError, match="amount"):
        validate_history(broken, 0.01)


def test_ingest_check_refuses_and_publishes_failures(txns: pd.DataFrame, tmp_path: Path) -> None:
    from data_quality.batch_check import gx_check

    settings = IngestSettings(data_dir=tmp_path, ingest_data_docs_every=1000)
    check = gx_check(settings)
    assert check(txns.iloc[:300]).passed  # first batch: published (sampled)
    twice = pd.concat([txns.iloc[300:400], txns.iloc[300:310]], ignore_index=True)
    bad, report, offending = check(twice)  # failures always published
    assert not bad and "transaction_id" in report
    assert offending == [*range(10), *range(100, 110)]  # both copies of each duplicate
    assert check(txns.iloc[400:500]).passed  # neither first, sampled nor failed: not published
    pages = sorted((tmp_path / "data_docs" / "validations" / "ingest_batch").rglob("*.html"))
    assert [p.stem for p in pages] == ["batch-0", "batch-1"]


def test_ingest_check_blames_rows_where_its_expectations_allow(txns: pd.DataFrame, tmp_path: Path) -> None:
    """A row-level failure blames its rows (the rest of the batch can go on); others blame the batch."""
    from data_quality.batch_check import gx_check, offending_rows

    check = gx_check(IngestSettings(data_dir=tmp_path, ingest_data_docs_every=0))
    batch = txns.iloc[:200].reset_index(drop=True)
    batch.loc[[7, 150], "amount_usd"] = 6e7  # above the suite's plausible maximum
    batch.loc[[3, 4, 5], "device_id"] = None  # 1.5% null breaks "mostly 0.99": the null rows are blamed
    verdict = check(batch)
    assert not verdict.passed and verdict.offending == [3, 4, 5, 7, 150]
    assert check(batch.drop(index=verdict.offending)).passed
    whole = {"results": [{"success": False, "result": {"observed_value": 0.5}}]}  # e.g. a mean: no row to blame
    assert offending_rows(whole) is None


def test_ingest_check_is_sent_every_column_its_suite_checks() -> None:
    from data_quality.batch_check import INGEST_BATCH_COLUMNS
    from data_quality.suites import ingest_batch

    gx.get_context(mode="ephemeral")
    checked = {getattr(e, "column") for e in ingest_batch().expectations}  # noqa: B009
    assert checked == set(INGEST_BATCH_COLUMNS)


def test_cli_validate(txns: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fraud.cli import app

    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "data"))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.parquet"
    txns.iloc[:200].to_csv(good, index=False)
    txns.iloc[:200].assign(amount=-1.0).to_parquet(bad)
    runner = CliRunner()
    result = runner.invoke(app, ["validate", "raw_transactions", "--data", str(good)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "data docs:" in result.output
    result = runner.invoke(app, ["validate", "raw_transactions", "--data", str(bad), "--no-docs"])
    assert result.exit_code == 1
    assert "FAILED" in result.output and "[amount]" in result.output
    result = runner.invoke(app, ["validate", "raw_transactions", "--data", str(tmp_path / "missing.parquet")])
    assert result.exit_code == 2


def test_data_docs_accumulate_in_one_site(txns: pd.DataFrame, labels: pd.DataFrame, tmp_path: Path) -> None:
    site = tmp_path / "data_docs"
    first = validate(txns, "raw_transactions", docs_dir=site, docs_run="simulator", docs_batch="transactions")
    D._CONTEXTS.clear()  # as if another process (ingest, trainer, monitor) wrote next
    second = D.publish(validate(labels, "raw_labels"), site, run_name="train", batch="labels")
    assert first.docs_path is not None and first.docs_path.exists() and second.exists()
    index = (site / "index.html").read_text()
    assert "transactions" in index and "labels" in index and "simulator" in index and "train" in index
    assert "https://code.jquery.com" not in index and (site / "static" / "vendor" / "jquery.min.js").exists()
