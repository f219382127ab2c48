"""Drift of scoring traffic against the champion's training data: the pure core of `fraud monitor`.

A `DriftReference` summarizes the training data once: for each feature (and the score) the bin cut
points at its deciles and the share of rows per bin, missing values in a bin of their own, plus the
review and decline rates on the validation set. `assess` bins a window of live traffic the same way
and computes the population stability index (PSI) per feature and for the score,

    PSI = sum over bins of (live share - reference share) * ln(live share / reference share),

the live decision rates against the validation ones, and the missing-feature and degraded rates,
then names every threshold it breaches. No I/O: frames and numbers in, a `DriftResult` out.
Rule of thumb for PSI: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a significant one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_ARTIFACT = "drift_reference.json"  # in the model's MLflow run: `DriftReference.to_json()`
EPS = 1e-4  # floor of a bin share, so an empty bin gives a large but finite PSI
DEFAULT_BINS = 10
MAX_CATEGORIES = 12  # at most this many distinct values: one bin per value (codes, flags, small counts)


@dataclass(frozen=True)
class Bins:
    """Cut points and reference shares: bins (-inf, c0], (c0, c1], ..., (c_last, inf), then missing."""

    cuts: tuple[float, ...]
    shares: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"cuts": list(self.cuts), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Bins:
        return cls(tuple(float(c) for c in data["cuts"]), tuple(float(s) for s in data["shares"]))


def _finite(values: Any) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)


def cut_points(values: Any, n_bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Bin edges for a feature: midpoints between values if it has few distinct ones, else its quantiles."""
    x = _finite(values)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return ()
    distinct = np.unique(x)
    if distinct.size <= MAX_CATEGORIES:
        return tuple(float(c) for c in (distinct[:-1] + distinct[1:]) / 2.0)
    cuts = np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    return tuple(float(c) for c in cuts)


def shares(cuts: Sequence[float], values: Any) -> np.ndarray:
    """Share of `values` per bin of `cuts` (the last bin holds missing and non-finite values)."""
    x = _finite(values)
    out = np.zeros(len(cuts) + 2, dtype=np.float64)
    if x.size == 0:
        return out
    finite = np.isfinite(x)
    idx = np.searchsorted(np.asarray(cuts, dtype=np.float64), x[finite], side="left")
    out[: len(cuts) + 1] = np.bincount(idx, minlength=len(cuts) + 1)
    out[-1] = float((~finite).sum())
    return out / x.size


def fit(values: Any, n_bins: int = DEFAULT_BINS) -> Bins:
    """The reference bins of one feature."""
    cuts = cut_points(values, n_bins)
    return Bins(cuts, tuple(float(s) for s in shares(cuts, values)))


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPS) -> float:
    """Population stability index between two distributions over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReference:
    """What live traffic is compared with: the champion's training distribution and validation rates."""

    features: dict[str, Bins]
    score: Bins | None = None
    decision_rates: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "score": self.score.to_dict() if self.score else None,
            "decision_rates": dict(self.decision_rates),
            "rows": self.rows,
            "source": self.source,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReference:
        return cls(
            features={k: Bins.from_dict(v) for k, v in data["features"].items()},
            score=Bins.from_dict(data["score"]) if data.get("score") else None,
            decision_rates={k: float(v) for k, v in (data.get("decision_rates") or {}).items()},
            rows=int(data.get("rows", 0)),
            source=str(data.get("source", "")),
        )

    @classmethod
    def from_json(cls, text: str) -> DriftReference:
        return cls.from_dict(json.loads(text))


def decision_rates(decisions: Iterable[str]) -> dict[str, float]:
    """Share of each decision (review and decline always present)."""
    s = pd.Series(list(decisions), dtype=object)
    rates = {"review": 0.0, "decline": 0.0}
    if len(s):
        rates.update({str(k): float(v) for k, v in s.value_counts(normalize=True).items()})
    return rates


def build_reference(
    frame: pd.DataFrame,
    features: Sequence[str],
    scores: Any = None,
    decisions: Iterable[str] | None = None,
    n_bins: int = DEFAULT_BINS,
    source: str = "",
) -> DriftReference:
    """Summarize training data (`features` columns of `frame`) and validation scores/decisions."""
    return DriftReference(
        features={f: fit(frame[f] if f in frame else np.full(len(frame), np.nan), n_bins) for f in features},
        score=fit(scores, n_bins) if scores is not None else None,
        decision_rates=decision_rates(decisions) if decisions is not None else {},
        rows=len(frame),
        source=source,
    )


