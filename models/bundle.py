"""The serving contract: a LightGBM booster with its feature list, calibration, thresholds and version.

`margin` is the booster's raw score; `contributions` are its SHAP values (`pred_contrib`), whose
row sum (base value in the last column included) is the margin; `proba` is the calibrated fraud
probability sigmoid(a * margin + b) (Platt scaling, fitted on validation), so reason codes computed
on the margin explain the probability monotonically. `decide` applies the review/decline thresholds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import lightgbm as lgb

log = logging.getLogger(__name__)

MODEL_NAME = "crypto-fraud-detector"
BUNDLE_FILE = "bundle.json"
APPROVE, REVIEW, DECLINE = "approve", "review", "decline"


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the raw margin: p = sigmoid(a * margin + b)."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(margin, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


@dataclass(frozen=True)
class Thresholds:
    """Calibrated-probability thresholds: p >= decline declines, review <= p < decline reviews."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.decline <= 1.0 + 1e-12:
            raise ValueError(f"need 0 <= review <= decline <= 1, got {self.review}, {self.decline}")


def decide(p: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """approve / review / decline for calibrated probabilities (the pure decision rule)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, APPROVE, dtype=object)
    out[p >= thresholds.review] = REVIEW
    out[p >= thresholds.decline] = DECLINE
    return out


@dataclass
class ModelBundle:
    """Everything a scorer needs to turn a feature matrix into a score, reasons and a decision."""

    booster: lgb.Booster
    feature_names: list[str]
    calibration: Calibration
    thresholds: Thresholds
    version: str = "unregistered"
    run_id: str | None = None
    feature_service: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def _matrix(self, X: Any) -> Any:
        if hasattr(X, "columns"):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise ValueError(f"feature matrix lacks {missing[:5]} ({len(missing)} missing)")
            return X[self.feature_names].to_numpy(dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected (n, {len(self.feature_names)}) features, got {X.shape}")
        return X

    def margin(self, X: Any) -> np.ndarray:
        """Raw scores (log-odds before calibration)."""
        return np.asarray(self.booster.predict(self._matrix(X), raw_score=True), dtype=np.float64)

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw scores."""
        return self.calibration(margin)

    def proba(self, X: Any) -> np.ndarray:
        """Calibrated fraud probabilities."""
        return self.calibrate(self.margin(X))

    def contributions(self, X: Any) -> np.ndarray:
        """SHAP values per feature on the margin scale; the last column is the base value."""
        return np.asarray(self.booster.predict(self._matrix(X), pred_contrib=True), dtype=np.float64)

    def decide(self, p: np.ndarray) -> np.ndarray:
        """approve / review / decline."""
        return decide(p, self.thresholds)

    def to_json(self) -> dict[str, Any]:
        """The `bundle.json` artifact: everything but the booster."""
        return {
            "model_name": MODEL_NAME,
            "feature_names": self.feature_names,
            "feature_service": self.feature_service,
            "calibration": asdict(self.calibration),
            "thresholds": asdict(self.thresholds),
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(
        cls, spec: dict[str, Any], booster: lgb.Booster, version: str = "unregistered", run_id: str | None = None
    ) -> ModelBundle:
        """Rebuild a bundle from its `bundle.json` and booster."""
        bundle = cls(
            booster=booster,
            feature_names=list(spec["feature_names"]),
            calibration=Calibration(**spec["calibration"]),
            thresholds=Thresholds(**spec["thresholds"]),
            version=version,
            run_id=run_id,
            feature_service=spec.get("feature_service", ""),
            metadata=spec.get("metadata", {}),
        )
        if list(booster.feature_name()) != bundle.feature_names:
            raise ValueError("bundle.json feature list differs from the booster's")
        return bundle


def load_bundle(
    tracking_uri: str, name: str = MODEL_NAME, alias: str | None = "champion", version: str | None = None
) -> ModelBundle:
    """Load `name@alias` (or `name` version `version`) from the MLflow registry with its bundle.json."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias or "")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{mv.version}")
    local = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path=BUNDLE_FILE, tracking_uri=tracking_uri)
    with open(local) as fh:
        spec = json.load(fh)
    log.info("loaded %s v%s (run %s)", name, mv.version, mv.run_id)
    return ModelBundle.from_json(spec, booster, version=str(mv.version), run_id=mv.run_id)
