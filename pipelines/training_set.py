"""Point-in-time training rows: each labelled transaction with the features known strictly before it.

Entity features (the user's and each counterparty's windows, totals and label-derived risk) are
evaluated at each transaction's instant t by `fraud.aggregates.features_at` over the committed event
history and the labels known at the cutoff: windows over [t - w, t), a label counting from its
`label_time` on. The scorer finishes the same functions at the request's instant from the online
rows, so a request at t sees what a training row at t saw.

Reference features (the account's signup time and KYC tier, an address's lists) come from Feast's
point-in-time join of the `account` and `address_list` views. Feast's join takes a feature row whose
timestamp equals the entity timestamp, so every lookup asks for the state at (event_time - 1
microsecond). Two quirks of Feast's file offline store are handled here: it drops an entity row whose
entity only has *later* feature rows (instead of returning nulls), and it merges entity rows that
share keys and timestamp. So each view is retrieved on its own, for the distinct (key, timestamp)
pairs, and joined back with a left join: no prior row means missing, never dropped. Entities with no
row at all are not sent to Feast (its dask join fails on them).

Feast's file store joins every entity row with every feature row of its key (quadratic per key): past
about `FEAST_MAX_ROWS` transactions it runs out of memory on two cores. Larger sets take `as_of_join`,
the same join (latest row at or before the lookup time, within the view's TTL) as a pandas
`merge_asof` over the very same committed Parquet files the store's views read. A test checks both
return the same values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FileSource

from feature_repo.repo import REFERENCE_VIEWS
from fraud import aggregates as A
from fraud import features as F
from fraud.store import times_back

log = logging.getLogger(__name__)

ONE_US = pd.Timedelta(microseconds=1)
LOOKUP_TS = "lookup_timestamp"
FEAST_MAX_ROWS = 20_000  # above this, `as_of_join` (Feast's file store is quadratic per entity)


def known_labels(labels: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Labels as known at `cutoff`: only those whose label_time is not after it."""
    lt = pd.to_datetime(labels["label_time"], utc=True)
    return labels[lt <= cutoff]


def stored_features_before(
    store: FeatureStore, txns: pd.DataFrame, history: pd.DataFrame, labels: pd.DataFrame | None
) -> pd.DataFrame:
    """For each transaction, every stored feature known strictly before its event_time (aligned to txns):
    entity features from the `history` of events and the `labels` known, reference features from Feast."""
    entity = A.features_at(history, labels, txns)
    reference = as_of_join(store, txns) if len(txns) > FEAST_MAX_ROWS else feast_join(store, txns)
    return pd.concat([entity, reference], axis=1)


def _lookups(txns: pd.DataFrame) -> pd.DataFrame:
    """Entity keys of each transaction and the lookup time: 1 microsecond before the event."""
    base = txns[["transaction_id", "user_id", "device_id", "ip_address", "destination_address"]].copy()
    base[LOOKUP_TS] = pd.to_datetime(txns["event_time"], utc=True) - ONE_US
    return base


def feast_join(store: FeatureStore, txns: pd.DataFrame) -> pd.DataFrame:
    """`stored_features_before` through Feast's `get_historical_features`, view by view."""
    base = _lookups(txns)
    out: dict[str, Any] = {}
    for view, (entity, names) in REFERENCE_VIEWS.items():
        key = entity.join_key
        wanted = base.loc[base[key].notna(), [key, LOOKUP_TS]].drop_duplicates()
        # an entity with no row at all is missing by definition; asking Feast about it crashes its dask join
        wanted = wanted[wanted[key].isin(_stored_keys(store, view, key))]
        if wanted.empty:
            for name in names:
                out[name] = pd.Series(pd.NA, index=txns.index)
            continue
        entity_df = wanted.rename(columns={LOOKUP_TS: "event_timestamp"})
        refs = [f"{view}:{field}" for field in names]
        got = times_back(view, store.get_historical_features(entity_df=entity_df, features=refs).to_df())
        got = got.rename(columns={"event_timestamp": LOOKUP_TS})
        got[LOOKUP_TS] = pd.to_datetime(got[LOOKUP_TS], utc=True)
        got = got.drop_duplicates([key, LOOKUP_TS])
        merged = base[[key, LOOKUP_TS]].merge(got, on=[key, LOOKUP_TS], how="left")
        for name in names:
            out[name] = merged[name].to_numpy()
    return pd.DataFrame(out, index=txns.index)


