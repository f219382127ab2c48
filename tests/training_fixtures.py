"""A small simulated exchange, backfilled into throwaway stores, shared by the training tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from fraud.settings import TrainSettings

_CACHE: dict[str, SmallHistory] = {}


@dataclass(frozen=True)
class SmallHistory:
    """A backfilled history: the simulator's files and settings pointing at its stores."""

    sim_dir: Path
    settings: TrainSettings


def small_history(factory: pytest.TempPathFactory, users: int = 1500, days: int = 45) -> SmallHistory:
    """Simulate and backfill once per test session (about 40k transactions)."""
    key = f"{users}x{days}"
    if key not in _CACHE:
        from fraud.settings import BackfillSettings, SimulatorSettings
        from pipelines.backfill import backfill
        from pipelines.simulate import run

        root = factory.mktemp(f"history-{key}")
        sim = root / "sim"
        run(SimulatorSettings(data_dir=root, sim_users=users, sim_days=days, sim_seed=11, sim_out=sim), "parquet")
        data = root / "data"
        backfill(
            BackfillSettings(data_dir=data),
            sim / "transactions.parquet",
            sim / "labels.parquet",
            sim / "accounts.parquet",
            sim / "address_lists.parquet",
            show_progress=False,
        )
        _CACHE[key] = SmallHistory(sim, TrainSettings(data_dir=data, train_gap_days=4, train_warmup_days=5))
    return _CACHE[key]


def fresh_registry(history: SmallHistory, tmp: Path) -> TrainSettings:
    """Settings on the shared stores with a registry of their own (so tests do not see each other's versions)."""
    return history.settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"})
