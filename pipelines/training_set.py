"""Point-in-time training rows: each labelled transaction with the features known strictly before it.

Feast's join takes a feature row whose timestamp equals the entity timestamp, so every lookup asks
for the state at (event_time - 1 microsecond): the transaction itself, any later one and any row at
the same instant stay invisible. Two quirks of Feast's file offline store are handled here: it drops
an entity row whose entity only has *later* feature rows (instead of returning nulls), and it merges
entity rows that share keys and timestamp. So each view is retrieved on its own, for the distinct
(key, timestamp) pairs, and joined back with a left join: no prior row means missing, never dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from feast import FeatureStore

from feature_repo.repo import ALL_VIEWS
from fraud import features as F

log = logging.getLogger(__name__)

ONE_US = pd.Timedelta(microseconds=1)
LOOKUP_TS = "lookup_timestamp"


def known_labels(labels: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Labels as known at `cutoff`: only those whose label_time is not after it."""
    lt = pd.to_datetime(labels["label_time"], utc=True)
    return labels[lt <= cutoff]


def stored_features_before(store: FeatureStore, txns: pd.DataFrame) -> pd.DataFrame:
    """For each transaction, every stored feature as of strictly before its event_time (aligned to txns)."""
    base = txns[["transaction_id", "user_id", "device_id", "ip_address", "destination_address"]].copy()
    base[LOOKUP_TS] = pd.to_datetime(txns["event_time"], utc=True) - ONE_US
    out: dict[str, Any] = {}
    for view, (entity, names) in ALL_VIEWS.items():
        key = entity.join_key
        wanted = base.loc[base[key].notna(), [key, LOOKUP_TS]].drop_duplicates()
        if wanted.empty:
            for name in names:
                out[name] = pd.Series(pd.NA, index=txns.index)
            continue
        entity_df = wanted.rename(columns={LOOKUP_TS: "event_timestamp"})
        got = store.get_historical_features(entity_df=entity_df, features=[f"{view}:{n}" for n in names]).to_df()
        got = got.rename(columns={"event_timestamp": LOOKUP_TS})
        got[LOOKUP_TS] = pd.to_datetime(got[LOOKUP_TS], utc=True)
        got = got.drop_duplicates([key, LOOKUP_TS])
        merged = base[[key, LOOKUP_TS]].merge(got, on=[key, LOOKUP_TS], how="left")
        for name in names:
            out[name] = merged[name].to_numpy()
    return pd.DataFrame(out, index=txns.index)


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
    stored = stored_features_before(store, txns)
    request = F.request_features(txns, stored)
    return pd.concat([txns, stored, request], axis=1)
