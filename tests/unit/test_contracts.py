"""The Transaction and FraudLabel contracts reject bad events instead of coercing them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from fraud.contracts import FraudLabel, Transaction


def valid_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "transaction_id": "tx_0001",
        "event_time": datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
        "user_id": "usr_0001",
        "type": "send",
        "asset": "BTC",
        "amount": 0.05,
        "amount_usd": 3200.0,
        "payment_method": "crypto",
        "destination_address": "bc1qexampleexampleexampleexampleexample00",
        "device_id": "dev_0001",
        "ip_address": "81.2.69.160",
        "country": "GB",
        "channel": "web",
    }
    return event | changes


def test_accepts_a_valid_event() -> None:
    txn = Transaction.model_validate(valid_event())
    assert txn.asset.value == "BTC"
    assert txn.event_time.tzinfo is not None
    assert Transaction.model_validate_json(txn.model_dump_json()) == txn


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"asset": "DOGE"}, "asset"),
        ({"amount": -1.0}, "amount"),
        ({"amount": 0.0}, "amount"),
        ({"event_time": datetime(2025, 1, 1, 12, 0)}, "event_time"),
        ({"surprise": 1}, "surprise"),
        ({"ip_address": "300.1.1.1"}, "ip_address"),
        ({"country": "gb"}, "country"),
        ({"amount": "0.05"}, "amount"),
    ],
)
def test_rejects_bad_events(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Transaction.model_validate(valid_event(**change))
    assert field in str(info.value)


def test_on_chain_moves_need_their_address() -> None:
    with pytest.raises(ValidationError, match="destination_address"):
        Transaction.model_validate(valid_event(destination_address=None))
    with pytest.raises(ValidationError, match="source_address"):
        Transaction.model_validate(valid_event(type="receive", destination_address=None))


def test_label_type_must_match_verdict() -> None:
    when = datetime(2025, 1, 5, tzinfo=UTC)
    FraudLabel(transaction_id="tx_1", is_fraud=True, fraud_type="stolen_card", label_time=when)
    FraudLabel(transaction_id="tx_1", is_fraud=False, label_time=when)
    with pytest.raises(ValidationError):
        FraudLabel(transaction_id="tx_1", is_fraud=True, label_time=when)
    with pytest.raises(ValidationError):
        FraudLabel(transaction_id="tx_1", is_fraud=False, fraud_type="bust_out", label_time=when)


def test_table_validation_agrees_with_the_event_model_row_by_row() -> None:
    """`validate_transactions_frame` (vectorised, for history files) accepts exactly what the model does."""
    import numpy as np
    import pandas as pd
    from pydantic import ValidationError

    from fraud.contracts import Transaction, validate_transactions_frame
    from tests.factories import history

    rows = history(n=200, seed=12).assign(event_time=lambda d: d.event_time.map(pd.Timestamp.isoformat))
    rng = np.random.default_rng(1)
    defects = [
        ("asset", "DOGE"),
        ("amount", -1.0),
        ("amount", 0.0),
        ("amount_usd", float("inf")),
        ("event_time", "2026-01-01T00:00:00"),
        ("event_time", "yesterday"),
        ("country", "Germany"),
        ("ip_address", "300.1.1.1"),
        ("type", "transfer"),
        ("channel", None),
        ("user_id", None),
    ]
    rows = rows.astype(object)
    for i in rng.choice(len(rows), 80, replace=False):
        col, value = defects[i % len(defects)]
        rows.at[i, col] = value
    rows.loc[rows["type"] == "send", "destination_address"] = rows["destination_address"].where(
        rng.random(len(rows)) > 0.2, None
    )
    good, rejected = validate_transactions_frame(rows)
    accepted = set()
    for record in rows.to_dict("records"):
        clean = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
        try:
            Transaction.model_validate(clean)
            accepted.add(record["transaction_id"])
        except ValidationError:
            pass
    assert set(good["transaction_id"]) == accepted
    assert len(good) + len(rejected) == len(rows)
    assert rejected["error"].str.len().gt(0).all()
