"""The model serving traffic: loaded from the registry's champion alias, swapped atomically when it moves.

A batch reads `holder.current` once and scores with that model to the end, so a swap never mixes two
models in one response and never drops a request: requests in flight finish on the old model, the
next batch takes the new one. A model whose feature list is not the one `fraud.features` computes is
refused (the old one keeps serving); with no model at all the scorer is not ready and answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A registered model bundle as the scorer uses it (see `services.scorer.core.ScoringModel`)."""

    bundle: Any
    version: str
    feature_names: list[str]
    run_id: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Raw scores from the bundle's booster."""
        return np.asarray(self.bundle.margin(X), dtype=np.float64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions (last column: base value), from the bundle's booster."""
        return np.asarray(self.bundle.contributions(X), dtype=np.float64)

    def proba_from_margin(self, margin: np.ndarray) -> np.ndarray:
        """The bundle's calibration applied to raw scores."""
        return np.asarray(self.bundle.calibrate(margin), dtype=np.float64)

    def decide(self, p: np.ndarray) -> list[str]:
        """The bundle's decision rule (its review/decline thresholds)."""
        return [str(d) for d in self.bundle.decide(p)]


class ModelSource(Protocol):
    """Where champions come from (the MLflow registry, or a fake in tests)."""

    def champion_version(self) -> str | None:
        """The version the alias points at now (None: no champion yet)."""
        ...

    def load(self) -> ServedModel:
        """Load the champion."""
        ...


class MlflowChampion:
    """`name@alias` in an MLflow registry, loaded by `models.bundle.load_bundle` (or `loader`, same signature)."""

    def __init__(self, tracking_uri: str, name: str, alias: str, loader: Callable[..., Any] | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri, self.name, self.alias = tracking_uri, name, alias
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._loader = loader

    def champion_version(self) -> str | None:
        """The champion's version number, or None when the model or alias does not exist yet."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException:
            return None

    def load(self) -> ServedModel:
        """Load the champion's bundle through `models.bundle.load_bundle`."""
        if self._loader is None:
            from models.bundle import load_bundle

            self._loader = load_bundle
        bundle = self._loader(self.tracking_uri, name=self.name, alias=self.alias)
        return served(bundle)


def served(bundle: Any) -> ServedModel:
    """Wrap a `models.bundle.ModelBundle`."""
    thresholds = getattr(bundle, "thresholds", {}) or {}
    if not isinstance(thresholds, dict):
        thresholds = {k: float(getattr(thresholds, k)) for k in ("review", "decline")}
    return ServedModel(
        bundle=bundle,
        version=str(bundle.version),
        feature_names=list(bundle.feature_names),
        run_id=getattr(bundle, "run_id", None),
        thresholds={k: float(v) for k, v in thresholds.items()},
    )


class ModelHolder:
    """Holds the current model; `refresh()` loads a new champion and swaps it in with one assignment."""

    def __init__(self, source: ModelSource, expected_features: Sequence[str]) -> None:
        self._source = source
        self._expected = list(expected_features)
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self.swaps = 0

    @property
    def current(self) -> ServedModel | None:
        """The model to score with (None until one is loaded)."""
        return self._current

    def refresh(self) -> bool:
        """Load the champion if it changed; True when a new model was swapped in. Never raises."""
        with self._lock:
            try:
                version = self._source.champion_version()
                if version is None:
                    if self._current is None:
                        log.warning("no champion registered yet; not ready")
                    return False
                if self._current is not None and self._current.version == version:
                    return False
                model = self._source.load()
            except Exception:
                log.exception("loading the champion failed; keeping the current model")
                return False
            if model.feature_names != self._expected:
                log.error(
                    "champion v%s expects a different feature list (%d features, scorer computes %d); refused",
                    model.version,
                    len(model.feature_names),
                    len(self._expected),
                )
                return False
            try:
                warm = np.zeros((1, len(model.feature_names)))
                model.proba_from_margin(model.contributions(warm).sum(axis=1))
            except Exception:
                log.exception("champion v%s fails on a test row; refused", model.version)
                return False
            previous = self._current
            self._current = model  # the swap: one reference assignment, atomic for readers
            self.swaps += 1
            log.info("serving model v%s (was %s)", model.version, previous.version if previous is not None else "none")
            return True

    async def watch(self, interval_s: float, on_swap: Any = None) -> None:
        """Poll for a new champion every `interval_s` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if await asyncio.to_thread(self.refresh) and on_swap is not None:
                on_swap()
