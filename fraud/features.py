"""Every feature's name and definition, and the request-time features (pure, no I/O).

What an entity's features are at a transaction's instant t (windows over [t - w, t), running totals,
label-derived risk) is computed by `fraud.aggregates`, from the entity's events strictly before t:
over the whole history for training, over the entity's online row for the scorer. Request-time
features (`request_columns`) combine those values with the request itself, through the same function
in training and serving; `model_array` lays them out in the model's fixed column order.

Label-derived risk of a counterparty at t, over a window w:
- `*_fraud_count_<w>`: transactions of the entity confirmed fraud (their earliest fraud label) with
  the label's `label_time` in [t - w, t), whenever the transaction was: how recently confirmations arrived.
- `*_fraud_rate_<w>`: of the entity's transactions in the window, the share confirmed fraud before t,
  smoothed towards a prior: (confirmed + PRIOR_RATE * PRIOR_WEIGHT) / (transactions + PRIOR_WEIGHT).
  Always within [0, 1].

Balances (`balance_<asset>`) are the user's net flow per asset since first seen, both legs of a trade
posted as the exchange's ledger posts them (`balance_postings`); opening balances are in no canonical
table, so they are not included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fraud.contracts import Asset, TransactionType

US = 1_000_000  # microseconds per second
WINDOWS: dict[str, int] = {"1h": 3600 * US, "24h": 86400 * US, "7d": 7 * 86400 * US, "30d": 30 * 86400 * US}
SHORT_WINDOWS: dict[str, int] = {k: WINDOWS[k] for k in ("24h", "7d")}
RISK_WINDOWS: dict[str, int] = {k: WINDOWS[k] for k in ("7d", "30d")}
TYPES: tuple[str, ...] = tuple(t.value for t in TransactionType)
ASSETS: tuple[str, ...] = tuple(a.value for a in Asset)
OUTGOING = ("withdrawal", "sell", "send")
DISTINCT_USER_FIELDS = {
    "devices": "device_id",
    "ips": "ip_address",
    "countries": "country",
    "dest_addresses": "destination_address",
}
KNOWN_SETS = {
    "devices": "new_device",
    "ips": "new_ip",
    "countries": "new_country",
    "dest_addresses": "new_dest_address",
}
RATIO_CAP = 1e6  # request-time ratios (amount to mean or balance, z-score) are bounded to +-this
CASH = Asset.USDC.value  # the exchange's cash leg: sells settle in it, balance-funded buys spend from it
COUNTERPARTIES = {"address": "destination_address", "device": "device_id", "ip": "ip_address"}
LIST_NAMES = ("sanctions", "mixer")
# Fraud-rate smoothing (`counterparty_features`): the rate starts from a prior of PRIOR_RATE, worth
# PRIOR_WEIGHT transactions. 1% is the exchange's base fraud rate per transaction (the simulator's
# default); a weight of one transaction keeps a single confirmed fraud loud (1 of 1 reads ~0.5, not
# 1.0) while ten transactions already outweigh the prior ten to one.
PRIOR_RATE = 0.01
PRIOR_WEIGHT = 1.0


# ---------------------------------------------------------------------------------------------
# Feature names (the Feast repository and the model read these lists; nothing else defines them).


def user_feature_names() -> list[str]:
    names: list[str] = []
    for w in WINDOWS:
        names += [f"txn_count_{w}", f"usd_sum_{w}"]
        for t in TYPES:
            names += [f"{t}_count_{w}", f"{t}_usd_{w}"]
        names += [f"distinct_{d}_{w}" for d in DISTINCT_USER_FIELDS]
    names += ["usd_mean_30d", "usd_std_30d", "last_event_time", "txn_count_total"]
    names += [f"known_{name}_30d" for name in KNOWN_SETS]
    names += [f"balance_{a}" for a in ASSETS]
    return names


def counterparty_feature_names(kind: str) -> list[str]:
    names = [f"{kind}_txn_count_{w}" for w in SHORT_WINDOWS]
    names += [f"{kind}_distinct_users_{w}" for w in SHORT_WINDOWS]
    names += [f"{kind}_first_seen"]
    for w in RISK_WINDOWS:
        names += [f"{kind}_fraud_count_{w}", f"{kind}_fraud_rate_{w}"]
    return names


ACCOUNT_FEATURES = ["signup_time", "kyc_tier"]
ADDRESS_LIST_FEATURES = [f"on_{n}_list" for n in LIST_NAMES]

REQUEST_FEATURES = [
    "amount_usd",
    "log_amount_usd",
    "type_code",
    "asset_code",
    "payment_method_code",
    "channel_code",
    "hour_of_day",
    "day_of_week",
    "is_outgoing",
    "is_onchain",
    "new_device",
    "new_ip",
    "new_country",
    "new_dest_address",
    "seconds_since_prev_txn",
    "account_age_days",
    "amount_z_30d",
    "amount_to_mean_30d",
    "balance_share_leaving",
    "address_age_days",
    "device_age_days",
    "ip_age_days",
]

CATEGORY_CODES: dict[str, dict[str, int]] = {
    "type": {v: i for i, v in enumerate(TYPES)},
    "asset": {v: i for i, v in enumerate(ASSETS)},
    "payment_method": {v: i for i, v in enumerate(("card", "bank_transfer", "crypto", "balance"))},
    "channel": {v: i for i, v in enumerate(("web", "ios", "android", "api"))},
}


# ---------------------------------------------------------------------------------------------
# Times and balances.


def to_micros(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    # `to_datetime` only when needed: on a column that already is datetimes it samples them first
    s = ts if isinstance(ts.dtype, pd.DatetimeTZDtype) else pd.to_datetime(ts, utc=True)
    return np.asarray(s.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64"), dtype=np.int64)


def balance_postings(events: pd.DataFrame) -> np.ndarray:
    """What each event moves on its user's balances: (events x ASSETS) signed amounts, in row order.

    Posted as the exchange's ledger posts them (`pipelines/simulator/ledger.py`): every event moves
    its own asset (deposits, buys and receives credit it; withdrawals, sells and sends debit it), and
    a trade has a cash leg in USDC (priced at $1): a sell credits its `amount_usd` of proceeds, a
    buy paid from the balance (`payment_method` "balance") spends its `amount_usd`. A card or bank
    buy is paid outside the exchange (no cash leg); a card or bank deposit is itself a USDC credit.
    The one rule for the running balances (`user_features`) and the streaming carry (`FeatureState`).
    """
    types = events["type"].to_numpy()
    assets = events["asset"].to_numpy()
    amount = events["amount"].to_numpy(dtype=np.float64)
    usd = events["amount_usd"].to_numpy(dtype=np.float64)
    own = np.where(np.isin(types, OUTGOING), -amount, amount)
    cash = np.where(types == "sell", usd, 0.0)
    cash = np.where((types == "buy") & (events["payment_method"].to_numpy() == "balance"), -usd, cash)
    out = np.empty((len(events), len(ASSETS)))
    for j, a in enumerate(ASSETS):
        out[:, j] = np.where(assets == a, own, 0.0) + (cash if a == CASH else 0.0)
    return out


def attach_entities(labels: pd.DataFrame, transactions: pd.DataFrame) -> pd.DataFrame:
    """Labels with the counterparties of their transaction (what label-derived risk is counted on)."""
    cols = ["transaction_id", *COUNTERPARTIES.values()]
    base = labels.drop(columns=[c for c in COUNTERPARTIES.values() if c in labels.columns])
    return base.merge(transactions[cols], on="transaction_id", how="inner")


def account_rows(accounts: pd.DataFrame) -> pd.DataFrame:
    """The `account` view's rows: one per user, timestamped at signup."""
    rows = accounts[["user_id", "signup_time", "kyc_tier"]].copy()
    rows["signup_time"] = pd.to_datetime(rows["signup_time"], utc=True)
    rows["kyc_tier"] = rows["kyc_tier"].astype(np.int64)
    rows["event_timestamp"] = rows["signup_time"]
    return rows


