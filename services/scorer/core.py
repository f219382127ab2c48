"""The scorer's pure core: transactions plus their online feature rows in, scores, decisions and reasons out.

No I/O. Features come from `fraud.features` (`request_columns`, `model_array`), the code training
uses, so the model sees the same values for a transaction online as it saw offline; the scorer hands
it plain numpy columns because a DataFrame per request would cost more than the features.

Reason codes are LightGBM's per-feature contributions (TreeSHAP, in raw-score units): they sum with
the base value to the model's raw score, which the calibration maps to the probability served as
`score`. TreeSHAP costs about 100x a prediction (about 2 ms a row for a 400-tree model), so the raw
score comes from `predict` and contributions are computed only for the transactions that need a
reason: every review and decline, and any transaction whose caller asks (`explain`). With the
`explain_all` policy every transaction is explained. Scoring and explaining are two steps
(`score_batch(..., reasons=False)`, then `add_reasons`) so the scorer can run the costly one on a
helper thread, where it holds up no other request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from feature_repo.repo import ALL_VIEWS, KIND_OF_VIEW, is_array, state_fields
from fraud import aggregates as A
from fraud import features as F
from fraud.contracts import Transaction

# Which request field holds each view's entity key (a transaction without it has no row to miss).
VIEW_KEYS: dict[str, str] = {view: entity.join_key for view, (entity, _) in ALL_VIEWS.items()}
TIME_FEATURES = frozenset(n for n in F.stored_feature_names() if n.endswith(("_time", "_first_seen")))
MODEL_FEATURES = F.model_feature_names()


class ScoringModel(Protocol):
    """What the core needs from a model: its inputs, contributions, calibration and decision rule."""

    @property
    def version(self) -> str: ...

    @property
    def feature_names(self) -> list[str]: ...

    def margin(self, X: np.ndarray) -> np.ndarray:
        """The raw score (log-odds before calibration)."""
        ...

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score, with the base value as the last column."""
        ...

    def proba_from_margin(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for raw scores."""
        ...

    def decide(self, p: np.ndarray) -> list[str]:
        """approve / review / decline for probabilities."""
        ...


@dataclass(frozen=True)
class OnlineRows:
    """What the online store returned for a batch, aligned with its transactions.

    `values` maps each stored feature to one value per transaction: a numpy column (NaN/NaT/None
    where absent) or a list (None where absent); `as_of`
    maps each view to the event time of the row read per transaction (None: no row).
    """

    values: Mapping[str, np.ndarray | Sequence[Any]]
    as_of: Mapping[str, Sequence[datetime | None]]
    degraded: bool = False

    @classmethod
    def unavailable(cls, n: int) -> OnlineRows:
        """No online features at all (store unreachable): every stored feature missing."""
        return cls(values={}, as_of={view: [None] * n for view in ALL_VIEWS}, degraded=True)


@dataclass(frozen=True)
class Reason:
    code: str
    description: str
    value: float | None
    contribution: float


@dataclass(frozen=True)
class Freshness:
    as_of: datetime
    age_seconds: float


@dataclass
class Scored:
    """One transaction's result: what the response and the audit record are built from."""

    transaction: Transaction
    score: float
    decision: str
    raw_score: float
    explained: bool
    base_value: float | None
    reasons: list[Reason]
    other_contribution: float | None
    degraded: bool
    missing: list[str]
    freshness: dict[str, Freshness]
    model_version: str
    features: np.ndarray = field(repr=False)
    needs_reasons: bool = False  # flagged or asked for, reasons not computed yet (see `add_reasons`)
    model: ScoringModel | None = field(default=None, repr=False)  # the model that scored it, which must explain it


# ---------------------------------------------------------------------------------------------
# Plain-word names of the model's features (reason codes are read by analysts and customers).

_WINDOW_WORDS = {"1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days", "30d": "the last 30 days"}
_TYPE_PLURAL = {
    "deposit": "deposits",
    "withdrawal": "withdrawals",
    "buy": "buys",
    "sell": "sells",
    "send": "sends",
    "receive": "receives",
}
_DISTINCT_WORDS = {
    "devices": "devices",
    "ips": "IP addresses",
    "countries": "countries",
    "dest_addresses": "destination addresses",
}
_KIND_WORDS = {"address": "this destination address", "device": "this device", "ip": "this IP address"}
_FIXED: dict[str, str] = {
    "usd_mean_30d": "the user's average transaction size over 30 days",
    "usd_std_30d": "how much the user's transaction sizes vary over 30 days",
    "txn_count_total": "the user's number of transactions ever",
    "kyc_tier": "the user's identity-verification (KYC) tier",
    "on_sanctions_list": "destination address on a sanctions list",
    "on_mixer_list": "destination address is a known mixer",
    "amount_usd": "transaction amount in USD",
    "log_amount_usd": "transaction amount in USD (log scale)",
    "type_code": "transaction type",
    "asset_code": "asset moved",
    "payment_method_code": "payment method",
    "channel_code": "channel (web, app or API)",
    "hour_of_day": "hour of the day (UTC)",
    "day_of_week": "day of the week",
    "is_outgoing": "money leaving the account",
    "is_onchain": "on-chain transfer",
    "new_device": "new device for this user",
    "new_ip": "new IP address for this user",
    "new_country": "new country for this user",
    "new_dest_address": "new destination address for this user",
    "seconds_since_prev_txn": "time since the user's previous transaction",
    "account_age_days": "age of the account",
    "amount_z_30d": "amount far from the user's 30-day mean (in standard deviations)",
    "amount_to_mean_30d": "amount as a multiple of the user's 30-day mean",
    "balance_share_leaving": "share of the user's balance leaving in this transaction",
    "address_age_days": "how long the destination address has been known",
    "device_age_days": "how long the device has been known",
    "ip_age_days": "how long the IP address has been known",
}


def describe(feature: str) -> str:
    """A plain-words name for a model feature (falls back to the name itself, never fails)."""
    if feature in _FIXED:
        return _FIXED[feature]
    head, _, window = feature.rpartition("_")
    when = _WINDOW_WORDS.get(window)
    if feature.startswith("balance_"):
        return f"the user's {feature.removeprefix('balance_')} balance"
    if when is None:
        return feature.replace("_", " ")
    if head == "txn_count":
        return f"the user's number of transactions in {when}"
    if head == "usd_sum":
        return f"the user's USD volume in {when}"
    if head.startswith("distinct_"):
        return f"distinct {_DISTINCT_WORDS.get(head.removeprefix('distinct_'), head)} the user used in {when}"
    kind, _, rest = head.partition("_")
    if kind in _KIND_WORDS:
        target = _KIND_WORDS[kind]
        if rest == "txn_count":
            return f"transactions involving {target} in {when}"
        if rest == "distinct_users":
            return f"distinct users of {target} in {when}"
        if rest == "fraud_count":
            return f"confirmed frauds involving {target} in {when}"
        if rest == "fraud_rate":
            return f"share of {target}'s transactions confirmed as fraud in {when}"
    typ, _, measure = head.partition("_")
    if typ in _TYPE_PLURAL and measure == "count":
        return f"the user's number of {_TYPE_PLURAL[typ]} in {when}"
    if typ in _TYPE_PLURAL and measure == "usd":
        return f"USD the user moved in {_TYPE_PLURAL[typ]} in {when}"
    return feature.replace("_", " ")


# ---------------------------------------------------------------------------------------------
# Scoring.


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TEXT_FIELDS = ("device_id", "ip_address", "country", "destination_address", "source_address")
_ENUM_FIELDS = ("type", "asset", "payment_method", "channel")


def _datetime64(values: Sequence[datetime | None]) -> np.ndarray:
    """Aware datetimes as UTC datetime64[us] (NaT for None)."""
    out = np.empty(len(values), dtype="datetime64[us]")
    for i, v in enumerate(values):
        out[i] = np.datetime64("NaT") if v is None else np.datetime64((v - _EPOCH) // _US, "us")
    return out


def transaction_columns(txns: Sequence[Transaction]) -> dict[str, np.ndarray]:
    """The request fields the feature code reads, as numpy columns."""
    cols: dict[str, np.ndarray] = {"event_time": _datetime64([t.event_time for t in txns])}
    cols["amount"] = np.array([float(t.amount) for t in txns], dtype=np.float64)
    cols["amount_usd"] = np.array([float(t.amount_usd) for t in txns], dtype=np.float64)
    for name in _ENUM_FIELDS:
        cols[name] = np.array([getattr(t, name).value for t in txns], dtype=object)
    for name in _TEXT_FIELDS:
        cols[name] = np.array([getattr(t, name) for t in txns], dtype=object)
    return cols


def stored_columns(rows: OnlineRows, tx: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every stored feature at the requests' instants, as numpy columns (NaN/NaT where missing).

    Entity features are finished from the streaming views' state at each request's event time, by
    `fraud.aggregates` (the functions training evaluates over the history); reference features
    (signup, KYC tier, lists) are taken as read. Plain Python lists (None where missing) are converted."""
    n = len(tx["event_time"])
    state: dict[str, list[A.Row | None]] = {}
    for kind in KIND_OF_VIEW.values():
        held = [rows.values.get(f) for f in state_fields(kind)]
        events, carry = held[0], held[1]
        labels = held[2] if len(held) > 2 else None
        state[kind] = [
            None
            if events is None or events[i] is None or carry is None or carry[i] is None
            else (events[i], carry[i], None if labels is None else labels[i])
            for i in range(n)
        ]
    tq = tx["event_time"].astype("datetime64[us]").astype(np.int64)
    own_fields = list(F.DISTINCT_USER_FIELDS.items())
    hashed = A.key_hash(np.concatenate([tx[f] for _, f in own_fields])).reshape(len(own_fields), n)  # one call
    own = {name: hashed[k] for k, (name, _) in enumerate(own_fields)}
    cols = A.features_of_rows(state, tq, own)
    for name, values in rows.values.items():
        if is_array(name):
            continue
        if isinstance(values, np.ndarray):
            cols[name] = values
        elif name in TIME_FEATURES:
            cols[name] = _datetime64(values)
        else:
            cols[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return cols


def model_inputs(txns: Sequence[Transaction], rows: OnlineRows) -> np.ndarray:
    """The model matrix for a batch (`fraud.features.model_feature_names()` columns)."""
    tx = transaction_columns(txns)
    stored = stored_columns(rows, tx)
    return F.model_array(stored, F.request_columns(tx, stored))


def missing_groups(txn: Transaction, rows: OnlineRows, i: int) -> list[str]:
    """The feature groups (views) that apply to this transaction but had no online row."""
    out = []
    for view, key in VIEW_KEYS.items():
        if getattr(txn, key) is None:
            continue  # e.g. no destination address: the address views do not apply
        as_of = rows.as_of.get(view)
        if as_of is None or as_of[i] is None:
            out.append(view)
    return out


def freshness(txn: Transaction, rows: OnlineRows, i: int) -> dict[str, Freshness]:
    """Per view read, when its row was written (event time) and how old it was at the transaction."""
    out = {}
    for view, stamps in rows.as_of.items():
        ts = stamps[i]
        if ts is not None:
            out[view] = Freshness(as_of=ts, age_seconds=(txn.event_time - ts).total_seconds())
    return out


def top_reasons(names: Sequence[str], contrib: np.ndarray, values: np.ndarray, k: int) -> list[Reason]:
    """The k features that pushed the raw score up most (positive contributions only), largest first."""
    if k <= 0 or contrib.size == 0:
        return []
    k = min(k, contrib.size)
    idx = np.argpartition(-contrib, k - 1)[:k]
    idx = idx[np.argsort(-contrib[idx], kind="stable")]
    out = []
    for j in idx:
        c = float(contrib[j])
        if c <= 0.0:
            break
        v = float(values[j])
        out.append(Reason(names[j], describe(names[j]), None if math.isnan(v) else v, c))
    return out


def score_batch(
    model: ScoringModel,
    txns: Sequence[Transaction],
    rows: OnlineRows,
    top_k: int = 3,
    explain: Sequence[bool] | None = None,
    reasons: bool = True,
) -> list[Scored]:
    """Score a batch: one feature pass and one `predict`; contributions for the rows that need reasons.

    A row needs reasons when its decision is review or decline, or when `explain[i]` is true. With
    `reasons=False` such rows come back with `needs_reasons` set and no reasons yet, for `add_reasons`.
    """
    if not txns:
        return []
    if list(model.feature_names) != MODEL_FEATURES:
        raise ValueError("the model's feature list differs from fraud.features.model_feature_names()")
    matrix = model_inputs(txns, rows)
    margin = np.asarray(model.margin(matrix), dtype=np.float64)
    p = np.asarray(model.proba_from_margin(margin), dtype=np.float64)
    decisions = model.decide(p)
    out = [
        Scored(
            transaction=txn,
            score=float(p[i]),
            decision=str(decisions[i]),
            raw_score=float(margin[i]),
            explained=False,
            base_value=None,
            reasons=[],
            other_contribution=None,
            degraded=rows.degraded,
            missing=missing_groups(txn, rows, i),
            freshness=freshness(txn, rows, i),
            model_version=model.version,
            features=matrix[i],
            needs_reasons=decisions[i] != "approve" or bool(explain and explain[i]),
            model=model,
        )
        for i, txn in enumerate(txns)
    ]
    if reasons:
        add_reasons([s for s in out if s.needs_reasons], top_k)
    return out


def add_reasons(scored: Sequence[Scored], top_k: int = 3) -> None:
    """Explain scored rows in place: one `contributions` call per model that scored them, the top `top_k`
    reasons, the base value and the rest (so base + reasons + other = raw score)."""
    by_model: dict[int, tuple[ScoringModel, list[Scored]]] = {}
    for s in scored:
        if s.model is None:
            raise ValueError(f"{s.transaction.transaction_id}: no model to explain it with")
        by_model.setdefault(id(s.model), (s.model, []))[1].append(s)
    for model, group in by_model.values():
        block = np.asarray(model.contributions(np.vstack([s.features for s in group])), dtype=np.float64)
        for s, c in zip(group, block, strict=True):
            s.reasons = top_reasons(MODEL_FEATURES, c[:-1], s.features, top_k)
            s.base_value = float(c[-1])
            s.other_contribution = s.raw_score - s.base_value - sum(r.contribution for r in s.reasons)
            s.explained, s.needs_reasons = True, False


def warm_up(model: ScoringModel | None) -> None:
    """Score a made-up withdrawal once, with reasons, so the scoring path's one-off costs are paid before
    the first request: numba loads (or compiles) the window kernels (~0.5 s and ~50k Python objects
    here), LightGBM makes its first calls. The lifespan then freezes the collector over all of it; left
    to the first request, those objects stayed young and every full collection walked them."""
    txn = Transaction(
        transaction_id="warm-up",
        event_time=datetime.now(UTC),
        user_id="warm-up",
        type="withdrawal",
        asset="BTC",
        amount=0.01,
        amount_usd=1000.0,
        payment_method="crypto",
        destination_address="warm-up",
        device_id="warm-up",
        ip_address="192.0.2.1",
        country="US",
        channel="web",
    )
    rows = OnlineRows.unavailable(1)
    if model is None:
        model_inputs([txn], rows)
        return
    score_batch(model, [txn], rows, explain=[True])


def audit_record(s: Scored, feature_names: Sequence[str], scored_at: datetime) -> dict[str, Any]:
    """The `fraud-scores` message for one decision: input, features, score, model version, decision."""
    return {
        "schema_version": 1,
        "transaction_id": s.transaction.transaction_id,
        "scored_at": scored_at.isoformat(),
        "model_version": s.model_version,
        "score": s.score,
        "decision": s.decision,
        "raw_score": s.raw_score,
        "explained": s.explained,
        "base_value": s.base_value,
        "reason_codes": [r.code for r in s.reasons],
        "degraded": s.degraded,
        "missing_features": s.missing,
        "transaction": s.transaction.model_dump(mode="json"),
        "features": {
            n: (None if math.isnan(v) else v) for n, v in zip(feature_names, s.features.tolist(), strict=True)
        },
    }
