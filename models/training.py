"""LightGBM training: early stopping on validation, class imbalance, a fixed seed, optional Optuna search.

The model is fitted on the training period and stopped early on the validation period (average
precision). Imbalance is handled twice: legitimate training rows are subsampled (`negative_rate`, 25%
by default, seeded: four times less data to boost, every fraud kept) and `scale_pos_weight` (sqrt of
the remaining negative/positive ratio) lifts the rare class without flattening the ranking. The raw
margin is then calibrated on validation with Platt scaling (p = sigmoid(a * margin + b)), which keeps
SHAP reason codes additive on the margin. `tune` searches the main parameters with Optuna's seeded TPE
within a time budget; the best parameters are then refitted by `train` like the defaults.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score

from models.bundle import Calibration

log = logging.getLogger(__name__)

SEED = 7
BINS = 127  # histogram bins per feature (fixed: a Dataset is binned once)


@dataclass
class TrainConfig:
    """LightGBM settings; `params` overrides any LightGBM parameter."""

    seed: int = SEED
    max_rounds: int = 500
    early_stopping_rounds: int = 30
    negative_rate: float = 0.25  # share of legitimate training rows kept (validation is never subsampled)
    num_threads: int = 1  # 0: all cores; OpenMP threads spin, so on a busy 2-core box 2 can be 5x slower than 1
    params: dict[str, Any] = field(default_factory=dict)


def base_params(y_train: np.ndarray, config: TrainConfig) -> dict[str, Any]:
    """The default parameters, seeded and weighted for the class ratio."""
    pos = max(int(np.sum(y_train)), 1)
    neg = max(len(y_train) - pos, 1)
    params: dict[str, Any] = {
        "objective": "binary",
        "metric": "average_precision",
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 50,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": BINS,
        "scale_pos_weight": float(np.sqrt(neg / pos)),
        "seed": config.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": config.num_threads,
        "verbosity": -1,
    }
    params.update(config.params)
    return params


@dataclass
class FittedModel:
    """A trained booster with its calibration and what it took to get there."""

    booster: lgb.Booster
    calibration: Calibration
    params: dict[str, Any]
    best_iteration: int
    valid_ap: float
    seconds: float


def subsample_negatives(X: np.ndarray, y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every fraud and a seeded `rate` share of the legitimate rows, in their original order."""
    if rate >= 1.0:
        return X, y
    keep = np.asarray(y).astype(bool) | (np.random.default_rng(seed).random(len(y)) < rate)
    return X[keep], y[keep]


def dataset(
    X: np.ndarray, y: np.ndarray, feature_names: list[str], reference: lgb.Dataset | None = None
) -> lgb.Dataset:
    """A LightGBM Dataset with named features (binned once, reused across trials)."""
    return lgb.Dataset(
        X,
        label=y,
        feature_name=feature_names,
        reference=reference,
        free_raw_data=False,
        # no pre-filter: the binned data must not depend on min_child_samples, which `tune` varies
        params={"max_bin": BINS, "feature_pre_filter": False, "verbosity": -1},
    )


def fit_booster(
    train: lgb.Dataset,
    valid: lgb.Dataset,
    params: dict[str, Any],
    config: TrainConfig,
    *callbacks: Callable[[lgb.callback.CallbackEnv], None],
) -> tuple[lgb.Booster, int]:
    """Boost until validation average precision stops improving; return the booster cut at its best round."""
    booster = lgb.train(
        params,
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), *callbacks],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    return booster, best


def fit_platt(margin: np.ndarray, y: np.ndarray) -> Calibration:
    """Platt scaling with Platt's smoothed targets ((N+ + 1)/(N+ + 2), 1/(N- + 2)), so a separable
    validation set still gives a finite slope; fitted by L-BFGS on the log-loss."""
    from scipy.optimize import minimize

    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))
    scale = float(np.std(m)) or 1.0
    z = (m - float(np.mean(m))) / scale  # standardised for a well-conditioned problem

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        u = w[0] * z + w[1]
        logp = -np.logaddexp(0.0, -u)
        log1mp = -np.logaddexp(0.0, u)
        value = -float(np.sum(t * logp + (1 - t) * log1mp))
        g = np.exp(logp) - t
        return value, np.array([float(np.sum(g * z)), float(np.sum(g))])

    prior = float(np.log((pos + 1.0) / (neg + 1.0)))
    w = minimize(loss, np.array([1.0, prior]), jac=True, method="L-BFGS-B").x
    a = float(w[0] / scale)
    return Calibration(a=a, b=float(w[1] - a * float(np.mean(m))))