def address_list_rows(address_lists: pd.DataFrame) -> pd.DataFrame:
    """The `address_list` view's rows: at each listing time, the lists the address is on by then."""
    df = address_lists.copy()
    df["listed_time"] = pd.to_datetime(df["listed_time"], utc=True)
    df = df.sort_values(["address", "listed_time"], kind="stable")
    for name in LIST_NAMES:
        df[f"on_{name}_list"] = (df["list_name"] == name).astype(np.int64).groupby(df["address"]).cummax()
    rows = df.groupby(["address", "listed_time"], as_index=False)[ADDRESS_LIST_FEATURES].max()
    rows = rows.rename(columns={"address": "destination_address", "listed_time": "event_timestamp"})
    return rows


# ---------------------------------------------------------------------------------------------
# Request-time features: the request itself joined with the stored rows strictly before it.
#
# Both functions below take "columns": a DataFrame (training, backtests: a million rows) or a dict of
# column name -> 1-D numpy array (the scorer: a handful of requests, where building DataFrames would
# cost more than the features). Times are tz-aware pandas columns or numpy datetime64 (UTC).

Columns = Any  # pd.DataFrame | Mapping[str, np.ndarray]


def _values(frame: Columns, name: str) -> np.ndarray:
    v = frame[name]
    return v.to_numpy() if isinstance(v, pd.Series) else np.asarray(v)


