"""Review and decline thresholds, chosen on validation to minimise a stated cost.

The cost model (per transaction, in USD), `CostModel`:
- approve a fraud: its `amount_usd` is lost;
- review (either class): a fixed analyst cost, `review_cost` (the analyst stops a fraud);
- decline a legitimate transaction: customer friction and churn, `decline_cost`;
- decline a fraud, approve a legitimate transaction: free.
Analysts are a finite team: at most `max_review_rate` of transactions may go to review.

The rule: over a grid of candidate thresholds (quantiles of the validation scores), pick the pair
review <= decline whose total validation cost is lowest while the review share stays within
capacity. Thresholds are on the calibrated probability, so they carry over between model versions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.bundle import Thresholds


@dataclass(frozen=True)
class CostModel:
    """What each outcome costs, in USD per transaction."""

    review_cost: float = 5.0
    decline_cost: float = 30.0
    max_review_rate: float = 0.01

    def describe(self) -> str:
        """One line for reports and the model card."""
        return (
            f"missed fraud = its amount_usd; review = ${self.review_cost:g}; declined legitimate = "
            f"${self.decline_cost:g}; at most {self.max_review_rate:.1%} of transactions reviewed"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_cost(
    p: np.ndarray, y: np.ndarray, amount_usd: np.ndarray, thresholds: Thresholds, cost: CostModel
) -> dict[str, float]:
    """Total cost and its parts for decisions at `thresholds` (y: 1 = fraud)."""
    p, y, amount = np.asarray(p), np.asarray(y).astype(bool), np.asarray(amount_usd, dtype=np.float64)
    declined = p >= thresholds.decline
    reviewed = (p >= thresholds.review) & ~declined
    approved = ~(declined | reviewed)
    missed = float(amount[approved & y].sum())
    review = float(reviewed.sum() * cost.review_cost)
    friction = float((declined & ~y).sum() * cost.decline_cost)
    total = missed + review + friction
    n = max(len(p), 1)
    return {
        "total": total,
        "per_1k_txns": 1000.0 * total / n,
        "missed_fraud_usd": missed,
        "review_usd": review,
        "friction_usd": friction,
        "review_rate": float(reviewed.mean()) if len(p) else 0.0,
        "decline_rate": float(declined.mean()) if len(p) else 0.0,
        "fraud_usd_total": float(amount[y].sum()),
    }


def choose(
    p: np.ndarray, y: np.ndarray, amount_usd: np.ndarray, cost: CostModel | None = None, grid: int = 400
) -> Thresholds:
    """The cheapest (review, decline) pair on validation within review capacity."""
    cost = cost or CostModel()
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    amount = np.asarray(amount_usd, dtype=np.float64)
    qs = np.concatenate([np.linspace(0.0, 0.9, grid // 4), 1.0 - np.geomspace(0.1, 1e-5, grid - grid // 4)])
    cand = np.unique(np.concatenate([np.quantile(p, qs), [1.0 + 1e-9]]))
    order = np.argsort(p)
    ps, ys, am = p[order], y[order], amount[order]
    # for each candidate t: index of the first score >= t
    idx = np.searchsorted(ps, cand, side="left")
    n = len(ps)
    fraud_usd_below = np.concatenate([[0.0], np.cumsum(np.where(ys, am, 0.0))])[idx]  # missed if approved
    at_or_above = n - idx
    legit_at_or_above = np.concatenate([[0], np.cumsum(~ys)])[-1] - np.concatenate([[0], np.cumsum(~ys)])[idx]
    r = np.arange(len(cand))[:, None]
    d = np.arange(len(cand))[None, :]
    reviewed = at_or_above[r] - at_or_above[d]
    total = fraud_usd_below[r] + cost.review_cost * reviewed + cost.decline_cost * legit_at_or_above[d]
    feasible = (d >= r) & (reviewed <= cost.max_review_rate * n)
    total = np.where(feasible, total, np.inf)
    i, j = np.unravel_index(np.argmin(total), total.shape)
    return Thresholds(review=float(min(cand[i], 1.0)), decline=float(min(cand[j], 1.0)))
