"""Behaviour of a trained model: it reacts to risk the way a fraud analyst would, and ignores names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from fraud import history as H
from fraud import store as S
from models.bundle import load_bundle
from pipelines.train import TrainOptions, run
from pipelines.training_set import stored_features_before
from tests.training_fixtures import fresh_registry, small_history

pytestmark = [pytest.mark.integration, pytest.mark.model]


class Trained:
    """A model trained on the small history, established users' legitimate sends, and the features of
    any transactions against a history (what training and the scorer compute for them)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        hist = small_history(tmp_path_factory)
        settings = fresh_registry(hist, tmp_path_factory.mktemp("behaviour"))
        run(settings, TrainOptions())
        self.bundle = load_bundle(settings.tracking_uri)
        self.store = S.open_store(settings)
        self.history = H.read(settings.data_dir, "transactions")
        self.labels = H.read(settings.data_dir, "labels")
        legit = set(self.labels.loc[~self.labels["is_fraud"], "transaction_id"])
        times = pd.to_datetime(self.history["event_time"], utc=True)
        late = times > times.min() + (times.max() - times.min()) * 0.7
        sends = self.history[late & (self.history["type"] == "send") & self.history["transaction_id"].isin(legit)]
        sends = sends.sample(min(len(sends), 300), random_state=3).reset_index(drop=True)
        keep = self.stored(sends)["txn_count_total"].fillna(0).to_numpy() >= 5
        self.txns = sends[keep].reset_index(drop=True)

    def stored(self, txns: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
        return stored_features_before(self.store, txns, self.history if history is None else history, self.labels)

    def score(self, txns: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        stored = self.stored(txns, history)
        return self.bundle.proba(F.model_matrix(stored, F.request_features(txns, stored)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return Trained(tmp_path_factory)


def test_larger_amount_to_a_fresh_address_from_a_new_device_raises_the_score(trained: Trained) -> None:
    txns = trained.txns
    assert len(txns) >= 50
    risky = txns.assign(
        amount=txns["amount"] * 20,
        amount_usd=txns["amount_usd"] * 20,
        destination_address=[f"fresh-address-{i}" for i in range(len(txns))],
        device_id=[f"fresh-device-{i}" for i in range(len(txns))],
    )
    before, after = trained.score(txns), trained.score(risky)
    assert np.median(after - before) > 0
    assert np.mean(after > before) >= 0.8


def test_renaming_a_device_id_does_not_change_the_score(trained: Trained) -> None:
    """The same history under other device names: the same features, the same score."""
    txns = trained.txns
    renamed = txns.assign(device_id="renamed-" + txns["device_id"])
    history = trained.history.assign(device_id="renamed-" + trained.history["device_id"])
    assert np.array_equal(trained.score(txns), trained.score(renamed, history))
