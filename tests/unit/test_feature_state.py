"""The streaming state: micro-batch by micro-batch, with labels as they arrive, it serves what training
computes from the whole history (`fraud.aggregates.features_at`) at the same instant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import aggregates as A
from fraud import features as F
from fraud.feature_state import KINDS, FeatureState
from tests.factories import history, labels_for


def _stream(ev: pd.DataFrame, labels: pd.DataFrame, sizes: list[int]) -> FeatureState:
    """Feed events in micro-batches; each label joins the state once its label_time is reached."""
    state = FeatureState()
    attached = F.attach_entities(labels, ev).sort_values("label_time")
    ev = ev.sort_values(["event_time", "transaction_id"]).reset_index(drop=True)
    pos, given, i = 0, 0, 0
    while pos < len(ev):
        batch = ev.iloc[pos : pos + sizes[i % len(sizes)]]
        pos, i = pos + len(batch), i + 1
        ready = attached[attached["label_time"] <= batch["event_time"].max()].iloc[given:]
        state.apply(state.add_labels(ready))
        given += len(ready)
        state.update(batch)
    state.apply(state.add_labels(attached.iloc[given:]))
    return state


def served(state: FeatureState, queries: pd.DataFrame) -> pd.DataFrame:
    """What the scorer computes for query transactions from the state's online rows."""
    rows: dict[str, list[A.Row | None]] = {}
    for kind, col in KINDS.items():
        held = state.rows[kind]
        rows[kind] = [
            (r.events.ravel(), r.carry, r.labels) if (r := held.get(k)) is not None else None for k in queries[col]
        ]
    cols = A.features_of_rows(rows, F.to_micros(queries["event_time"]), A.own_values(queries))
    return pd.DataFrame(cols, index=queries.index)


def _after(ev: pd.DataFrame, seed: int, n: int = 60) -> pd.DataFrame:
    """Requests from every user after the last event: at once, minutes, hours and days later."""
    rng = np.random.default_rng(seed)
    q = ev.sample(n, random_state=seed, replace=True).reset_index(drop=True)
    last = ev["event_time"].max()
    offsets = rng.choice([1, 60, 3600, 20 * 3600, 3 * 86400, 9 * 86400], n) * 1_000_000 + rng.integers(0, 999_999, n)
    q["event_time"] = last + pd.to_timedelta(offsets, unit="us")
    q["transaction_id"] = [f"q{i}" for i in range(n)]
    return q


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype.kind == "M" or y.dtype.kind == "M":
            x, y = pd.to_datetime(x, utc=True), pd.to_datetime(y, utc=True)
            assert (x.isna() == y.isna()).all() and (x[x.notna()] == y[x.notna()]).all(), col
        else:
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-9, atol=1e-6, err_msg=col)


@pytest.mark.parametrize(("n", "sizes"), [(150, [1]), (700, [7, 1, 30]), (700, [50])])
def test_streamed_rows_serve_what_training_computes_from_the_whole_history(n: int, sizes: list[int]) -> None:
    ev = history(n=n, users=15, seed=11)  # 45 days: rows trim and carry totals
    labels = labels_for(ev)
    state = _stream(ev, labels, sizes)
    q = _after(ev, seed=n)
    assert_same(served(state, q), A.features_at(ev, labels, q))


def test_labels_arriving_up_to_40_days_late_count_as_training_counts_them() -> None:
    ev = history(n=700, users=15, seed=17)
    labels = labels_for(ev, fraud_share=0.4, seed=3, max_delay_days=40)
    state = _stream(ev, labels, [13, 1, 60])
    q = _after(ev, seed=4)
    assert_same(served(state, q), A.features_at(ev, labels, q))


def test_the_state_built_from_a_history_equals_the_streamed_one() -> None:
    ev = history(n=500, users=10, seed=8)
    labels = labels_for(ev, fraud_share=0.3)
    q = _after(ev, seed=9)
    assert_same(served(FeatureState.from_history(ev, labels), q), served(_stream(ev, labels, [17]), q))


def test_a_label_changes_its_counterparties_rows_at_once() -> None:
    ev = history(n=120, users=4, seed=12)
    state = FeatureState()
    state.update(ev)
    tx = ev.iloc[-5]
    label = pd.DataFrame(
        {"transaction_id": [tx.transaction_id], "is_fraud": [True], "label_time": [ev.event_time.max()]}
    )
    q = ev.iloc[[-1]].assign(
        device_id=tx.device_id, ip_address=tx.ip_address, event_time=ev.event_time.max() + pd.Timedelta(minutes=10)
    )
    before = served(state, q).iloc[0]
    change = state.add_labels(F.attach_entities(label, ev))
    assert set(change.rows) >= {"device", "ip"} and tx.device_id in change.rows["device"]
    state.apply(change)
    after = served(state, q).iloc[0]
    assert before["device_fraud_count_7d"] == 0 and after["device_fraud_count_7d"] == 1
    assert after["device_fraud_rate_7d"] > before["device_fraud_rate_7d"]
    assert after["ip_fraud_count_30d"] == 1


def test_replayed_events_change_nothing() -> None:
    ev = history(n=200, users=6, seed=2)
    state = FeatureState()
    state.update(ev.iloc[:150])
    held = {k: dict(v) for k, v in state.rows.items()}
    assert state.compute(ev.iloc[100:150]).empty
    assert {k: dict(v) for k, v in state.rows.items()} == held


def test_a_late_event_takes_its_place_and_online_rows_never_go_back_in_time() -> None:
    ev = history(n=200, users=5, seed=3).sort_values("event_time", kind="stable").reset_index(drop=True)
    late = ev.iloc[[150]]
    state = FeatureState()
    state.update(ev.drop(index=150))
    user = late["user_id"].iloc[0]
    stamp = state.rows["user"][user].stamp
    state.update(late)
    row = state.rows["user"][user]
    assert row.stamp > stamp  # a newer row, so a store that keeps the newest (Redis) takes it
    assert (np.diff(row.events[:, 0]) >= 0).all()
    q = _after(ev, seed=1)
    assert_same(served(state, q), A.features_at(ev, None, q))


def test_a_batch_touches_only_the_rows_of_the_entities_it_names() -> None:
    ev = history(n=300, users=12, seed=6)
    state = FeatureState()
    state.update(ev.iloc[:-1])
    change = state.compute(ev.iloc[-1:])
    last = ev.iloc[-1]
    assert {k: list(v) for k, v in change.rows.items() if v} == {
        kind: [last[col]] for kind, col in KINDS.items() if isinstance(last[col], str)
    }
