"""Windows at the scoring instant: `fraud.aggregates` against a slow, exact, event-by-event reference.

The reference reads the definition literally: for a query at t, the entity's events strictly before t,
the MAX_EVENTS most recent of them, those with time in [t - w, t). Queries are drawn at random times,
at event times, exactly on window edges, and days after an entity's last event.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud import aggregates as A
from fraud import features as F
from tests.factories import history, labels_for

US = 1_000_000


def _ref_user(ev: pd.DataFrame, q: pd.Series, cap: int) -> dict[str, float]:
    t = q["t"]
    mine = ev[(ev["user_id"] == q["user_id"]) & (ev["t"] < t)].sort_values(["t", "transaction_id"], kind="stable")
    if mine.empty:
        return {}
    recent = mine.iloc[-cap:]
    out: dict[str, float] = {"txn_count_total": float(len(mine))}
    for w, width in F.WINDOWS.items():
        win = recent[recent["t"] >= t - width]
        out[f"txn_count_{w}"] = len(win)
        out[f"usd_sum_{w}"] = win["amount_usd"].sum()
        for typ in F.TYPES:
            out[f"{typ}_count_{w}"] = int((win["type"] == typ).sum())
            out[f"{typ}_usd_{w}"] = win.loc[win["type"] == typ, "amount_usd"].sum()
        for name, field in F.DISTINCT_USER_FIELDS.items():
            out[f"distinct_{name}_{w}"] = win[field].dropna().nunique()
            if w == "30d":
                out[f"known_{name}_30d"] = float(isinstance(q[field], str) and q[field] in set(win[field].dropna()))
        if w == "30d":
            out["usd_mean_30d"] = win["amount_usd"].mean() if len(win) else math.nan
            out["usd_std_30d"] = win["amount_usd"].std(ddof=0) if len(win) else math.nan
    posts = F.balance_postings(mine)
    for j, a in enumerate(F.ASSETS):
        out[f"balance_{a}"] = posts[:, j].sum()
    out["last_event_time"] = mine["t"].max()
    return out


def _ref_counterparty(ev: pd.DataFrame, labels: pd.DataFrame, kind: str, q: pd.Series, cap: int) -> dict[str, float]:
    col = F.COUNTERPARTIES[kind]
    t = q["t"]
    if not isinstance(q[col], str):
        return {}
    mine = ev[(ev[col] == q[col]) & (ev["t"] < t)].sort_values(["t", "transaction_id"], kind="stable")
    if mine.empty:
        return {}
    recent = mine.iloc[-cap:]
    out: dict[str, float] = {f"{kind}_first_seen": mine["t"].min()}
    for w, width in F.SHORT_WINDOWS.items():
        win = recent[recent["t"] >= t - width]
        out[f"{kind}_txn_count_{w}"] = len(win)
        out[f"{kind}_distinct_users_{w}"] = win["user_id"].nunique()
    frauds = labels[labels["is_fraud"]]
    first = frauds.groupby("transaction_id")["lt"].min()
    attached = first.reset_index().merge(ev[["transaction_id", col]], on="transaction_id")  # once per transaction
    mine_labels = attached[(attached[col] == q[col]) & (attached["lt"] < t)].sort_values("lt").iloc[-cap:]
    for w, width in F.RISK_WINDOWS.items():
        out[f"{kind}_fraud_count_{w}"] = int((mine_labels["lt"] >= t - width).sum())
        win = recent[recent["t"] >= t - width]
        confirmed = int((win["transaction_id"].map(first) < t).sum())
        out[f"{kind}_fraud_rate_{w}"] = (confirmed + F.PRIOR_RATE * F.PRIOR_WEIGHT) / (len(win) + F.PRIOR_WEIGHT)
    return out


def _queries(ev: pd.DataFrame, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Query transactions at event times, on every window's edges, at random times, and days after the end."""
    t = F.to_micros(ev["event_time"])
    picks = rng.integers(0, len(ev), n)
    widths = np.array([*F.WINDOWS.values(), 0])
    at = t[picks] + rng.choice(widths, n) * rng.choice([0, 1], n) + rng.choice([0, 0, 1, -1], n)
    at[: n // 4] = rng.integers(t.min(), t.max() + 5 * 86400 * US, n // 4)  # random, some after everything
    at[-3:] = t.max() + np.array([3, 9, 40]) * 86400 * US  # idle for days
    q = ev.iloc[picks].reset_index(drop=True).copy()
    q["event_time"] = pd.to_datetime(at, unit="us", utc=True)
    q["transaction_id"] = [f"q{i}" for i in range(n)]
    flip = rng.random(n) < 0.3  # a device, IP, country or address the user may never have used
    q.loc[flip, "device_id"] = rng.choice(["d1", "dX"], int(flip.sum()))
    q.loc[flip, "country"] = rng.choice(["DE", "ZZ"], int(flip.sum()))
    return q


def _check(ev: pd.DataFrame, labels: pd.DataFrame, q: pd.DataFrame, cap: int) -> None:
    got = A.features_at(ev, labels, q)
    ev = ev.assign(t=F.to_micros(ev["event_time"]))
    labels = labels.assign(lt=F.to_micros(labels["label_time"]), is_fraud=labels["is_fraud"].astype(bool))
    q = q.assign(t=F.to_micros(q["event_time"]))
    for i, row in q.iterrows():
        expected: dict[str, float] = _ref_user(ev, row, cap)
        for kind in F.COUNTERPARTIES:
            expected |= _ref_counterparty(ev, labels, kind, row, cap)
        names = F.user_feature_names() + [n for k in F.COUNTERPARTIES for n in F.counterparty_feature_names(k)]
        for name in names:
            value: Any = got.at[i, name]
            if isinstance(value, np.datetime64 | pd.Timestamp) or got[name].dtype.kind == "M":
                value = np.nan if pd.isna(value) else float(pd.Timestamp(value).value // 1000)
            want = expected.get(name, math.nan)
            if math.isnan(want):
                assert math.isnan(float(value)), (i, name, value)
            else:
                assert float(value) == pytest.approx(want, rel=1e-9, abs=1e-6), (i, name, value, want)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cap=st.sampled_from([2, 5, A.MAX_EVENTS]))
def test_windows_at_random_instants_equal_the_exact_reference(seed: int, cap: int) -> None:
    ev = history(n=160, users=4, seed=seed)
    labels = labels_for(ev, seed=seed + 1)
    q = _queries(ev, np.random.default_rng(seed), 40)
    A.MAX_EVENTS = cap
    try:
        _check(ev, labels, q, cap)
    finally:
        A.MAX_EVENTS = 1024


def test_an_idle_user_is_served_the_windows_of_now_not_of_its_last_event() -> None:
    ev = history(n=60, users=1, seed=4)
    last = ev["event_time"].max()
    q = ev.iloc[[-1]].copy()
    q["event_time"] = last + pd.Timedelta(days=3)
    got = A.features_at(ev, labels_for(ev), q).iloc[0]
    assert got["txn_count_1h"] == 0 and got["txn_count_24h"] == 0
    seven = (ev["event_time"] >= last + pd.Timedelta(days=3) - pd.Timedelta(days=7)).sum()
    assert got["txn_count_7d"] == seven
    assert got["txn_count_total"] == len(ev)


def test_a_transaction_never_counts_in_its_own_window() -> None:
    ev = history(n=80, users=2, seed=5)
    got = A.features_at(ev, None, ev)
    first_of_user = ~ev["user_id"].duplicated()
    assert got.loc[first_of_user, "txn_count_total"].isna().all()  # nothing strictly before
    later = ~first_of_user
    t = F.to_micros(ev["event_time"])
    before = [int(((ev["user_id"] == u) & (t < ti)).sum()) for u, ti in zip(ev["user_id"], t, strict=True)]
    np.testing.assert_array_equal(got.loc[later, "txn_count_total"].to_numpy(), np.array(before)[later.to_numpy()])


def test_a_label_counts_from_its_label_time_and_not_a_microsecond_before() -> None:
    ev = history(n=40, users=2, seed=6)
    tx = ev.iloc[10]
    lt = tx["event_time"] + pd.Timedelta(minutes=10)
    labels = pd.DataFrame({"transaction_id": [tx["transaction_id"]], "is_fraud": [True], "label_time": [lt]})
    q = ev.iloc[[10, 10, 10]].copy()
    q["event_time"] = [lt, lt + pd.Timedelta(microseconds=1), lt + pd.Timedelta(days=8)]
    got = A.features_at(ev, labels, q)
    assert got["device_fraud_count_7d"].tolist() == [0, 1, 0]
    assert got["device_fraud_count_30d"].tolist() == [0, 1, 1]
    assert got["device_fraud_rate_7d"].iloc[0] < got["device_fraud_rate_7d"].iloc[1]


def test_the_kernels_fill_every_feature_once() -> None:
    assert sorted(A.USER_OUT) == sorted(F.user_feature_names())
    assert len(set(A.USER_OUT)) == len(A.USER_OUT)
