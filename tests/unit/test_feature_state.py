"""Parity: the streaming path (event by event, micro-batch by micro-batch) equals the batch backfill."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from fraud.feature_state import FeatureState
from pipelines.backfill import compute_view_rows
from tests.factories import history, labels_for


def _stream(ev: pd.DataFrame, labels: pd.DataFrame, sizes: list[int]) -> dict[str, pd.DataFrame]:
    """Feed events in micro-batches; labels join the state once their label_time is reached.

    A label that arrives during a batch may be known before some of its events are processed; the
    features still count it only for events after its label_time (the window filter), never before.
    """
    state = FeatureState()
    attached = F.attach_entities(labels, ev).sort_values("label_time")
    out: dict[str, list[pd.DataFrame]] = {}
    pos, given = 0, 0
    ev = ev.sort_values(["event_time", "transaction_id"]).reset_index(drop=True)
    i = 0
    while pos < len(ev):
        size = sizes[i % len(sizes)]
        i += 1
        batch = ev.iloc[pos : pos + size]
        pos += size
        now = batch["event_time"].max()
        ready = attached[attached["label_time"] <= now].iloc[given:]
        state.add_labels(ready)
        given += len(ready)
        for view, rows in state.update(batch).items():
            out.setdefault(view, []).append(rows)
    return {v: pd.concat(frames, ignore_index=True) for v, frames in out.items()}


def _assert_stream_equals_batch(ev: pd.DataFrame, labels: pd.DataFrame, sizes: list[int]) -> None:
    batch = compute_view_rows(ev, labels)
    stream = _stream(ev, labels, sizes)
    for view in ("user_activity", "address_activity", "device_activity", "ip_activity"):
        b = batch[view].set_index("transaction_id").sort_index()
        s = stream[view].set_index("transaction_id").sort_index()
        assert list(s.index) == list(b.index), view
        for col in b.columns:
            if b[col].dtype.kind in "fi":
                np.testing.assert_allclose(
                    s[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-9, atol=1e-6, err_msg=f"{view}.{col}"
                )
            else:
                assert (s[col].astype(str) == b[col].astype(str)).all(), (view, col)


@pytest.mark.parametrize(("n", "sizes"), [(150, [1]), (700, [7, 1, 30]), (700, [50])])
def test_streaming_equals_batch(n: int, sizes: list[int]) -> None:
    ev = history(n=n, users=15, seed=11)  # 45 days: the state trims and carries totals
    _assert_stream_equals_batch(ev, labels_for(ev), sizes)


def test_streaming_equals_batch_with_labels_arriving_up_to_40_days_late() -> None:
    """Labels of transactions deep in the retained history, and of transactions already let go: the
    fraud rates (window transactions confirmed by then) and counts (confirmations in the window) agree."""
    ev = history(n=700, users=15, seed=17)
    labels = labels_for(ev, fraud_share=0.4, seed=3, max_delay_days=40)
    _assert_stream_equals_batch(ev, labels, [13, 1, 60])


def test_label_known_only_after_its_label_time_counts() -> None:
    ev = history(n=300, users=5, seed=5)
    labels = labels_for(ev, fraud_share=0.5)
    stream = _stream(ev, labels, [10])
    rows = stream["device_activity"].set_index("transaction_id")
    attached = F.attach_entities(labels, ev)
    frauds = attached[attached.is_fraud]
    times = ev.set_index("transaction_id")["event_time"]
    for txn_id in rows.index[::17]:
        t = times[txn_id]
        dev = ev.set_index("transaction_id").loc[txn_id, "device_id"]
        window = (frauds.label_time <= t) & (frauds.label_time > t - pd.Timedelta(days=30))
        known = frauds[(frauds.device_id == dev) & window]
        assert rows.loc[txn_id, "device_fraud_count_30d"] == len(known)


def test_replayed_events_change_nothing() -> None:
    ev = history(n=200, users=6, seed=2)
    state = FeatureState()
    first = state.update(ev.iloc[:150])
    held = state.events.copy()
    again = state.update(ev.iloc[100:150])
    assert first and again == {}
    pd.testing.assert_frame_equal(state.events, held)


def test_a_late_event_never_replaces_a_newer_online_row() -> None:
    """Online stores keep one row per entity (SQLite overwrites whatever it holds): a late event's row
    goes offline, and online only where it is the entity's latest."""
    ev = history(n=200, users=5, seed=3).sort_values("event_time", kind="stable").reset_index(drop=True)
    late = ev.iloc[[150]]  # arrives after the events that follow it in time
    on_time = ev.drop(index=150)
    state = FeatureState()
    state.update(on_time)
    change = state.compute(late)
    assert len(change.rows["user_activity"]) == 1  # its own row, for the offline store
    user = late["user_id"].iloc[0]
    newer = on_time[(on_time.user_id == user) & (on_time.event_time > late.event_time.iloc[0])]
    assert len(newer)  # the case is exercised
    assert change.online["user_activity"].empty
    fresh = ev.iloc[[-1]].assign(transaction_id="fresh", event_time=ev.event_time.max() + pd.Timedelta(seconds=1))
    change = state.compute(fresh)
    assert list(change.online["user_activity"]["transaction_id"]) == ["fresh"]
