"""Feature definitions a reviewer can check by hand: balances post both legs of a trade, fraud rates
are shares within [0, 1] that count only the window's transactions known as fraud before t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud import aggregates as A
from fraud import features as F


def _just_after(ev: pd.DataFrame) -> pd.DataFrame:
    """Each event as a query 1 microsecond later: the features as of it, the event included."""
    return ev.assign(event_time=ev["event_time"] + pd.Timedelta(microseconds=1))


def _complete(events: pd.DataFrame) -> pd.DataFrame:
    """Counterparty-only test events with the other canonical columns filled in."""
    return events.assign(
        type="send", asset="BTC", amount=0.01, amount_usd=100.0, payment_method="crypto", source_address=None
    ).assign(country="DE", channel="web")


def _user_events(*rows: tuple[str, str, float, float, str]) -> pd.DataFrame:
    """One user's events, an hour apart: (type, asset, amount, amount_usd, payment_method) each."""
    t0 = pd.Timestamp("2026-02-01 08:00:00.123456", tz="UTC")
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(rows))],
            "event_time": [t0 + pd.Timedelta(hours=i) for i in range(len(rows))],
            "user_id": "u1",
            "type": [r[0] for r in rows],
            "asset": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
            "amount_usd": [r[3] for r in rows],
            "payment_method": [r[4] for r in rows],
            "destination_address": None,
            "source_address": None,
            "device_id": "d1",
            "ip_address": "10.0.0.1",
            "country": "DE",
            "channel": "web",
        }
    )


def test_balances_post_both_legs_as_the_ledger_does() -> None:
    ev = _user_events(
        ("deposit", "USDC", 1000.0, 1000.0, "bank_transfer"),  # fiat on-ramp: credits USDC
        ("buy", "BTC", 0.01, 600.0, "balance"),  # balance-funded: spends USDC
        ("buy", "ETH", 0.1, 300.0, "card"),  # instant card buy: no USDC leg
        ("sell", "ETH", 0.05, 160.0, "balance"),  # proceeds credit USDC
        ("send", "BTC", 0.004, 250.0, "crypto"),
    )
    rows = A.features_at(ev, None, _just_after(ev))
    assert list(rows["balance_USDC"]) == pytest.approx([1000.0, 400.0, 400.0, 560.0, 560.0])
    assert list(rows["balance_BTC"]) == pytest.approx([0.0, 0.01, 0.01, 0.01, 0.006])
    assert list(rows["balance_ETH"]) == pytest.approx([0.0, 0.0, 0.1, 0.05, 0.05])


def test_sell_then_withdraw_the_proceeds_is_not_an_overdraft() -> None:
    """A user sells BTC (bought by card) and withdraws the USDC proceeds: the balance covers it."""
    ev = _user_events(
        ("buy", "BTC", 0.01, 600.0, "card"),
        ("sell", "BTC", 0.01, 650.0, "balance"),
        ("withdrawal", "USDC", 650.0, 650.0, "bank_transfer"),
    )
    rows = A.features_at(ev, None, _just_after(ev))
    assert (rows[[f"balance_{a}" for a in F.ASSETS]] >= -1e-9).all().all()
    withdrawal = ev.iloc[[2]].reset_index(drop=True)
    before_withdrawal = A.features_at(ev, None, withdrawal)  # what the withdrawal sees, strictly before it
    assert before_withdrawal.loc[0, "balance_USDC"] == pytest.approx(650.0)
    request = F.request_features(withdrawal, before_withdrawal)
    assert request.loc[0, "balance_share_leaving"] == pytest.approx(1.0)  # not the 10.0 sentinel


_US_PER_DAY = 86_400 * F.US


@st.composite
def _events_and_labels(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A few devices' transactions over ~40 days (ties allowed) and fraud labels arriving 0-40 days later.

    Times are whole days plus a sub-second part, so bursts, ties and labels landing together are common.
    """
    n = draw(st.integers(1, 40))

    def moments(days: int) -> st.SearchStrategy[list[int]]:
        moment = st.tuples(st.integers(0, days), st.integers(0, F.US - 1)).map(lambda d: d[0] * _US_PER_DAY + d[1])
        return st.lists(moment, min_size=n, max_size=n)

    times = draw(moments(40))
    devices = draw(st.lists(st.sampled_from(["d1", "d2", "d3"]), min_size=n, max_size=n))
    fraud = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    delays = draw(moments(40))
    start = pd.Timestamp("2026-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            "transaction_id": [f"t{i:03d}" for i in range(n)],
            "event_time": start + pd.to_timedelta(times, unit="us"),
            "user_id": "u1",
            "device_id": devices,
            "ip_address": "10.0.0.1",
            "destination_address": None,
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": events.transaction_id,
            "is_fraud": fraud,
            "label_time": events.event_time + pd.to_timedelta(delays, unit="us"),
        }
    )
    return events, labels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events_and_labels())
def test_fraud_rate_is_a_share_within_0_and_1(case: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Whatever the events and however many labels land in a window, the rate is a share: in [0, 1]."""
    events, labels = case
    events = _complete(events)
    rows = A.features_at(events, labels, _just_after(events))
    for w in F.RISK_WINDOWS:
        rate = rows[f"device_fraud_rate_{w}"].to_numpy()
        assert np.isfinite(rate).all()
        assert ((rate >= 0) & (rate <= 1)).all(), rate


def test_fraud_rate_counts_only_the_windows_transactions_known_as_fraud_at_the_row() -> None:
    """Old frauds confirmed today raise the count (recency of confirmations), not the share."""
    t0 = pd.Timestamp("2026-02-01 09:30:00.250001", tz="UTC")
    times = [t0 - pd.Timedelta(days=40, seconds=i) for i in range(3)] + [t0, t0 + pd.Timedelta(hours=1)]
    events = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d", "e"],
            "event_time": times,
            "user_id": "u1",
            "device_id": "d1",
            "ip_address": "10.0.0.1",
            "destination_address": None,
        }
    )
    # a, b, c (40 days old) confirmed 5 days ago; d confirmed 30 minutes after it happened
    labels = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d"],
            "is_fraud": True,
            "label_time": [t0 - pd.Timedelta(days=5)] * 3 + [t0 + pd.Timedelta(minutes=30)],
        }
    )
    events = _complete(events)
    rows = A.features_at(events, labels, _just_after(events)).set_index(events["transaction_id"])
    prior = F.PRIOR_RATE * F.PRIOR_WEIGHT
    assert rows.loc["d", "device_fraud_count_7d"] == 3  # three confirmations in the last 7 days
    assert rows.loc["d", "device_fraud_rate_7d"] == pytest.approx(prior / (1 + F.PRIOR_WEIGHT))  # d not known yet
    assert rows.loc["e", "device_fraud_count_7d"] == 4
    assert rows.loc["e", "device_fraud_rate_7d"] == pytest.approx((1 + prior) / (2 + F.PRIOR_WEIGHT))
