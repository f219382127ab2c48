"""The vectorised feature core against a slow, obviously-correct reference, on random histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from tests.factories import history as _history


def _reference_user(ev: pd.DataFrame, txn_id: str) -> dict[str, float]:
    row = ev.loc[ev.transaction_id == txn_id].iloc[0]
    t = row.event_time
    mine = ev[(ev.user_id == row.user_id) & (ev.transaction_id <= txn_id)]  # ids sort like time here
    ref: dict[str, float] = {}
    for w, width in F.WINDOWS.items():
        win = mine[(mine.event_time > t - pd.Timedelta(microseconds=width)) & (mine.event_time <= t)]
        ref[f"txn_count_{w}"] = len(win)
        ref[f"usd_sum_{w}"] = win.amount_usd.sum()
        for typ in F.TYPES:
            ref[f"{typ}_count_{w}"] = int((win.type == typ).sum())
            ref[f"{typ}_usd_{w}"] = win.amount_usd[win.type == typ].sum()
        for name, col in F.DISTINCT_USER_FIELDS.items():
            ref[f"distinct_{name}_{w}"] = win[col].dropna().nunique()
        if w == "30d":
            ref["usd_mean_30d"] = win.amount_usd.mean()
            ref["usd_std_30d"] = win.amount_usd.std(ddof=0)
    upto = mine[mine.event_time <= t]
    ref["txn_count_total"] = len(upto)
    for a in F.ASSETS:
        sel = upto[upto.asset == a]
        ref[f"balance_{a}"] = (np.where(sel.type.isin(F.OUTGOING), -1, 1) * sel.amount).sum()
    return ref


def test_user_windows_match_reference() -> None:
    ev = _history()
    rows = F.user_features(ev).set_index("transaction_id")
    assert len(rows) == len(ev)
    for txn_id in ev.transaction_id.sample(60, random_state=1):
        ref = _reference_user(ev, txn_id)
        got = rows.loc[txn_id]
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-6), (txn_id, k)


def test_known_sets_hold_the_30d_distinct_values() -> None:
    ev = _history()
    rows = F.user_features(ev).set_index("transaction_id")
    for txn_id in ev.transaction_id.sample(40, random_state=2):
        row = ev.loc[ev.transaction_id == txn_id].iloc[0]
        mine = ev[(ev.user_id == row.user_id) & (ev.transaction_id <= txn_id)]
        mine = mine[mine.event_time > row.event_time - pd.Timedelta(days=30)]
        assert set(rows.loc[txn_id, "known_devices_30d"].split("|")) == set(mine.device_id)


def test_known_sets_keep_the_most_recently_seen_values_when_over_the_cap() -> None:
    ev = _history(users=2)
    ev["device_id"] = np.random.default_rng(5).choice([f"d{i:03d}" for i in range(150)], len(ev))
    rows = F.user_features(ev).set_index("transaction_id")
    capped = 0
    for txn_id, user, t in zip(ev.transaction_id, ev.user_id, ev.event_time, strict=True):
        mine = ev[(ev.user_id == user) & (ev.transaction_id <= txn_id)]
        mine = mine[mine.event_time > t - pd.Timedelta(days=30)]
        mine = mine.sort_values(["event_time", "transaction_id"])
        recent = list(dict.fromkeys(reversed(mine.device_id.tolist())))
        capped += len(recent) > F.KNOWN_CAP
        assert rows.loc[txn_id, "known_devices_30d"] == F.SEP.join(sorted(recent[: F.KNOWN_CAP])), txn_id
    assert capped > 50  # the cap was exercised


@pytest.mark.parametrize("kind", ["device", "ip", "address"])
def test_counterparty_windows_and_label_risk_match_reference(kind: str) -> None:
    ev = _history()
    col = F.COUNTERPARTIES[kind]
    rng = np.random.default_rng(9)
    labels = pd.DataFrame(
        {
            "transaction_id": ev.transaction_id,
            "is_fraud": rng.random(len(ev)) < 0.2,
            "label_time": ev.event_time + pd.to_timedelta(rng.integers(0, 20 * 86400, len(ev)), unit="s"),
        }
    )
    rows = F.counterparty_features(ev, kind, F.attach_entities(labels, ev)).set_index("transaction_id")
    assert len(rows) == ev[col].notna().sum()
    frauds = labels[labels.is_fraud].merge(ev[["transaction_id", col]], on="transaction_id")
    for txn_id in rows.index.to_series().sample(50, random_state=3):
        row = ev.loc[ev.transaction_id == txn_id].iloc[0]
        t, e = row.event_time, row[col]
        same = ev[(ev[col] == e) & (ev.transaction_id <= txn_id)]
        for w, width in F.SHORT_WINDOWS.items():
            win = same[(same.event_time > t - pd.Timedelta(microseconds=width)) & (same.event_time <= t)]
            assert rows.loc[txn_id, f"{kind}_txn_count_{w}"] == len(win)
            assert rows.loc[txn_id, f"{kind}_distinct_users_{w}"] == win.user_id.nunique()
        assert rows.loc[txn_id, f"{kind}_first_seen"] == ev[ev[col] == e].event_time.min()
        for w, width in F.RISK_WINDOWS.items():
            lo = t - pd.Timedelta(microseconds=width)
            known = frauds[(frauds[col] == e) & (frauds.label_time > lo) & (frauds.label_time <= t)]
            assert rows.loc[txn_id, f"{kind}_fraud_count_{w}"] == len(known)
            act = ((same.event_time > lo) & (same.event_time <= t)).sum()
            assert rows.loc[txn_id, f"{kind}_fraud_rate_{w}"] == pytest.approx(len(known) / max(act, 1))


def test_streaming_in_two_halves_equals_batch() -> None:
    """The ingest path: history + new micro-batch, carry for running totals, keep the new rows."""
    ev = _history(n=300)
    batch = F.user_features(ev).set_index("transaction_id")
    cut = ev.event_time.iloc[150]
    old, new = ev[ev.event_time < cut], ev[ev.event_time >= cut]
    history = old[old.event_time > cut - pd.Timedelta(days=31)]
    carry = F.user_features(old).sort_values("event_timestamp").groupby("user_id").last()
    carry = carry.drop(columns=[c for c in carry if c not in ("txn_count_total", *(f"balance_{a}" for a in F.ASSETS))])
    # carry is what came before the retained history: subtract the retained part
    retained = F.user_features(history).sort_values("event_timestamp").groupby("user_id").last()
    carry = carry.sub(retained[carry.columns], fill_value=0)
    stream = F.user_features(pd.concat([history, new])).set_index("transaction_id").loc[new.transaction_id]
    pd.testing.assert_frame_equal(
        stream.drop(columns=["event_timestamp"]).reset_index(drop=True),
        batch.loc[new.transaction_id].drop(columns=["event_timestamp"]).reset_index(drop=True),
        check_exact=False,
        rtol=1e-9,
    )