def _floats(frame: Columns, name: str, n: int) -> np.ndarray:
    """A column as float64 (NaN where missing or not numeric); all NaN when the column is absent."""
    if name not in frame:
        return np.full(n, np.nan)
    v = frame[name]
    if isinstance(v, pd.Series):
        if v.dtype == object:
            v = pd.to_numeric(v, errors="coerce")
        return v.to_numpy(dtype=np.float64, na_value=np.nan)
    v = np.asarray(v)
    if v.dtype == object:
        return pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return v.astype(np.float64, copy=False)


def _present(values: np.ndarray) -> np.ndarray:
    """Where a text column has a value: a string (None, NaN and pd.NA are missing)."""
    return np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))


def _micros(values: Any) -> np.ndarray:
    """UTC times as float64 microseconds since the epoch (NaN where missing)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        us = values.astype("datetime64[us]")
        out = us.astype(np.int64).astype(np.float64)
        out[np.isnat(us)] = np.nan
        return out
    ts = pd.to_datetime(values, utc=True)
    ts = pd.DatetimeIndex(ts) if not isinstance(ts, pd.DatetimeIndex) else ts
    out = ts.as_unit("us").asi8.astype(np.float64)
    out[ts.isna()] = np.nan
    return out


def _rows(frame: Columns) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def request_columns(txns: Columns, stored: Columns) -> dict[str, np.ndarray]:
    """Request-time features for transactions, given the stored feature values known before each one.

    `txns` are canonical transactions; `stored` is aligned row by row with them and holds the user,
    counterparty, account and list features (missing entities as NaN/NaT, or absent columns). The
    scorer calls this with the online-store rows of its requests; training with the point-in-time
    join. Same code, same values.
    """
    t = _micros(_values(txns, "event_time")).astype(np.int64)  # event_time is never missing
    n = len(t)
    out: dict[str, np.ndarray] = {}
    usd = _floats(txns, "amount_usd", n)
    out["amount_usd"] = usd
    out["log_amount_usd"] = np.log1p(usd)
    for field in ("type", "asset", "payment_method", "channel"):
        codes = CATEGORY_CODES[field]
        out[f"{field}_code"] = np.fromiter((codes[v] for v in _values(txns, field)), dtype=np.int64, count=n)
    out["hour_of_day"] = (t // (3600 * US)) % 24
    out["day_of_week"] = (t // (86400 * US) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    outgoing = np.fromiter((v in OUTGOING for v in _values(txns, "type")), dtype=bool, count=n)
    out["is_outgoing"] = outgoing.astype(np.int64)
    onchain = _present(_values(txns, "destination_address")) | _present(_values(txns, "source_address"))
    out["is_onchain"] = onchain.astype(np.int64)

    def seconds_since(name: str) -> np.ndarray:
        if name not in stored:
            return np.full(n, np.nan)
        return (t - _micros(_values(stored, name))) / US

    has_user = ~np.isnan(_floats(stored, "txn_count_total", n))
    for name, field in KNOWN_SETS.items():
        values = _values(txns, DISTINCT_USER_FIELDS[name])
        # known_<name>_30d: 1 where the user used this value in the 30 days before (NaN: no user yet)
        known = _floats(stored, f"known_{name}_30d", n)
        flag = np.where(known == 1, 0, 1)
        out[field] = np.where(_present(values), flag, 0)
    out["seconds_since_prev_txn"] = seconds_since("last_event_time")
    out["account_age_days"] = seconds_since("signup_time") / 86400.0
    mean = _floats(stored, "usd_mean_30d", n)
    std = _floats(stored, "usd_std_30d", n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["amount_z_30d"] = (usd - mean) / np.where(std > 0, std, np.nan)
        out["amount_to_mean_30d"] = usd / np.where(mean > 0, mean, np.nan)
        amount = _floats(txns, "amount", n)
        balance = np.full(n, np.nan)
        assets = _values(txns, "asset")
        for a in ASSETS:
            sel = assets == a
            if f"balance_{a}" in stored and sel.any():
                balance[sel] = _floats(stored, f"balance_{a}", n)[sel]
        share = amount / np.where(balance > 0, balance, np.nan)
        share = np.where(np.isnan(share) & outgoing & has_user, 10.0, share)
        out["balance_share_leaving"] = np.where(outgoing, share, 0.0)
    for name in ("amount_z_30d", "amount_to_mean_30d", "balance_share_leaving"):
        # a tiny (even subnormal) mean, spread or balance divides into infinity: bounded, NaN kept
        out[name] = np.clip(out[name], -RATIO_CAP, RATIO_CAP)
    for kind in COUNTERPARTIES:
        out[f"{kind}_age_days"] = seconds_since(f"{kind}_first_seen") / 86400.0
    return {k: out[k] for k in REQUEST_FEATURES}


def request_features(txns: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """`request_columns` as a DataFrame aligned with `txns` (training and backtests)."""
    return pd.DataFrame(request_columns(txns, stored), index=txns.index)


# ---------------------------------------------------------------------------------------------
# The model's inputs: stored numeric features plus request-time features, in one fixed order.


def stored_feature_names() -> list[str]:
    """Every stored feature, view by view (user, counterparties, account, address lists)."""
    names = user_feature_names()
    for kind in COUNTERPARTIES:
        names += counterparty_feature_names(kind)
    return names + ACCOUNT_FEATURES + ADDRESS_LIST_FEATURES


def model_feature_names() -> list[str]:
    """The model's input columns: numeric stored features (times and sets enter through request
    features as ages and "new" flags) followed by the request-time features."""
    numeric = [
        n for n in stored_feature_names() if not n.endswith(("_time", "_first_seen")) and not n.startswith("known_")
    ]
    return numeric + REQUEST_FEATURES


_MODEL_COLUMNS = tuple(model_feature_names())


def model_array(stored: Columns, request: Columns) -> np.ndarray:
    """The float matrix the model scores: `model_feature_names()` columns, missing values as NaN.

    A name in both inputs takes the request's value."""
    n = _rows(request)
    absent = np.full(n, np.nan)
    if isinstance(stored, Mapping) and isinstance(request, Mapping):
        # The scorer's numpy columns, numeric (None read as NaN): one conversion for the whole block.
        # A column numpy cannot take as floats (text, pd.NA) is converted by name below, as training's are.
        merged = {**stored, **request}
        try:
            return np.array([merged.get(c, absent) for c in _MODEL_COLUMNS], dtype=np.float64).T
        except (TypeError, ValueError):
            pass
    columns = []
    for c in _MODEL_COLUMNS:
        source = request if c in request else stored if c in stored else None
        v = absent if source is None else source[c]
        if not (isinstance(v, np.ndarray) and v.dtype.kind in "fiub"):  # numeric numpy columns go in as they are
            v = _floats(source, c, n)
        columns.append(v)
    # One conversion for the whole block (per-column conversions cost more than the scorer's features).
    # Transposed, it is column-major: each feature's values stay contiguous, as pandas and LightGBM take them.
    return np.array(columns, dtype=np.float64).T


def model_matrix(stored: Columns, request: Columns) -> pd.DataFrame:
    """`model_array` with its column names."""
    return pd.DataFrame(model_array(stored, request), columns=list(_MODEL_COLUMNS))
