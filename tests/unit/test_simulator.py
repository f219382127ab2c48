"""The transaction simulator: deterministic, realistic in shape, consistent with the contracts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kafka.partitioner.default import murmur2
from typer.testing import CliRunner

from fraud.contracts import (
    ACCOUNT_SCHEMA,
    ADDRESS_LIST_SCHEMA,
    LABEL_SCHEMA,
    TRANSACTION_SCHEMA,
    FraudLabel,
    FraudType,
    Transaction,
)
from pipelines.simulator.config import DEFAULT_SHARES, SimConfig
from pipelines.simulator.generate import History, generate
from pipelines.simulator.kafka_out import partitions, render_labels, render_transactions

CONFIG = SimConfig(seed=11, users=600, days=21, start=datetime(2025, 3, 3, tzinfo=UTC), fraud_rate=0.02)


@pytest.fixture(scope="module")
def history() -> History:
    return generate(CONFIG)


@pytest.fixture(scope="module")
def joined(history: History) -> pd.DataFrame:
    tx = history.transactions.to_pandas()
    return tx.merge(history.labels.to_pandas(), on="transaction_id", how="left", validate="one_to_one")


def test_same_seed_same_output_other_seed_differs(history: History) -> None:
    again = generate(CONFIG)
    for name in ("transactions", "labels", "accounts", "address_lists"):
        assert getattr(again, name).equals(getattr(history, name)), name
    other = generate(SimConfig(seed=12, users=600, days=21, start=CONFIG.start, fraud_rate=0.02))
    assert not other.transactions.equals(history.transactions)


def test_tables_have_the_canonical_schemas(history: History) -> None:
    assert history.transactions.schema.equals(TRANSACTION_SCHEMA)
    assert history.labels.schema.equals(LABEL_SCHEMA)
    assert history.accounts.schema.equals(ACCOUNT_SCHEMA)
    assert history.address_lists.schema.equals(ADDRESS_LIST_SCHEMA)


def test_every_row_validates_against_the_contracts(history: History) -> None:
    for row in history.transactions.to_pylist():
        Transaction.model_validate(row)
    for row in history.labels.to_pylist():
        FraudLabel.model_validate(row)


def test_kafka_values_are_the_contract_json(history: History) -> None:
    tx, lb = render_transactions(history.transactions), render_labels(history.labels)
    rows = history.transactions.to_pylist()
    for i in range(0, len(rows), 7):
        parsed = Transaction.model_validate_json(tx.head[i] + tx.time[i] + tx.tail[i])
        assert parsed == Transaction.model_validate(rows[i])
        assert parsed == Transaction.model_validate_json(parsed.model_dump_json())
    labels = history.labels.to_pylist()
    for i in range(0, len(labels), 7):
        assert FraudLabel.model_validate_json(lb.head[i] + lb.time[i] + lb.tail[i]) == FraudLabel.model_validate(
            labels[i]
        )


def test_partitions_match_kafka_default_partitioner(history: History) -> None:
    keys = history.transactions.column("user_id").combine_chunks().slice(3, 500)
    expected = [(murmur2(k.encode()) & 0x7FFFFFFF) % 3 for k in keys.to_pylist()]
    assert partitions(keys, 3).tolist() == expected


def test_fraud_rate_and_typology_shares(joined: pd.DataFrame) -> None:
    fraud = joined[joined["is_fraud"]]
    assert abs(len(fraud) / len(joined) - CONFIG.fraud_rate) < 0.004
    shares = fraud["fraud_type"].value_counts(normalize=True)
    for kind, share in DEFAULT_SHARES.items():
        assert abs(shares.get(kind.value, 0.0) - share) < 0.02, kind


def test_labels_are_late_and_complete(joined: pd.DataFrame) -> None:
    assert joined["label_time"].notna().all()
    assert (joined["label_time"] >= joined["event_time"]).all()
    delay_days = (joined["label_time"] - joined["event_time"]).dt.total_seconds() / 86400
    by_kind = delay_days.groupby(joined["fraud_type"].fillna("legit")).median()
    assert by_kind[FraudType.STOLEN_CARD.value] > 10  # chargebacks take weeks
    assert by_kind["legit"] > 1
    assert delay_days.std() > 1  # a distribution, not a constant


def test_legit_balances_never_go_negative(history: History, joined: pd.DataFrame) -> None:
    clean_users = set(joined["user_id"]) - set(joined.loc[joined["is_fraud"], "user_id"])
    df = joined[joined["user_id"].isin(clean_users)].sort_values("event_time", kind="stable")
    sign = df["type"].map({"deposit": 1, "receive": 1, "buy": 1, "sell": -1, "send": -1, "withdrawal": -1})
    moves = [pd.DataFrame({"user_id": df["user_id"], "asset": df["asset"], "delta": sign * df["amount"]})]
    # Trades settle in the cash asset (USDC): balance-funded buys spend it, sells credit it.
    cash_buy = (df["type"] == "buy") & (df["payment_method"] == "balance")
    moves.append(
        pd.DataFrame({"user_id": df["user_id"][cash_buy], "asset": "USDC", "delta": -df["amount_usd"][cash_buy]})
    )
    sell = df["type"] == "sell"
    moves.append(pd.DataFrame({"user_id": df["user_id"][sell], "asset": "USDC", "delta": df["amount_usd"][sell]}))
    opening = history.opening_balances.to_pandas().rename(columns={"amount": "delta"})
    opening = opening[opening["user_id"].isin(clean_users)]
    ledger = pd.concat([opening, *[m.reset_index() for m in moves]], ignore_index=True)
    ledger["order"] = ledger["index"].map(pd.Series(np.arange(len(df)), index=df.index)).fillna(-1)
    ledger = ledger.sort_values("order", kind="stable")
    balance = ledger.groupby(["user_id", "asset"])["delta"].cumsum()
    assert len(clean_users) > 300
    assert balance.min() > -1e-6


def test_accounts_and_address_lists(history: History, joined: pd.DataFrame) -> None:
    accounts = history.accounts.to_pandas().set_index("user_id")
    assert set(joined["user_id"]) <= set(accounts.index)
    first = joined.groupby("user_id")["event_time"].min()
    assert (accounts.loc[first.index, "signup_time"] <= first).all()
    lists = history.address_lists.to_pandas()
    assert set(lists["list_name"]) == {"sanctions", "mixer"}
    assert (lists["listed_time"] < CONFIG.start).any() and (lists["listed_time"] >= CONFIG.start).any()
    exposure = joined[joined["fraud_type"] == FraudType.SANCTIONED_EXPOSURE.value]
    counterparty = exposure["destination_address"].fillna(exposure["source_address"])
    assert counterparty.isin(lists["address"]).all()


def test_no_single_field_separates_fraud(joined: pd.DataFrame, history: History) -> None:
    legit = joined[~joined["is_fraud"]]
    residence = history.accounts.to_pandas().set_index("user_id")["country_of_residence"]
    abroad = legit["country"] != legit["user_id"].map(residence)
    assert abroad.mean() > 0.01  # travel and VPNs
    on_chain = legit.dropna(subset=["destination_address"])
    fresh = ~on_chain.duplicated(["user_id", "destination_address"])
    assert fresh.mean() > 0.2  # new addresses
    devices = legit.groupby("user_id")["device_id"].nunique()
    assert (devices > 2).mean() > 0.05  # new phones and browsers
    assert (legit["amount_usd"] > 10_000).sum() > 0  # large legitimate moves
    assert (legit["payment_method"] == "card").sum() > 0
    for col in ("type", "asset", "channel", "payment_method"):
        fraud_values = set(joined.loc[joined["is_fraud"], col])
        assert fraud_values <= set(legit[col]), col


@pytest.mark.data
def test_quality_suites_pass_and_catch_bad_frames(history: History) -> None:
    from data_quality.runner import validate
    from pipelines.simulate import fraud_rate_bounds, validate_history

    report = validate_history(history, CONFIG.fraud_rate)
    assert all("PASSED" in line for line in report)
    tx = history.transactions.to_pandas().head(2000).copy()
    tx.loc[3, "amount"] = -5.0
    tx.loc[5, "transaction_id"] = tx.loc[6, "transaction_id"]
    bad = validate(tx, "raw_transactions")
    assert not bad.success
    failed = {(f.expectation, f.column) for f in bad.failures}
    assert ("expect_column_values_to_be_between", "amount") in failed
    assert ("expect_column_values_to_be_unique", "transaction_id") in failed
    labels = history.labels.to_pandas().merge(history.transactions.to_pandas()[["transaction_id", "event_time"]])
    labels["is_fraud"] = True
    labels["fraud_type"] = "bust_out"
    lo, hi = fraud_rate_bounds(CONFIG.fraud_rate, len(labels))
    result = validate(labels, "raw_labels", min_fraud_rate=lo, max_fraud_rate=hi)
    assert [f.expectation for f in result.failures] == ["expect_column_mean_to_be_between"]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path))
    yield tmp_path


@pytest.mark.data
def test_cli_writes_parquet_and_fails_loudly(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fraud.cli import app

    out = cli_env / "sim"
    args = ["simulate", "--users", "200", "--days", "10", "--seed", "3", "--to", "parquet", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name, schema in [("transactions", TRANSACTION_SCHEMA), ("labels", LABEL_SCHEMA)]:
        assert pq.read_schema(out / f"{name}.parquet").equals(schema)
    assert pq.read_schema(out / "accounts.parquet").equals(ACCOUNT_SCHEMA)
    assert pq.read_schema(out / "address_lists.parquet").equals(ADDRESS_LIST_SCHEMA)
    monkeypatch.setattr("pipelines.simulate.fraud_rate_bounds", lambda rate, rows: (0.4, 0.5))
    failed = CliRunner().invoke(app, [*args[:-1], str(cli_env / "never")])
    assert failed.exit_code == 1
    assert "raw_labels: FAILED" in failed.output
    assert not (cli_env / "never").exists()
