"""Behaviour of a trained model: it reacts to risk the way a fraud analyst would, and ignores names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud import features as F
from fraud import history as H
from fraud import store as S
from models.bundle import ModelBundle, load_bundle
from pipelines.train import TrainOptions, run
from pipelines.training_set import stored_features_before
from tests.training_fixtures import fresh_registry, small_history

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, pd.DataFrame, pd.DataFrame]:
    """A model trained on the small history, and established users' legitimate sends with their stored rows."""
    hist = small_history(tmp_path_factory)
    settings = fresh_registry(hist, tmp_path_factory.mktemp("behaviour"))
    run(settings, TrainOptions())
    bundle = load_bundle(settings.tracking_uri)
    txns = H.read(settings.data_dir, "transactions")
    labels = H.read(settings.data_dir, "labels")
    legit = set(labels.loc[~labels["is_fraud"], "transaction_id"])
    times = pd.to_datetime(txns["event_time"], utc=True)
    late = times > times.min() + (times.max() - times.min()) * 0.7
    sends = txns[late & (txns["type"] == "send") & txns["transaction_id"].isin(legit)]
    sends = sends.sample(min(len(sends), 300), random_state=3).reset_index(drop=True)
    stored = stored_features_before(S.open_store(settings), sends)
    keep = stored["txn_count_total"].fillna(0).to_numpy() >= 5
    return bundle, sends[keep].reset_index(drop=True), stored[keep].reset_index(drop=True)


def _score(bundle: ModelBundle, txns: pd.DataFrame, stored: pd.DataFrame) -> np.ndarray:
    return bundle.proba(F.model_matrix(stored, F.request_features(txns, stored)))


def test_larger_amount_to_a_fresh_address_from_a_new_device_raises_the_score(trained) -> None:
    bundle, txns, stored = trained
    assert len(txns) >= 50
    risky = txns.assign(
        amount=txns["amount"] * 20,
        amount_usd=txns["amount_usd"] * 20,
        destination_address=[f"fresh-address-{i}" for i in range(len(txns))],
        device_id=[f"fresh-device-{i}" for i in range(len(txns))],
    )
    risky_stored = stored.copy()
    for kind in ("address", "device"):  # never-seen entities: no stored rows
        for name in F.counterparty_feature_names(kind):
            risky_stored[name] = np.nan if not name.endswith("_first_seen") else pd.NaT
    before, after = _score(bundle, txns, stored), _score(bundle, risky, risky_stored)
    assert np.median(after - before) > 0
    assert np.mean(after > before) >= 0.8


def test_renaming_a_device_id_does_not_change_the_score(trained) -> None:
    bundle, txns, stored = trained
    renamed = txns.assign(device_id="renamed-" + txns["device_id"])
    renamed_stored = stored.copy()
    # the same history under the new name: the user's known-device set holds the new name too
    renamed_stored["known_devices_30d"] = [
        F.SEP.join("renamed-" + d for d in k.split(F.SEP)) if isinstance(k, str) and k else k
        for k in stored["known_devices_30d"]
    ]
    assert np.array_equal(_score(bundle, txns, stored), _score(bundle, renamed, renamed_stored))
