"""Reference features: `as_of_join` (pandas, for large sets) returns exactly what Feast's
`get_historical_features` returns; training reads only committed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud import aggregates as A
from fraud import history as H
from fraud import store as S
from fraud.atomic import AtomicBatch, staging_folder
from fraud.settings import BackfillSettings
from pipelines.backfill import backfill
from pipelines.training_set import as_of_join, feast_join, stored_features_before
from tests.factories import history, labels_for

pytestmark = pytest.mark.integration


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality, missing == missing, timestamps compared in UTC, floats to 1e-9."""
    if pd.api.types.is_datetime64_any_dtype(a) or pd.api.types.is_datetime64_any_dtype(b):
        x, y = pd.to_datetime(a, utc=True), pd.to_datetime(b, utc=True)
        return ((x == y) | (x.isna() & y.isna())).to_numpy()
    if a.dtype == object or b.dtype == object:
        x, y = a.astype(object), b.astype(object)
        return ((x == y) | (x.isna() & y.isna())).to_numpy()
    return np.isclose(a.astype(float), b.astype(float), rtol=1e-9, atol=0, equal_nan=True)


def _backfilled(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, BackfillSettings]:
    """A small history with labels, accounts and address lists, backfilled into a fresh store."""
    ev = history(n=300, users=15, seed=21)
    ev["event_time"] = ev["event_time"] + pd.to_timedelta(np.arange(len(ev)), unit="ms")  # no tied timestamps
    labels = labels_for(ev, seed=5)
    accounts = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(12)],  # u12..u14 have no account row: missing
            "signup_time": pd.Timestamp("2025-12-01", tz="UTC") + pd.to_timedelta(np.arange(12), unit="D"),
            "kyc_tier": np.arange(12) % 3 + 1,
            "country_of_residence": "DE",
        }
    )
    # a1 listed before the history, a2 in the middle of it (earlier lookups: missing), a3/a4 never
    lists = pd.DataFrame(
        {
            "address": ["a1", "a2"],
            "list_name": ["sanctions", "mixer"],
            "listed_time": [pd.Timestamp("2025-12-15", tz="UTC"), ev["event_time"].iloc[150]],
        }
    )
    for name, frame in (("t", ev), ("l", labels), ("acc", accounts), ("lists", lists)):
        frame.to_parquet(tmp_path / f"{name}.parquet")
    settings = BackfillSettings(data_dir=tmp_path / "data")
    backfill(
        settings,
        tmp_path / "t.parquet",
        tmp_path / "l.parquet",
        tmp_path / "acc.parquet",
        tmp_path / "lists.parquet",
        show_progress=False,
    )
    return ev, labels, settings


def test_as_of_join_equals_feast_on_a_sample(tmp_path: Path) -> None:
    ev, labels, settings = _backfilled(tmp_path)
    store = S.open_store(settings)
    # every transaction (each user's first one has only later rows), plus probes before any history
    # and with unknown entities: all must come back missing, never dropped
    probes = ev.sample(20, random_state=1).assign(
        transaction_id=lambda d: "probe-" + d["transaction_id"],
        event_time=pd.Timestamp("2025-06-01", tz="UTC"),
    )
    strangers = ev.head(5).assign(
        transaction_id=lambda d: "stranger-" + d["transaction_id"],
        user_id="nobody",
        device_id="dev-unknown",
        ip_address="203.0.113.9",
        destination_address="a-unknown",
    )
    lookups = pd.concat([ev, probes, strangers], ignore_index=True)
    fast = as_of_join(store, lookups)
    reference = feast_join(store, lookups)
    assert list(fast.columns) == list(reference.columns)
    mismatched = {c: int((~_same(fast[c], reference[c])).sum()) for c in fast.columns}
    assert not {c: n for c, n in mismatched.items() if n}, mismatched
    # the cases that matter were exercised
    assert fast.loc[len(ev) :, "kyc_tier"].isna().all()  # probes and strangers: missing
    assert fast["on_sanctions_list"].eq(1).any() and fast["on_mixer_list"].isna().any()
    assert fast["kyc_tier"].notna().any() and fast["kyc_tier"].isna().any()
    # the dispatcher picks one or the other (both agree, so callers cannot tell), beside the entity features
    both = stored_features_before(store, lookups, ev, labels)
    assert list(both.columns) == [*A.features_at(ev, labels, lookups.head(1)).columns, *fast.columns]
    assert both.loc[len(ev) :, "txn_count_total"].isna().all()


def test_training_reads_only_committed_offline_files(tmp_path: Path) -> None:
    """A staged file (an ingest batch not yet committed, or cut short by a crash) is not read: neither a
    reference view's part nor a part of the event history."""
    ev, _, settings = _backfilled(tmp_path)
    store = S.open_store(settings)
    before = as_of_join(store, ev)
    rows = S.read_offline(settings, "account").head(5)
    rows["kyc_tier"] = 99
    rows["event_timestamp"] = rows["event_timestamp"] + pd.Timedelta(microseconds=1)  # would win every join
    batch = AtomicBatch(tmp_path / "manifests")
    batch.stage(S.view_path(settings.offline_dir, "account") / "part-staged.parquet", S.to_table("account", rows))
    assert any(staging_folder(S.view_path(settings.offline_dir, "account")).iterdir())
    H.append(
        settings.data_dir,
        "transactions",
        ev.head(50).assign(transaction_id=lambda d: "x" + d["transaction_id"]),
        tag="ingest",
        batch=batch,
    )
    for join in (as_of_join, feast_join):
        got = join(store, ev)
        assert not (got["kyc_tier"] == 99).any(), join.__name__
        pd.testing.assert_series_equal(got["kyc_tier"], before["kyc_tier"], check_dtype=False)
    assert len(H.read(settings.data_dir, "transactions")) == len(ev)  # the staged history part is not read
