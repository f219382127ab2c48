"""The model serving traffic: loaded from the registry's champion alias, swapped atomically when it moves.

A batch reads `holder.current` once and scores with that model to the end, so a swap never mixes two
models in one response and never drops a request: requests in flight finish on the old model, the
next batch takes the new one. A model whose feature list is not the one `fraud.features` computes is
refused (the old one keeps serving); with no model at all the scorer is not ready and answers 503.

The registry may be away (MLflow down at start, or during a swap). Its calls then fail fast (bounded
HTTP timeout, no client-side retry loop: MLflow's default retries for about four minutes), the
scorer keeps what it serves (or stays not ready), and the watcher retries with an exponential backoff
(1 s doubling to 30 s by default) with one log line per attempt, until the registry answers again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


class RegistryUnreachable(RuntimeError):
    """The model registry did not answer (refused, timed out, or a server error)."""


# MLflow's HTTP client settings (environment variables it reads at each call); see `MlflowChampion`.
_HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
_http_env_lock = threading.Lock()


class MlflowChampion:
    """`name@alias` in an MLflow registry, loaded by `models.bundle.load_bundle` (or `loader`, same signature).

    Against an MLflow server its calls are bounded: `request_timeout_s` per request and `max_retries`
    client retries (MLflow's defaults, 120 s and 7 retries with backoff, hold a call for about four
    minutes while the server is down). The bounds apply for the duration of each call only, and
    never override `MLFLOW_HTTP_REQUEST_*` variables set in the environment.
    """

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        alias: str,
        loader: Callable[..., Any] | None = None,
        request_timeout_s: float = 10.0,
        max_retries: int = 0,
    ) -> None:
        from mlflow import MlflowClient

        self.tracking_uri, self.name, self.alias = tracking_uri, name, alias
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._loader = loader
        remote = tracking_uri.startswith(("http://", "https://"))
        bounds = (str(max(1, math.ceil(request_timeout_s))), str(max_retries), "1")
        self._http_bounds = dict(zip(_HTTP_ENV, bounds, strict=True)) if remote else {}

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """MLflow's HTTP timeout and retries bounded for one call (unset again afterwards)."""
        with _http_env_lock:
            added = {k: v for k, v in self._http_bounds.items() if k not in os.environ}
            os.environ.update(added)
            try:
                yield
            finally:
                for key in added:
                    os.environ.pop(key, None)

    def champion_version(self) -> str | None:
        """The champion's version number; None when the model or alias does not exist yet.

        Raises RegistryUnreachable when the registry does not answer."""
        from mlflow.exceptions import MlflowException

        try:
            with self._bounded():
                return str(self._client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as exc:
            # no such model: RESOURCE_DOES_NOT_EXIST; no such alias: INVALID_PARAMETER_VALUE (MLflow 3.x)
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise RegistryUnreachable(f"model registry {self.tracking_uri}: {_short(exc)}") from exc

    def load(self) -> ServedModel:
        """Load the champion's bundle through `models.bundle.load_bundle`."""
        if self._loader is None:
            from models.bundle import load_bundle

            self._loader = load_bundle
        with self._bounded():
            bundle = self._loader(self.tracking_uri, name=self.name, alias=self.alias)
        return served(bundle)


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception as one log-sized line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    """Holds the current model; `refresh()` loads a new champion and swaps it in with one assignment.

    A failed attempt (registry unreachable, or the load failed) keeps the current model and counts
    in `failures`; `watch` then retries after `retry_delay()`, `retry_min_s` doubling up to
    `retry_max_s`, instead of the poll interval. `status` says why no model is served.
    """

    def __init__(
        self,
        source: ModelSource,
        expected_features: Sequence[str],
        retry_min_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self._source = source
        self._expected = list(expected_features)
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._retry_min_s = retry_min_s
        self._retry_max_s = max(retry_min_s, retry_max_s)
        self.swaps = 0
        self.failures = 0  # consecutive failed attempts (0: the last one reached the registry and loaded)
        self.status = "no model loaded yet"

    @property
    def current(self) -> ServedModel | None:
        """The model to score with (None until one is loaded)."""
        return self._current

    def retry_delay(self) -> float:
        """The backoff before the next attempt after `failures` failed ones in a row."""
        return float(min(self._retry_min_s * 2 ** max(self.failures - 1, 0), self._retry_max_s))

    def refresh(self) -> bool:
        """Load the champion if it changed; True when a new model was swapped in. Never raises."""
        with self._lock:
            try:
                version = self._source.champion_version()
                if version is None:
                    self._reached()
                    if self._current is None:
                        self.status = "no champion registered yet"
                        log.warning("no champion registered yet; not ready")
                    return False
                if self._current is not None and self._current.version == version:
                    self._reached()
                    return False
                model = self._source.load()
            except RegistryUnreachable as exc:
                self._failed("model registry unreachable", exc)
                return False
            except Exception as exc:
                self._failed("loading the champion failed", exc)
                return False
            self._reached()
            if model.feature_names != self._expected:
                log.error(
                    "champion v%s expects a different feature list (%d features, scorer computes %d); refused",
                    model.version,
                    len(model.feature_names),
                    len(self._expected),
                )
                if self._current is None:
                    self.status = f"champion v{model.version} refused: its feature list is not the scorer's"
                return False
            try:
                warm = np.zeros((1, len(model.feature_names)))
                model.proba_from_margin(model.contributions(warm).sum(axis=1))
            except Exception:
                log.exception("champion v%s fails on a test row; refused", model.version)
                if self._current is None:
                    self.status = f"champion v{model.version} refused: it fails on a test row"
                return False
            previous = self._current
            self._current = model  # the swap: one reference assignment, atomic for readers
            self.swaps += 1
            self.status = f"serving v{model.version}"
            log.info("serving model v%s (was %s)", model.version, previous.version if previous is not None else "none")
            return True

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count a failed attempt and say, in one line, what is served meanwhile and when the next try is."""
        self.failures += 1
        serving = f"still serving v{self._current.version}" if self._current else "not ready: no model loaded"
        if self._current is None:
            self.status = f"{what}; retrying"
        log.warning(
            "%s (%s); %s; attempt %d failed, retrying in %.1fs",
            what,
            _short(exc),
            serving,
            self.failures,
            self.retry_delay(),
        )

    def _reached(self) -> None:
        if self.failures:
            log.info("model registry reachable again after %d failed attempt(s)", self.failures)
        self.failures = 0

    async def watch(self, interval_s: float, on_swap: Any = None) -> None:
        """Poll for a new champion every `interval_s` (after a failure: the backoff) until cancelled."""
        while True:
            await asyncio.sleep(self.retry_delay() if self.failures else interval_s)
            if await asyncio.to_thread(self.refresh) and on_swap is not None:
                on_swap()
