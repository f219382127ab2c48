"""Simulated traffic for drift tests: a baseline world and one after a price shock, as model features."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

from fraud import aggregates as A
from fraud import features as F
from pipelines.simulator import generate as G
from pipelines.simulator.config import BTC, ETH, SOL, SimConfig
from pipelines.simulator.prices import PricePath, price_path

# A price shock multiplies crypto prices: amounts move in units, USD values do not, so of the model's
# features only the unit balances of the shocked assets should drift.
SHOCKED_ASSETS = (BTC, ETH, SOL)
SHOCK_AFFECTED = ("balance_BTC", "balance_ETH", "balance_SOL")


def config(seed: int, users: int = 1500, days: int = 14) -> SimConfig:
    """A small simulated window (fast enough for a test)."""
    return SimConfig(seed=seed, users=users, days=days, start=datetime(2025, 3, 3, tzinfo=UTC))


def simulate(cfg: SimConfig, price_shock: float = 1.0) -> pd.DataFrame:
    """Transactions of a simulated window; `price_shock` multiplies BTC, ETH and SOL prices throughout."""

    def shocked(rng: np.random.Generator, start_us: int, days: int) -> PricePath:
        path = price_path(rng, start_us, days)
        prices = path.prices.copy()
        prices[list(SHOCKED_ASSETS)] *= price_shock
        return replace(path, prices=prices)

    with mock.patch.object(G, "price_path", shocked):
        history = G.generate(cfg)
    return history.transactions.to_pandas()


def feature_frame(txns: pd.DataFrame) -> pd.DataFrame:
    """The model's features per transaction: user features strictly before it plus request features."""
    stored = A.features_at(txns, None, txns)
    request = F.request_features(txns, stored)
    return F.model_matrix(stored, request)


def stand_in_scores(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stand-in for the model (USD size only, so prices do not move it) and its decisions."""
    score = 1.0 / (1.0 + np.exp(-(frame["log_amount_usd"].to_numpy() - 9.0)))
    return score, np.where(score > 0.9, "decline", np.where(score > 0.6, "review", "approve"))


def audit_records(txns: pd.DataFrame, frame: pd.DataFrame, model_version: str = "1") -> list[dict[str, Any]]:
    """`fraud-scores` records for traffic (a deterministic stand-in score that ignores prices)."""
    names = F.model_feature_names()
    score, decisions = stand_in_scores(frame)
    out: list[dict[str, Any]] = []
    matrix = frame[names].to_numpy(dtype=np.float64)
    ids = txns["transaction_id"].astype(str).tolist()
    times = [t.isoformat() for t in pd.to_datetime(txns["event_time"], utc=True)]
    scored_at = datetime.now(UTC).isoformat()
    for i, (txn_id, event_time) in enumerate(zip(ids, times, strict=True)):
        feats = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, matrix[i], strict=True)}
        out.append(
            {
                "schema_version": 1,
                "transaction_id": txn_id,
                "scored_at": scored_at,
                "model_version": model_version,
                "score": float(score[i]),
                "decision": str(decisions[i]),
                "degraded": False,
                "missing_features": [],
                "transaction": {"transaction_id": txn_id, "event_time": event_time},
                "features": feats,
            }
        )
    return out