@dataclass(frozen=True)
class Thresholds:
    """When a window counts as drifted (from `MonitorSettings`)."""

    psi: float = 0.2
    score_psi: float = 0.2
    rate_abs: float = 0.01  # a decision rate may move by this much ...
    rate_rel: float = 1.0  # ... or by this share of the validation rate, whichever is larger
    missing_rate: float = 0.1
    degraded_rate: float = 0.05
    min_rows: int = 200


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the score's) PSI and the shares behind it."""

    name: str
    psi: float
    cuts: tuple[float, ...]
    expected: tuple[float, ...]
    actual: tuple[float, ...]
    breach: bool


@dataclass
class DriftResult:
    """One window's drift assessment; `alerts` is empty when nothing breached."""

    rows: int
    features: list[FeatureDrift]
    score: FeatureDrift | None
    live_rates: dict[str, float]
    reference_rates: dict[str, float]
    missing_rate: float
    degraded_rate: float
    thresholds: Thresholds
    alerts: list[str] = field(default_factory=list)
    alert_kinds: list[str] = field(default_factory=list)
    enough_rows: bool = True

    @property
    def breached(self) -> list[FeatureDrift]:
        """Features past the PSI threshold, most drifted first."""
        return [f for f in self.features if f.breach]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures (logs, MLflow, tests)."""
        return {
            "rows": self.rows,
            "score_psi": self.score.psi if self.score else None,
            "max_feature_psi": self.features[0].psi if self.features else 0.0,
            "features_breached": [f.name for f in self.breached],
            "live_rates": self.live_rates,
            "reference_rates": self.reference_rates,
            "missing_rate": self.missing_rate,
            "degraded_rate": self.degraded_rate,
            "thresholds": asdict(self.thresholds),
            "alerts": self.alerts,
        }


def _drift(name: str, bins: Bins, values: Any, threshold: float) -> FeatureDrift:
    actual = shares(bins.cuts, values)
    value = psi(bins.shares, actual)
    return FeatureDrift(name, value, bins.cuts, bins.shares, tuple(float(a) for a in actual), value > threshold)


def rate_breach(live: float, reference: float, t: Thresholds) -> bool:
    """A decision rate moved further from its validation value than the tolerance allows."""
    return abs(live - reference) > max(t.rate_abs, t.rate_rel * reference)


def assess(reference: DriftReference, window: pd.DataFrame, thresholds: Thresholds | None = None) -> DriftResult:
    """Compare a window of scoring traffic (`data_quality.traffic.traffic_frame`) with the reference."""
    t = thresholds or Thresholds()
    n = len(window)
    enough = n >= t.min_rows
    drifts = [
        _drift(name, bins, window[name] if name in window else np.full(n, np.nan), t.psi if enough else math.inf)
        for name, bins in reference.features.items()
    ]
    drifts.sort(key=lambda d: -d.psi)
    score = None
    if reference.score is not None and "score" in window:
        score = _drift("score", reference.score, window["score"], t.score_psi if enough else math.inf)
    live = decision_rates(window["decision"]) if "decision" in window else {}
    missing = float((window["missing_groups"] > 0).mean()) if n and "missing_groups" in window else 0.0
    degraded = float(window["degraded"].mean()) if n and "degraded" in window else 0.0
    result = DriftResult(
        n, drifts, score, live, dict(reference.decision_rates), missing, degraded, t, enough_rows=enough
    )

    def alert(kind: str, message: str) -> None:
        result.alerts.append(message)
        result.alert_kinds.append(kind)

    if not enough:
        return result  # too few rows for distribution checks to mean anything
    for d in result.breached:
        alert("feature_psi", f"feature {d.name}: PSI {d.psi:.3f} > {t.psi}")
    if score is not None and score.breach:
        alert("score_psi", f"score: PSI {score.psi:.3f} > {t.score_psi}")
    for decision in ("review", "decline"):
        if decision in reference.decision_rates:
            ref, now = reference.decision_rates[decision], live.get(decision, 0.0)
            if rate_breach(now, ref, t):
                alert("decision_rate", f"{decision} rate {now:.2%} vs {ref:.2%} on validation")
    if missing > t.missing_rate:
        alert("missing_rate", f"missing-feature rate {missing:.2%} > {t.missing_rate:.2%}")
    if degraded > t.degraded_rate:
        alert("degraded_rate", f"degraded scoring rate {degraded:.2%} > {t.degraded_rate:.2%}")
    return result
