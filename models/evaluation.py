"""Test-period metrics for any score: ranking quality, the operating point, cost and recall per typology."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraud.contracts import FraudType
from models.bundle import Thresholds
from models.thresholds import CostModel, expected_cost

TOP_K_PER_DAY = 100


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    """Share of fraud caught when at most `max_fpr` of legitimate transactions are flagged."""
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr[fpr <= max_fpr]))


def precision_top_k_per_day(y: np.ndarray, score: np.ndarray, days: np.ndarray, k: int = TOP_K_PER_DAY) -> float:
    """Precision of the `k` highest-scored transactions of each day (what an alert queue sees), pooled."""
    frame = pd.DataFrame({"y": y, "s": score, "d": days})
    top = frame.sort_values("s", ascending=False, kind="stable").groupby("d", sort=False).head(k)
    return float(top["y"].mean()) if len(top) else float("nan")


def evaluate(
    y: np.ndarray,
    score: np.ndarray,
    amount_usd: np.ndarray,
    fraud_type: pd.Series,
    event_time: pd.Series,
    thresholds: Thresholds,
    cost: CostModel,
) -> dict[str, Any]:
    """Every test metric of one scorer; `score` is compared with `thresholds` for the operating point."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    flagged = score >= thresholds.review
    days = pd.to_datetime(event_time, utc=True).dt.floor("D").to_numpy()
    types = fraud_type.astype("object").to_numpy()
    per_type: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for t in FraudType:
        mask = y & (types == t.value)
        counts[t.value] = int(mask.sum())
        per_type[t.value] = float(flagged[mask].mean()) if mask.any() else None
    both = y.any() and not y.all()
    return {
        "rows": len(y),
        "frauds": int(y.sum()),
        "average_precision": float(average_precision_score(y, score)) if both else float("nan"),
        "roc_auc": float(roc_auc_score(y, score)) if both else float("nan"),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, 0.01),
        f"precision_top{TOP_K_PER_DAY}_per_day": precision_top_k_per_day(y, score, days),
        "recall_at_thresholds": float(flagged[y].mean()) if y.any() else float("nan"),
        "precision_at_thresholds": float(y[flagged].mean()) if flagged.any() else float("nan"),
        "thresholds": {"review": thresholds.review, "decline": thresholds.decline},
        "cost": expected_cost(score, y, amount_usd, thresholds, cost),
        "recall_by_fraud_type": per_type,
        "frauds_by_type": counts,
    }


def flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics flattened for MLflow (`prefix_name`, per-typology recall included)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            if np.isfinite(value):
                out[f"{prefix}_{key}"] = float(value)
        elif isinstance(value, dict) and key in ("cost", "recall_by_fraud_type"):
            sub = "cost" if key == "cost" else "recall"
            for k, v in value.items():
                if isinstance(v, int | float) and np.isfinite(v):
                    out[f"{prefix}_{sub}_{k}"] = float(v)
    return out
