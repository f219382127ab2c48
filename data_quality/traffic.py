"""Scoring traffic as a table: the scorer's `fraud-scores` audit records flattened, one row per decision.

Pure: records in (dicts, as `services.scorer.core.audit_record` writes them), DataFrame out. The
`scoring_traffic` suite, `fraud validate scoring_traffic` and `fraud monitor` all read this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from fraud import features as F

DECISIONS = ("approve", "review", "decline")
# Columns besides the model features; `missing_groups` counts feature views without an online row.
BASE_COLUMNS = [
    "transaction_id",
    "event_time",
    "scored_at",
    "model_version",
    "score",
    "decision",
    "degraded",
    "missing_groups",
]


def traffic_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Audit records as the scoring-traffic table: `BASE_COLUMNS` then every model feature (NaN if absent)."""
    names = F.model_feature_names()
    base: dict[str, list[Any]] = {c: [] for c in BASE_COLUMNS}
    values: list[list[float]] = []
    for rec in records:
        txn = rec.get("transaction") or {}
        base["transaction_id"].append(rec.get("transaction_id"))
        base["event_time"].append(txn.get("event_time"))
        base["scored_at"].append(rec.get("scored_at"))
        base["model_version"].append(rec.get("model_version"))
        base["score"].append(rec.get("score"))
        base["decision"].append(rec.get("decision"))
        base["degraded"].append(int(bool(rec.get("degraded"))))
        base["missing_groups"].append(len(rec.get("missing_features") or []))
        feats = rec.get("features") or {}
        values.append([np.nan if feats.get(n) is None else float(feats[n]) for n in names])
    frame = pd.DataFrame(base)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True, format="ISO8601")
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce").astype("float64")
    frame["degraded"] = frame["degraded"].astype("int64")
    frame["missing_groups"] = frame["missing_groups"].astype("int64")
    matrix = np.asarray(values, dtype=np.float64).reshape(len(frame), len(names))
    return pd.concat([frame, pd.DataFrame(matrix, columns=names)], axis=1)
