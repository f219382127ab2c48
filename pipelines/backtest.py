"""`fraud backtest`: score historical transactions as the model would have seen them live.

Each transaction gets the stored features known strictly before it (the same point-in-time join as
training) plus its request-time features, then a registered model's calibrated score and decision.
Writes transaction_id, event_time, score, decision and model_version (Parquet or CSV by extension).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud import features as F
from fraud.contracts import validate_transactions_frame
from fraud.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class BacktestReport:
    """What a backtest scored and where it wrote it."""

    rows: int
    rejected: int
    version: str
    out: Path
    decisions: dict[str, int]


def score_history(settings: TrainSettings, txns: pd.DataFrame, version: str | None = None) -> pd.DataFrame:
    """Point-in-time scores and decisions for canonical transactions (champion unless `version`)."""
    from fraud import history as H
    from fraud import store as S
    from models.bundle import load_bundle
    from pipelines.training_set import stored_features_before

    bundle = load_bundle(
        settings.tracking_uri, name=settings.train_model_name, alias=None if version else "champion", version=version
    )
    txns = txns.reset_index(drop=True)
    history, labels = H.read(settings.data_dir, "transactions"), H.read(settings.data_dir, "labels")
    stored = stored_features_before(S.open_store(settings), txns, history, labels)
    X = F.model_matrix(stored, F.request_features(txns, stored))
    p = bundle.proba(X)
    return pd.DataFrame(
        {
            "transaction_id": txns["transaction_id"].to_numpy(),
            "event_time": pd.to_datetime(txns["event_time"], utc=True),
            "score": p,
            "decision": bundle.decide(p),
            "model_version": bundle.version,
        }
    )


def backtest(settings: TrainSettings, transactions: Path, out: Path, version: str | None = None) -> BacktestReport:
    """Read transactions (Parquet/CSV, canonical schema), score them point-in-time, write the scores."""
    from pipelines.backfill import read_table

    good, bad = validate_transactions_frame(read_table(transactions))
    if len(bad):
        log.warning("%d transactions rejected by the contract (first: %s)", len(bad), bad["error"].iloc[0])
    if good.empty:
        raise ValueError(f"{transactions}: no valid transactions")
    scores = score_history(settings, good, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        scores.to_csv(out, index=False)
    else:
        scores.to_parquet(out, index=False)
    counts = {str(k): int(v) for k, v in scores["decision"].value_counts().items()}
    return BacktestReport(len(scores), len(bad), str(scores["model_version"].iloc[0]), out, counts)