def _stored_keys(store: FeatureStore, view: str, key: str) -> set[str]:
    """Every entity key with at least one row in a view's offline source."""
    keys: set[str] = set()
    for part in _offline_parts(store, view):
        keys.update(pq.read_table(part, columns=[key]).column(key).drop_null().to_pylist())
    return keys


def _offline_parts(store: FeatureStore, view: str) -> list[Path]:
    """The Parquet part files the store's view reads (its batch source folder), in write order."""
    source = store.get_feature_view(view).batch_source
    # relative to the repository, as Feast resolves it (`feature_repo.repo.definitions`)
    folder = Path(FileSource.get_uri_for_file_path(store.config.repo_path, getattr(source, "path", "")))
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]


def as_of_join(store: FeatureStore, txns: pd.DataFrame) -> pd.DataFrame:
    """`stored_features_before` as a pandas as-of join over the views' offline Parquet folders."""
    base = _lookups(txns)
    lookup_us = base[LOOKUP_TS].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    frames: list[pd.DataFrame] = []
    for view, (entity, names) in REFERENCE_VIEWS.items():
        key = entity.join_key
        ttl_us = int(store.get_feature_view(view).ttl.total_seconds() * 1_000_000)  # type: ignore[union-attr]
        parts = _offline_parts(store, view)
        columns = [key, "event_timestamp", *names]
        table = pa.concat_tables(
            [pq.read_table(p, columns=columns) for p in parts], promote_options="default"
        ).combine_chunks()
        stamp = table.column("event_timestamp").cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_numpy()
        rows = pd.DataFrame({"_key": table.column(key).to_pandas(), "_ts": stamp, "_row": np.arange(len(stamp))})
        rows = rows[rows["_key"].notna()].sort_values("_ts", kind="stable")  # ties keep storage order
        left = pd.DataFrame({"_key": base[key].to_numpy(), "_ts": lookup_us, "_pos": np.arange(len(base))})
        left = left[left["_key"].notna()].sort_values("_ts", kind="stable")
        hit = np.full(len(base), -1, dtype=np.int64)
        if len(left) and len(rows):
            joined = pd.merge_asof(left, rows, on="_ts", by="_key", direction="backward", allow_exact_matches=True)
            row = joined["_row"].fillna(-1).to_numpy(dtype=np.int64)
            within = (row >= 0) & (stamp[np.maximum(row, 0)] >= joined["_ts"].to_numpy() - ttl_us)
            hit[joined["_pos"].to_numpy()[within]] = row[within]
        taker = pa.array(np.maximum(hit, 0), mask=hit < 0)
        if table.num_rows:
            frame = times_back(view, table.select(names).take(taker).to_pandas())[names]
        else:
            frame = pd.DataFrame({name: np.full(len(base), np.nan) for name in names})
        frame.index = txns.index
        frames.append(frame)
    return pd.concat(frames, axis=1)


def training_frame(
    store: FeatureStore,
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    cutoff: pd.Timestamp,
) -> pd.DataFrame:
    """Labelled transactions known at `cutoff`, with point-in-time stored and request-time features.

    Returns the transactions' columns, every stored feature, every request feature, `is_fraud`,
    `fraud_type` and `label_time`.
    """
    labels = known_labels(labels, cutoff)
    txns = transactions.merge(labels, on="transaction_id", how="inner")
    txns = txns[pd.to_datetime(txns["event_time"], utc=True) <= cutoff].reset_index(drop=True)
    log.info("training rows known at %s: %d", cutoff, len(txns))
    history = transactions[pd.to_datetime(transactions["event_time"], utc=True) <= cutoff]
    stored = stored_features_before(store, txns, history, labels)
    request = F.request_features(txns, stored)
    return pd.concat([txns, stored, request], axis=1)
