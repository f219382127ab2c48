"""Every Great Expectations suite of the project, one builder per pipeline stage.

A builder returns a fresh `ExpectationSuite`; `data_quality.runner.validate` runs it on a DataFrame.
Stages: raw events (simulator, ingest micro-batches); features and training sets are added beside.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import great_expectations as gx
from great_expectations.expectations.row_conditions import Column

from fraud.contracts import (
    SCHEMA_VERSION,
    TRANSACTION_SCHEMA,
    Asset,
    Channel,
    FraudType,
    PaymentMethod,
    TransactionType,
)

E = gx.expectations
# Largest single transaction a real exchange would plausibly see (USD); above this is a data bug.
MAX_AMOUNT_USD = 50_000_000.0
IP_PATTERN = r"^(?:\d{1,3}\.){3}\d{1,3}$|^[0-9a-fA-F:]+$"


def _transaction_expectations(min_rows: int) -> list[Any]:
    """The expectations every table of transaction events meets (history files and micro-batches)."""
    columns = [f.name for f in TRANSACTION_SCHEMA]
    required = [c for c in columns if c not in ("destination_address", "source_address")]
    on_chain_out = Column("type").is_in([TransactionType.SEND.value]) | (
        (Column("type") == TransactionType.WITHDRAWAL.value) & (Column("payment_method") == "crypto")
    )
    on_chain_in = Column("type").is_in([TransactionType.RECEIVE.value]) | (
        (Column("type") == TransactionType.DEPOSIT.value) & (Column("payment_method") == "crypto")
    )
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        E.ExpectTableRowCountToBeBetween(min_value=min_rows),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in required),
        E.ExpectColumnValuesToBeUnique(column="transaction_id"),
        E.ExpectColumnValuesToBeInSet(column="schema_version", value_set=[SCHEMA_VERSION]),
        E.ExpectColumnValuesToBeInSet(column="type", value_set=[t.value for t in TransactionType]),
        E.ExpectColumnValuesToBeInSet(column="asset", value_set=[a.value for a in Asset]),
        E.ExpectColumnValuesToBeInSet(column="payment_method", value_set=[p.value for p in PaymentMethod]),
        E.ExpectColumnValuesToBeInSet(column="channel", value_set=[c.value for c in Channel]),
        E.ExpectColumnValuesToBeBetween(column="amount", min_value=0, strict_min=True),
        E.ExpectColumnValuesToBeBetween(column="amount_usd", min_value=0, max_value=MAX_AMOUNT_USD),
        E.ExpectColumnValueLengthsToEqual(column="country", value=2),
        E.ExpectColumnValuesToMatchRegex(column="ip_address", regex=IP_PATTERN),
        E.ExpectColumnValuesToNotBeNull(column="destination_address", row_condition=on_chain_out),
        E.ExpectColumnValuesToNotBeNull(column="source_address", row_condition=on_chain_in),
    ]
    return expectations


def raw_transactions(min_rows: int = 1) -> gx.ExpectationSuite:
    """Transaction events as produced to `transactions` or written as history."""
    suite = gx.ExpectationSuite(name="raw_transactions")
    for expectation in _transaction_expectations(min_rows):
        suite.add_expectation(expectation)
    return suite


def ingest_batch(max_skew_hours: float = 24.0 * 400, now: datetime | None = None) -> gx.ExpectationSuite:
    """One streaming micro-batch (events already passed the contract one by one): batch-level checks only.

    Duplicates, null rates of the identity fields, value ranges and event-time skew against the clock.
    A handful of expectations, so the check costs milliseconds per batch.
    """
    suite = gx.ExpectationSuite(name="ingest_batch")
    now = now or datetime.now(UTC)
    expectations: list[Any] = [
        E.ExpectColumnValuesToBeUnique(column="transaction_id"),
        *(E.ExpectColumnValuesToNotBeNull(column=c, mostly=0.99) for c in ("device_id", "ip_address", "country")),
        E.ExpectColumnValuesToBeBetween(column="amount_usd", min_value=0, max_value=MAX_AMOUNT_USD),
        E.ExpectColumnValuesToBeBetween(
            column="event_time",
            min_value=now - timedelta(hours=max_skew_hours),
            max_value=now + timedelta(hours=1),
        ),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def raw_labels(min_fraud_rate: float = 0.001, max_fraud_rate: float = 0.2) -> gx.ExpectationSuite:
    """Fraud labels joined with their transaction's `event_time` (labels never precede events)."""
    suite = gx.ExpectationSuite(name="raw_labels")
    expectations: list[Any] = [
        *(
            E.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("transaction_id", "is_fraud", "label_time", "event_time")
        ),
        E.ExpectColumnValuesToBeUnique(column="transaction_id"),
        E.ExpectColumnValuesToBeInSet(column="fraud_type", value_set=[t.value for t in FraudType]),
        E.ExpectColumnValuesToNotBeNull(column="fraud_type", row_condition=Column("is_fraud") == True),  # noqa: E712
        E.ExpectColumnValuesToBeNull(column="fraud_type", row_condition=Column("is_fraud") == False),  # noqa: E712
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="label_time", column_B="event_time", or_equal=True),
        E.ExpectColumnMeanToBeBetween(column="is_fraud", min_value=min_fraud_rate, max_value=max_fraud_rate),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


# Suite name -> builder. Add feature and training-set suites here.
SUITES: dict[str, Callable[..., gx.ExpectationSuite]] = {
    "raw_transactions": raw_transactions,
    "raw_labels": raw_labels,
    "ingest_batch": ingest_batch,
}
