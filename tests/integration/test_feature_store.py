"""Backfill into real Feast stores (SQLite online, Parquet offline) and point-in-time retrieval."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from feature_repo.repo import ALL_VIEWS
from fraud import aggregates as A
from fraud import features as F
from fraud import history as H
from fraud import store as S
from fraud.contracts import Transaction
from fraud.settings import BackfillSettings
from pipelines.backfill import backfill, online_view_rows
from pipelines.training_set import training_frame
from tests.factories import history, labels_for

pytestmark = pytest.mark.integration
T0 = pd.Timestamp("2026-03-01 12:00:00.654321", tz="UTC")  # sub-second: stores must keep microseconds


def _txn(i: int, minutes: float, user: str = "u1", device: str = "dev-A", **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "transaction_id": f"tx{i}",
        "event_time": (T0 + pd.Timedelta(minutes=minutes)).isoformat(),
        "user_id": user,
        "type": "send",
        "asset": "BTC",
        "amount": 0.1,
        "amount_usd": 100.0 * (i + 1),
        "payment_method": "crypto",
        "destination_address": "bc1qdest",
        "source_address": None,
        "device_id": device,
        "ip_address": "192.0.2.1",
        "country": "DE",
        "channel": "web",
    }
    row.update(kw)
    return row


def _settings(tmp_path: Path) -> BackfillSettings:
    return BackfillSettings(data_dir=tmp_path / "data")


def test_point_in_time_rows_see_only_the_past(tmp_path: Path) -> None:
    """A constructed case: no training row sees its own or a later transaction, or an unknown label."""
    txns = pd.DataFrame(
        [
            _txn(1, 0),
            _txn(2, 60),  # one hour later
            _txn(3, 120, user="u2"),  # same device, other user; its label arrives at +150 min
            _txn(4, 180),  # after the label is known: still sees device row as of tx3 (written before)
            _txn(5, 181, user="u3"),  # device row of tx4 counts the label now
        ]
    )
    labels = pd.DataFrame(
        {
            "transaction_id": ["tx1", "tx2", "tx3", "tx4", "tx5"],
            "is_fraud": [False, False, True, False, False],
            "fraud_type": [None, None, "account_takeover", None, None],
            "label_time": [(T0 + pd.Timedelta(minutes=m)).isoformat() for m in (500, 500, 150, 500, 9000)],
        }
    )
    txns.to_csv(tmp_path / "t.csv", index=False)
    labels.to_csv(tmp_path / "l.csv", index=False)
    settings = _settings(tmp_path)
    backfill(settings, tmp_path / "t.csv", tmp_path / "l.csv", show_progress=False)
    store = S.open_store(settings)
    cutoff = T0 + pd.Timedelta(days=2)
    frame = training_frame(store, txns.assign(event_time=pd.to_datetime(txns.event_time)), labels, cutoff)
    frame = frame.set_index("transaction_id")
    # tx5's label is not known at the cutoff: it is not a training row
    assert "tx5" not in frame.index
    # the user's own history strictly before: tx1 sees nothing, tx2 sees tx1 only, tx4 sees tx1+tx2
    assert frame["txn_count_total"].isna()["tx1"]
    assert frame.loc["tx2", "txn_count_total"] == 1
    assert frame.loc["tx2", "usd_sum_24h"] == pytest.approx(200.0)  # tx1 only, not tx2's own 300
    assert frame.loc["tx4", "txn_count_total"] == 2
    # device risk: tx3's fraud label, known at +150 min, counts for tx4 at +180 min with no event of the
    # device in between (a label is an event of its own), and for nothing before +150 min
    assert frame.loc["tx3", "device_fraud_count_7d"] == 0
    assert frame.loc["tx4", "device_fraud_count_7d"] == 1
    rate = frame["device_fraud_rate_7d"].astype(float)
    assert rate["tx4"] > rate["tx3"]
    assert frame.loc["tx4", "device_distinct_users_24h"] == 2  # u1 and u2, not u1 again via tx4 itself
    # request-time flags from the stored state before the transaction
    assert frame.loc["tx1", "new_device"] == 1 and frame.loc["tx2", "new_device"] == 0
    assert frame.loc["tx3", "new_device"] == 1  # new for u2, although the device is known to the exchange
    assert frame.loc["tx2", "seconds_since_prev_txn"] == pytest.approx(3600.0)


def test_backfill_reports_bad_rows_and_materializes_latest_values(tmp_path: Path) -> None:
    ev = history(n=400, users=10, seed=4)
    labels = labels_for(ev)
    bad = pd.DataFrame(
        [
            _txn(900, 0, asset="DOGE"),
            _txn(901, 0, amount=-1.0),
            _txn(902, 0) | {"event_time": "2026-03-01T12:00:00.654321"},  # naive
            _txn(903, 0, destination_address=None),
        ]
    )
    raw = pd.concat([ev.assign(event_time=ev.event_time.map(pd.Timestamp.isoformat)), bad], ignore_index=True)
    raw.to_csv(tmp_path / "t.csv", index=False)
    labels.to_parquet(tmp_path / "l.parquet")
    settings = _settings(tmp_path)
    report = backfill(settings, tmp_path / "t.csv", tmp_path / "l.parquet", show_progress=False)
    assert report.transactions_in == 400 and report.transactions_rejected == 4
    rejects = pd.read_csv(report.rejects_path)  # type: ignore[arg-type]
    assert sorted(rejects.error.str.split(":").str[0]) == ["amount", "asset", "destination_address", "event_time"]
    # online: each entity's row is the state a stream of the same history ends with
    expected = online_view_rows(ev, labels)
    store = S.open_store(settings)
    for view in ("user_activity", "device_activity"):
        key, fields = ALL_VIEWS[view][0].join_key, ALL_VIEWS[view][1]
        want = expected[view].set_index(key)
        online = S.online_features(store, [{key: k} for k in want.index], view=view).set_index(key)
        for field in fields:
            for k in want.index:
                np.testing.assert_allclose(
                    np.asarray(online.loc[k, field]), want.loc[k, field], rtol=1e-12, err_msg=field
                )
    # a second backfill replaces the first one: the history holds each event once
    backfill(settings, tmp_path / "t.csv", tmp_path / "l.parquet", show_progress=False)
    assert len(H.read(settings.data_dir, "transactions")) == 400


def test_online_rows_of_a_backfill_serve_what_training_computes(tmp_path: Path) -> None:
    """Read back through Feast, the rows serve a request at t exactly what a training row at t gets."""
    from services.scorer.core import stored_columns, transaction_columns
    from services.scorer.online import OnlineFeatureReader

    ev = history(n=600, users=10, seed=6)
    labels = labels_for(ev)
    ev.to_parquet(tmp_path / "t.parquet")
    labels.to_parquet(tmp_path / "l.parquet")
    settings = _settings(tmp_path)
    report = backfill(settings, tmp_path / "t.parquet", tmp_path / "l.parquet", show_progress=False)
    assert report.online_rows["user_activity"] == ev.user_id.nunique()
    later = ev.sample(40, random_state=1).reset_index(drop=True)
    later["event_time"] = ev.event_time.max() + pd.to_timedelta(np.arange(40) * 7_777_777_777, unit="us")
    later["transaction_id"] = [f"new{i}" for i in range(40)]
    requests = [Transaction.model_validate(r) for r in later.to_dict("records")]
    reader = OnlineFeatureReader(S.open_store(settings), timeout_s=10, retry_s=1)
    served = stored_columns(reader.read(requests), transaction_columns(requests))
    training = A.features_at(ev, labels, later)
    checked = 0
    for name in training.columns:
        got, want = served[name], training[name]
        if want.dtype.kind == "M":
            assert list(pd.to_datetime(got, utc=True)) == list(want), name
        else:
            np.testing.assert_allclose(np.asarray(got, dtype=float), want.to_numpy(float), rtol=1e-9, err_msg=name)
        checked += 1
    assert checked == len(F.user_feature_names()) + sum(len(F.counterparty_feature_names(k)) for k in F.COUNTERPARTIES)


def _writer(data_dir: str, seconds: float) -> None:
    settings = BackfillSettings(data_dir=Path(data_dir))
    store = S.open_store(settings)
    ev = history(n=200, users=50, seed=8)
    rows = online_view_rows(ev, None)["user_activity"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        S.write_online(store, "user_activity", rows.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))


def test_sqlite_online_store_serves_reads_while_another_process_writes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    S.apply(settings)
    proc = mp.get_context("spawn").Process(target=_writer, args=(str(settings.data_dir), 6.0))
    proc.start()
    store = S.open_store(settings)
    reads = 0
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline and (proc.is_alive() or reads < 50):
        S.online_features(
            store, [{"user_id": "u1"}], view="user_activity"
        )  # raises "database is locked" without WAL/busy wait
        reads += 1
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert reads > 50


def test_write_online_stores_what_feast_write_to_online_store_stores(tmp_path: Path) -> None:
    """`write_online` (records built by `online_rows`) leaves the same bytes in SQLite as Feast's own
    `write_to_online_store` of the same rows: every view, every field, nulls and timestamps included."""
    import sqlite3

    events = history(n=600, users=40, seed=13)
    rows = online_view_rows(events, labels_for(events, seed=13), _accounts(events))
    ours, feast = _settings(tmp_path / "ours"), _settings(tmp_path / "feast")
    ours_store, feast_store = S.apply(ours), S.apply(feast)
    for view in ALL_VIEWS:
        if view not in rows:
            continue
        S.write_online(ours_store, view, rows[view])
        feast_store.write_to_online_store(view, S.to_feast_frame(view, S.latest_per_entity(view, rows[view])))
    checked, expected = 0, 0
    for view in rows:
        expected += rows[view][ALL_VIEWS[view][0].join_key].nunique() * len(ALL_VIEWS[view][1])
        table = f"{ours.feast_project}_{view}"
        query = f"SELECT entity_key, feature_name, value, event_ts FROM {table} ORDER BY entity_key, feature_name"
        with sqlite3.connect(ours.online_path) as a, sqlite3.connect(feast.online_path) as b:
            mine, theirs = a.execute(query).fetchall(), b.execute(query).fetchall()
        assert mine == theirs, view
        checked += len(mine)
    assert checked == expected > 150  # one record per entity and field


def _accounts(ev: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": sorted(ev.user_id.unique()),
            "signup_time": pd.Timestamp("2025-11-02 03:04:05.678901", tz="UTC")
            + pd.to_timedelta(np.arange(ev.user_id.nunique()) * 86_400_000_123, unit="us"),
            "kyc_tier": 1,
            "country_of_residence": "DE",
        }
    )


@pytest.mark.parametrize("per_view", [False, True], ids=["sqlite-one-query", "provider-per-view"])
def test_online_store_returns_times_to_the_microsecond(tmp_path: Path, per_view: bool) -> None:
    """Sub-second `signup_time` and the event times in the entities' state read back online (through
    Feast's SDK and through the scorer's reads) equal the offline values to the microsecond: ages and
    windows are the same in training and serving."""
    from services.scorer.online import ENTITY_KEYS, OnlineFeatureReader

    ev = history(n=300, users=10, seed=31)
    accounts = _accounts(ev)
    ev.to_parquet(tmp_path / "t.parquet")
    labels_for(ev, seed=31).to_parquet(tmp_path / "l.parquet")
    accounts.to_parquet(tmp_path / "a.parquet")
    settings = _settings(tmp_path)
    backfill(settings, tmp_path / "t.parquet", tmp_path / "l.parquet", tmp_path / "a.parquet", show_progress=False)
    store = S.open_store(settings)
    reader = OnlineFeatureReader(store, timeout_s=10, retry_s=1, per_view=per_view)
    offline = S.read_offline(settings, "account").set_index("user_id")["signup_time"]
    assert (offline.dt.microsecond != 0).all()  # the fixture has microseconds to lose
    users = list(offline.index)
    sdk = S.online_features(store, [{"user_id": u} for u in users], view="account")
    assert list(pd.to_datetime(sdk["signup_time"], utc=True)) == list(offline)
    requests = [SimpleNamespace(**(dict.fromkeys(ENTITY_KEYS, "") | {"user_id": u})) for u in users]
    read = reader.read(requests)  # type: ignore[arg-type]
    assert list(read.values["signup_time"]) == list(offline.dt.tz_localize(None).to_numpy(dtype="datetime64[us]"))
    times = {u: np.sort(F.to_micros(ev.loc[ev.user_id == u, "event_time"])) for u in users}
    for u, events in zip(users, read.values["user_events"], strict=True):
        held = events.reshape(-1, len(A.USER_COLUMNS))[:, 0]
        np.testing.assert_array_equal(held.astype(np.int64), times[u][-len(held) :])
