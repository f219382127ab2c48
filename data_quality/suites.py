"""Every Great Expectations suite of the project, one builder per pipeline stage.

A builder returns a fresh `ExpectationSuite`; `data_quality.runner.validate` runs it on a DataFrame.
Stages: raw events (simulator, ingest micro-batches), feature-view rows, training sets, scoring traffic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import great_expectations as gx
from great_expectations.expectations.row_conditions import Column

from data_quality.traffic import BASE_COLUMNS, DECISIONS
from fraud import features as F
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


def ingest_batch(
    max_skew_hours: float = 24.0 * 400, now: datetime | None = None, max_ahead_hours: float = 1.0
) -> gx.ExpectationSuite:
    """One streaming micro-batch (events already passed the contract one by one): batch-level checks only.

    Duplicates, null rates of the identity fields, value ranges and event-time skew against the clock,
    on `data_quality.batch_check.INGEST_BATCH_COLUMNS` only. A handful of expectations: about 0.1 s a
    batch, mostly GX's fixed cost, which the ingest overlaps with the feature update (`BatchCheck`).
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
            max_value=now + timedelta(hours=max_ahead_hours),
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


def _monotone(names: list[str]) -> list[Any]:
    """Each column is at least the previous one (wider windows hold more): A >= B pairwise."""
    return [
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A=wide, column_B=narrow, or_equal=True)
        for narrow, wide in itertools.pairwise(names)
    ]


def user_features(max_mean_txn_count_24h: float = 200.0, min_rows: int = 1) -> gx.ExpectationSuite:
    """User features at transactions' instants (`features_frame`): schema, counts consistent across
    windows, no time at or after the transaction (that would be leakage).

    Each row holds a user's features over the events strictly before its transaction: empty (null)
    where the user has none, never a count below zero, and the last event strictly before it."""
    windows = list(F.WINDOWS)
    suite = gx.ExpectationSuite(name="user_features")
    counts = [f"txn_count_{w}" for w in windows]
    sums = [f"usd_sum_{w}" for w in windows]
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(
            column_set=["user_id", "event_time", *F.user_feature_names()], exact_match=False
        ),
        E.ExpectTableRowCountToBeBetween(min_value=min_rows),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ["user_id", "event_time"]),
        *(
            E.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in [*counts, *sums, "usd_mean_30d", "usd_std_30d"]
        ),
        E.ExpectColumnValuesToBeBetween(column="txn_count_total", min_value=1),
        *_monotone(counts),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="txn_count_total", column_B="txn_count_30d", or_equal=True),
        *(
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=f"txn_count_{w}", column_B=f"distinct_{d}_{w}", or_equal=True
            )
            for w in windows
            for d in F.DISTINCT_USER_FIELDS
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="event_time", column_B="last_event_time", or_equal=False, ignore_row_if="either_value_is_missing"
        ),
        E.ExpectColumnMeanToBeBetween(column="txn_count_24h", min_value=0, max_value=max_mean_txn_count_24h),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def counterparty_features(kind: str = "address", min_rows: int = 1) -> gx.ExpectationSuite:
    """A counterparty's features (address, device or ip) at transactions' instants: the same checks,
    and fraud rates that are shares within [0, 1]."""
    key = F.COUNTERPARTIES[kind]
    suite = gx.ExpectationSuite(name=f"{kind}_features")
    counts = [f"{kind}_txn_count_{w}" for w in F.SHORT_WINDOWS]
    users = [f"{kind}_distinct_users_{w}" for w in F.SHORT_WINDOWS]
    frauds = [f"{kind}_fraud_count_{w}" for w in F.RISK_WINDOWS]
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(
            column_set=[key, "event_time", *F.counterparty_feature_names(kind)], exact_match=False
        ),
        E.ExpectTableRowCountToBeBetween(min_value=min_rows),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in [key, "event_time"]),
        *(E.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in [*counts, *users, *frauds]),
        *(  # a share of the window's transactions (smoothed), never above 1
            E.ExpectColumnValuesToBeBetween(column=f"{kind}_fraud_rate_{w}", min_value=0, max_value=1)
            for w in F.RISK_WINDOWS
        ),
        *_monotone(counts),
        *_monotone(users),
        *_monotone(frauds),
        *(
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A=c, column_B=u, or_equal=True)
            for c, u in zip(counts, users, strict=True)
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="event_time",
            column_B=f"{kind}_first_seen",
            or_equal=False,
            ignore_row_if="either_value_is_missing",
        ),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def features_frame(transactions: Any, labels: Any = None) -> Any:
    """Each transaction's key columns with every entity feature at its instant (what the user and
    counterparty suites validate): `fraud.aggregates.features_at` over the transactions themselves."""
    from fraud import aggregates as A

    keys = transactions[["transaction_id", "event_time", "user_id", *F.COUNTERPARTIES.values()]]
    return keys.join(A.features_at(transactions, labels, transactions))


