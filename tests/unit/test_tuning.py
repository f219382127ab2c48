"""`models.training.tune`: a seeded search that stops at its time budget and whose best trial `train` reproduces."""

from __future__ import annotations

import numpy as np

from models import training

NAMES = [f"f{i}" for i in range(6)]


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, len(NAMES)))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=len(X)) > 2.5).astype(int)
    return X[:4000], y[:4000], X[4000:], y[4000:]


def _defaults(y_train: np.ndarray) -> dict[str, object]:
    config = training.TrainConfig()
    kept = training.subsample_negatives(y_train[:, None], y_train, config.negative_rate, config.seed)[1]
    return training.base_params(kept, config)


def test_tune_stops_at_its_budget_and_train_refits_the_best_trial() -> None:
    Xt, yt, Xv, yv = _data()
    notes: list[str] = []
    result = training.tune(Xt, yt, Xv, yv, NAMES, budget_seconds=2.0, progress=notes.append)
    assert result.completed >= 1 and len(notes) == result.trials
    assert result.seconds < 2.0 + 1.0  # at most one boosting round past the budget
    assert result.params == _defaults(yt) | result.best
    refit = training.train(Xt, yt, Xv, yv, NAMES, params=result.params)
    assert refit.valid_ap == result.best_valid_ap


def test_a_budget_spent_before_any_trial_completes_keeps_the_defaults() -> None:
    Xt, yt, Xv, yv = _data()
    result = training.tune(Xt, yt, Xv, yv, NAMES, budget_seconds=0.0)
    assert result.trials == 1 and result.completed == 0 and result.best == {}
    assert np.isnan(result.best_valid_ap)
    assert result.params == _defaults(yt)