def train(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    feature_names: list[str],
    config: TrainConfig | None = None,
    params: dict[str, Any] | None = None,
) -> FittedModel:
    """Fit, stop early on validation, calibrate on validation."""
    config = config or TrainConfig()
    started = time.perf_counter()
    X_train, y_train = subsample_negatives(X_train, y_train, config.negative_rate, config.seed)
    params = params or base_params(y_train, config)
    dtrain = dataset(X_train, y_train, feature_names)
    dvalid = dataset(X_valid, y_valid, feature_names, reference=dtrain)
    booster, best = fit_booster(dtrain, dvalid, params, config)
    margin = booster.predict(X_valid, raw_score=True, num_iteration=best)
    calibration = fit_platt(np.asarray(margin, dtype=np.float64), y_valid)
    # keep only the best rounds in the saved model
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    ap = float(average_precision_score(y_valid, margin)) if y_valid.any() else float("nan")
    seconds = time.perf_counter() - started
    log.info("lightgbm: %d rounds, valid AP %.4f, %.1fs", best, ap, seconds)
    return FittedModel(booster, calibration, params, best, ap, seconds)


@dataclass
class TuneResult:
    """What the Optuna search found and what it cost."""

    params: dict[str, Any]  # every LightGBM parameter, to refit with
    best: dict[str, Any]  # the searched parameters' best values
    best_valid_ap: float
    trials: int  # started, including any stopped at the deadline
    completed: int
    seconds: float
    budget_seconds: float

    def summary(self) -> dict[str, Any]:
        """The figures, without the parameters (for MLflow params and reports)."""
        return {
            "trials": self.trials,
            "completed": self.completed,
            "seconds": round(self.seconds, 2),
            "budget_seconds": self.budget_seconds,
            "best_valid_ap": self.best_valid_ap,
        }


def deadline_callback(deadline: float) -> Callable[[lgb.callback.CallbackEnv], None]:
    """A LightGBM callback that prunes the running Optuna trial once `deadline` (monotonic) has passed."""
    import optuna

    def check(env: lgb.callback.CallbackEnv) -> None:
        if time.monotonic() >= deadline:
            raise optuna.TrialPruned(f"time budget spent at round {env.iteration + 1}")

    return check


def tune(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    feature_names: list[str],
    config: TrainConfig | None = None,
    budget_seconds: float = 300.0,
    max_trials: int = 50,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Optuna TPE search (seeded) of the main parameters on validation AP, within `budget_seconds`.

    The defaults are the first trial. No trial starts after the budget, and the trial running when it
    runs out is pruned at its next boosting round, so the search overruns by one round at most.
    With no trial completed in time, the defaults stand.
    """
    import optuna

    started = time.monotonic()
    deadline = started + budget_seconds
    config = config or TrainConfig()
    X_train, y_train = subsample_negatives(X_train, y_train, config.negative_rate, config.seed)
    base = base_params(y_train, config)
    dtrain = dataset(X_train, y_train, feature_names)
    dvalid = dataset(X_valid, y_valid, feature_names, reference=dtrain)
    ratio = (len(y_train) - y_train.sum()) / max(y_train.sum(), 1)
    stop_at_deadline = deadline_callback(deadline)

    def objective(trial: optuna.Trial) -> float:
        params = base | {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 15, 255, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 10, 400, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
            "scale_pos_weight": trial.suggest_float("scale_pos_weight", 1.0, max(float(ratio), 2.0), log=True),
        }
        booster, best = fit_booster(dtrain, dvalid, params, config, stop_at_deadline)
        margin = booster.predict(X_valid, raw_score=True, num_iteration=best)
        trial.set_user_attr("best_iteration", best)
        return float(average_precision_score(y_valid, margin))

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if time.monotonic() >= deadline:
            study.stop()
        value = "pruned at the deadline" if trial.value is None else f"valid AP {trial.value:.4f}"
        note = f"tune: trial {trial.number + 1}, {value}, {time.monotonic() - started:.0f}/{budget_seconds:.0f}s"
        log.info("%s", note)
        if progress is not None:
            progress(note)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=config.seed))
    tuned = ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction", "bagging_fraction", "lambda_l2")
    study.enqueue_trial({k: base[k] for k in (*tuned, "scale_pos_weight")})  # the defaults first
    study.optimize(objective, n_trials=max_trials, callbacks=[report])
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_params if completed else {}
    best_ap = study.best_value if completed else float("nan")
    result = TuneResult(
        base | best, best, best_ap, len(study.trials), len(completed), time.monotonic() - started, budget_seconds
    )
    log.info("optuna: %s, best params %s", result.summary(), best or "none completed: defaults")
    return result