def scoring_traffic(
    min_rows: int = 1,
    max_decline_rate: float = 0.2,
    max_degraded_rate: float = 0.05,
    max_missing_rate: float = 0.5,
) -> gx.ExpectationSuite:
    """A window of scored traffic (`data_quality.traffic.traffic_frame` of `fraud-scores` records).

    Scores are probabilities, decisions from the rule's set, declines and degraded scoring bounded,
    request features always present, stored features missing for at most `max_missing_rate` of the
    rows, and no feature time after the transaction (ages and gaps are never negative).
    """
    suite = gx.ExpectationSuite(name="scoring_traffic")
    # request features that every transaction has (the "new ..." flags and ages come from stored rows)
    request = F.REQUEST_FEATURES[: F.REQUEST_FEATURES.index("is_onchain") + 1]
    ages = ["seconds_since_prev_txn", "account_age_days", "address_age_days", "device_age_days", "ip_age_days"]
    expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=[*BASE_COLUMNS, *F.model_feature_names()], exact_match=False),
        E.ExpectTableRowCountToBeBetween(min_value=min_rows),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ["transaction_id", "scored_at", "model_version", "score"]),
        E.ExpectColumnValuesToBeUnique(column="transaction_id"),
        E.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0),
        E.ExpectColumnValuesToBeInSet(column="decision", value_set=list(DECISIONS)),
        E.ExpectColumnValuesToBeInSet(
            column="decision", value_set=["approve", "review"], mostly=max(1.0 - max_decline_rate, 1e-9)
        ),
        E.ExpectColumnMeanToBeBetween(column="degraded", min_value=0.0, max_value=max_degraded_rate),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in request),
        E.ExpectColumnValuesToBeBetween(column="amount_usd", min_value=0, max_value=MAX_AMOUNT_USD),
        E.ExpectColumnValuesToNotBeNull(column="txn_count_total", mostly=max(1.0 - max_missing_rate, 1e-9)),
        *(E.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ages),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def training_set(
    min_rows: int = 100,
    min_fraud_rate: float = 0.001,
    max_fraud_rate: float = 0.2,
    max_missing_user_rate: float = 0.5,
) -> gx.ExpectationSuite:
    """A point-in-time training set (`training_set_frame`): labels, nulls, ranges, unique rows, no future.

    Every stored time a row saw (the user's last event, counterparties' first sighting, signup) must be
    strictly before its transaction, and its label at or after it. The ~100 count and rate features
    are checked through their row-wise extremes, one expectation each at a million rows: no count or
    rate below 0, and no fraud rate above 1 (a rate is the smoothed share of the window's
    transactions confirmed fraud, `fraud.features.counterparty_features`).
    """
    suite = gx.ExpectationSuite(name="training_set")
    expectations: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=min_rows),
        E.ExpectColumnValuesToBeUnique(column="transaction_id"),
        *(
            E.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("transaction_id", "event_time", "label_time", "is_fraud", *_TRAINING_REQUEST)
        ),
        E.ExpectColumnMeanToBeBetween(column="is_fraud", min_value=min_fraud_rate, max_value=max_fraud_rate),
        E.ExpectColumnValuesToNotBeNull(column="txn_count_total", mostly=max(1.0 - max_missing_user_rate, 1e-9)),
        E.ExpectColumnValuesToBeBetween(column="amount_usd", min_value=0, max_value=MAX_AMOUNT_USD),
        E.ExpectColumnValuesToBeBetween(column="min_count_feature", min_value=0),
        E.ExpectColumnValuesToBeBetween(column="min_fraud_rate_feature", min_value=0),
        E.ExpectColumnValuesToBeBetween(column="max_fraud_rate_feature", max_value=1),
        *(E.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1]) for c in _TRAINING_FLAGS),
        *(E.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in _TRAINING_AGES),
        E.ExpectColumnValuesToBeBetween(column="seconds_since_prev_txn", min_value=0, strict_min=True),
        *(
            E.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="event_time", column_B=c, or_equal=False, ignore_row_if="either_value_is_missing"
            )
            for c in _TRAINING_PAST
        ),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="label_time", column_B="event_time", or_equal=True),
    ]
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


_TRAINING_REQUEST = ["amount_usd", "type_code", "asset_code", "payment_method_code", "channel_code", "hour_of_day"]
_TRAINING_FLAGS = ["new_device", "new_ip", "new_country", "new_dest_address", "is_outgoing", "is_onchain"]
_TRAINING_AGES = ["account_age_days", "address_age_days", "device_age_days", "ip_age_days"]
_TRAINING_PAST = ["last_event_time", "signup_time", *(f"{k}_first_seen" for k in F.COUNTERPARTIES)]


def training_set_frame(frame: Any) -> Any:
    """The slice of a training frame that `training_set` validates, with row-wise extremes of counts and rates."""
    import numpy as np

    names = F.model_feature_names()
    counts = [n for n in names if "_count_" in n or n.startswith("distinct_") or "_distinct_users_" in n]
    rates = [n for n in names if "_fraud_rate_" in n]
    keep = ["transaction_id", "event_time", "label_time", "txn_count_total", "seconds_since_prev_txn"]
    out = frame[list(dict.fromkeys([*keep, *_TRAINING_REQUEST, *_TRAINING_FLAGS, *_TRAINING_AGES, *_TRAINING_PAST]))]
    out = out.copy()
    out["is_fraud"] = frame["is_fraud"].astype(np.int64)
    with np.errstate(all="ignore"):
        count_values = frame[counts].to_numpy(dtype=np.float64)
        rate_values = frame[rates].to_numpy(dtype=np.float64)
        out["min_count_feature"] = np.nanmin(np.where(np.isnan(count_values), np.inf, count_values), axis=1)
        out["min_fraud_rate_feature"] = np.nanmin(np.where(np.isnan(rate_values), np.inf, rate_values), axis=1)
        out["max_fraud_rate_feature"] = np.nanmax(np.where(np.isnan(rate_values), -np.inf, rate_values), axis=1)
    for col in ("min_count_feature", "min_fraud_rate_feature", "max_fraud_rate_feature"):
        out[col] = out[col].replace([np.inf, -np.inf], np.nan).to_numpy()
    return out


# Suite name -> builder. Add feature and training-set suites here.
SUITES: dict[str, Callable[..., gx.ExpectationSuite]] = {
    "raw_transactions": raw_transactions,
    "raw_labels": raw_labels,
    "ingest_batch": ingest_batch,
    "user_features": user_features,
    "counterparty_features": counterparty_features,
    "scoring_traffic": scoring_traffic,
    "training_set": training_set,
}
