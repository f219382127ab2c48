"""The scorer's pure core, micro-batcher and model holder, on a small real LightGBM model."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from feature_repo.repo import ALL_VIEWS, KIND_OF_VIEW, state_fields
from fraud import aggregates as A
from fraud import features as F
from fraud.contracts import Transaction, transaction_record
from fraud.feature_state import FeatureState
from fraud.settings import ScorerSettings
from services.scorer import core
from services.scorer.batcher import MicroBatcher, ThreadBatcher
from services.scorer.core import VIEW_KEYS
from services.scorer.metrics import Metrics
from services.scorer.model_holder import ModelHolder, ServedModel
from services.scorer.service import ScoringService

NAMES = F.model_feature_names()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class TinyBundle:
    """The ModelBundle contract on a small booster: calibration sigmoid(a*m+b), review/decline thresholds."""

    def __init__(self, version: str = "1", names: list[str] | None = None, seed: int = 0) -> None:
        names = names or NAMES
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(600, len(names)))
        y = (X[:, names.index("amount_usd")] + X[:, names.index("new_device")] > 0.5).astype(int)
        self.booster = lgb.train(
            {"objective": "binary", "verbose": -1, "num_leaves": 7, "min_data_in_leaf": 5, "num_threads": 1},
            lgb.Dataset(X, y, feature_name=names),
            num_boost_round=15,
        )
        self.feature_names = names
        self.version = version
        self.calibration = (0.9, -0.2)
        self.thresholds = {"review": 0.3, "decline": 0.8}
        self.run_id = f"run-{version}"

    def margin(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, raw_score=True, num_threads=1))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=1))

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))

    def proba(self, X: np.ndarray) -> np.ndarray:
        return self.calibrate(self.margin(X))

    def decide(self, p: np.ndarray) -> list[str]:
        return [
            "decline" if x >= self.thresholds["decline"] else "review" if x >= self.thresholds["review"] else "approve"
            for x in p
        ]


def served(bundle: TinyBundle) -> ServedModel:
    return ServedModel(bundle=bundle, version=bundle.version, feature_names=bundle.feature_names)


def txn(i: int = 1, **kw: object) -> Transaction:
    base: dict[str, object] = {
        "transaction_id": f"tx{i}",
        "event_time": T0,
        "user_id": "u1",
        "type": "send",
        "asset": "BTC",
        "amount": 0.5,
        "amount_usd": 30_000.0,
        "payment_method": "crypto",
        "destination_address": "bc1qdest",
        "device_id": "dev-A",
        "ip_address": "192.0.2.1",
        "country": "DE",
        "channel": "web",
    }
    base.update(kw)
    return Transaction.model_validate(base)


def _user_history(n: int = 12) -> pd.DataFrame:
    """A user's last 12 transactions over ten days, on devices dev-B and dev-C."""
    return pd.DataFrame(
        {
            "transaction_id": [f"h{i}" for i in range(n)],
            "event_time": [T0 - timedelta(hours=2) - timedelta(hours=20 * i) for i in range(n)],
            "user_id": "u1",
            "type": "deposit",
            "asset": "BTC",
            "amount": 0.1,
            "amount_usd": [150.0 + 10 * i for i in range(n)],
            "payment_method": "bank_transfer",
            "destination_address": None,
            "source_address": None,
            "device_id": ["dev-B", "dev-C"] * (n // 2),
            "ip_address": "192.0.2.1",
            "country": "DE",
            "channel": "web",
        }
    )


def online_rows(txns: list[Transaction], known_user: bool = True) -> core.OnlineRows:
    """Online values as the Feast edge returns them: the state of a known user (12 past transactions)
    and of the device and IP it used, and its account; other entities absent."""
    n = len(txns)
    values: dict[str, list[object]] = {name: [None] * n for view in ALL_VIEWS.values() for name in view[1]}
    as_of: dict[str, list[datetime | None]] = {view: [None] * n for view in ALL_VIEWS}
    if known_user:
        state = FeatureState()
        state.update(_user_history())
        for view, kind in KIND_OF_VIEW.items():
            key = VIEW_KEYS[view]
            held = [state.rows[kind].get(getattr(t, key)) for t in txns]
            for name in state_fields(kind):
                part = name.rsplit("_", 1)[1]
                values[name] = [None if r is None else getattr(r, part).ravel() for r in held]
            as_of[view] = [None if r is None else T0 - timedelta(hours=2) for r in held]
        values["signup_time"] = [T0 - timedelta(days=400)] * n
        values["kyc_tier"] = [2] * n
        as_of["account"] = [T0 - timedelta(days=400)] * n
    return core.OnlineRows(values=values, as_of=as_of)


def test_every_model_feature_has_plain_words() -> None:
    for name in NAMES:
        words = core.describe(name)
        assert words and "_" not in words, name
    assert core.describe("new_device") == "new device for this user"
    assert (
        core.describe("device_fraud_rate_30d")
        == "share of this device's transactions confirmed as fraud in the last 30 days"
    )
    assert core.describe("send_count_1h") == "the user's number of sends in the last hour"
    assert core.describe("balance_ETH") == "the user's ETH balance"


def test_reasons_and_base_value_sum_to_the_raw_score() -> None:
    bundle = TinyBundle()
    txns = [txn(1), txn(2, amount_usd=5.0), txn(3, device_id="dev-B")]
    results = core.score_batch(served(bundle), txns, online_rows(txns), top_k=3, explain=[True] * 3)
    X = core.model_inputs(txns, online_rows(txns))
    raw = bundle.margin(X)
    for r, m, p in zip(results, raw, bundle.proba(X), strict=True):
        assert r.explained and r.base_value is not None and r.other_contribution is not None
        assert r.raw_score == pytest.approx(m, abs=1e-9)
        assert r.base_value + sum(x.contribution for x in r.reasons) + r.other_contribution == pytest.approx(
            m, abs=1e-9
        )
        assert r.score == pytest.approx(p, abs=1e-12)
        assert r.decision == bundle.decide(np.array([p]))[0]
        contribs = [x.contribution for x in r.reasons]
        assert contribs == sorted(contribs, reverse=True) and all(c > 0 for c in contribs) and len(contribs) <= 3
        assert all(x.description == core.describe(x.code) for x in r.reasons)
        assert r.model_version == "1" and not r.degraded


def test_only_flagged_or_requested_transactions_are_explained() -> None:
    """TreeSHAP runs for review/decline and for rows asked to explain; approvals otherwise carry no reasons."""
    bundle = TinyBundle()
    txns = [txn(1, amount_usd=0.01, device_id="dev-B"), txn(2, amount_usd=0.6, device_id="dev-B"), txn(3)]
    rows = online_rows(txns)
    low, mid, high = sorted(bundle.proba(core.model_inputs(txns, rows)))
    bundle.thresholds = {"review": (low + mid) / 2, "decline": (mid + high) / 2}  # one of each decision
    plain = core.score_batch(served(bundle), txns, rows)
    asked = core.score_batch(served(bundle), txns, rows, explain=[True, True, True])
    for a, b in zip(plain, asked, strict=True):
        assert a.score == b.score and a.decision == b.decision and a.raw_score == b.raw_score
        assert a.explained == (a.decision != "approve")
        assert b.explained
        if not a.explained:
            assert a.reasons == [] and a.base_value is None and a.other_contribution is None
    assert sorted(r.decision for r in plain) == ["approve", "decline", "review"]


def test_reasons_added_later_come_from_the_model_that_scored_each_row() -> None:
    """`score_batch(reasons=False)` then `add_reasons` (the scorer's two steps) equals scoring with reasons,
    row by row with the model that scored it, even when rows of two models are explained together."""
    a, b = TinyBundle("1", seed=0), TinyBundle("2", seed=1)
    txns = [txn(1), txn(2, amount_usd=5.0), txn(3, device_id="dev-B")]
    rows = online_rows(txns)
    later = [
        *core.score_batch(served(a), txns, rows, explain=[True] * 3, reasons=False),
        *core.score_batch(served(b), txns, rows, explain=[True] * 3, reasons=False),
    ]
    assert all(r.needs_reasons and not r.explained and r.reasons == [] for r in later)
    core.add_reasons(later, top_k=3)
    inline = [
        *core.score_batch(served(a), txns, rows, explain=[True] * 3),
        *core.score_batch(served(b), txns, rows, explain=[True] * 3),
    ]
    for x, y in zip(later, inline, strict=True):
        assert x.explained and not x.needs_reasons and x.model_version == y.model_version
        assert x.reasons == y.reasons and x.base_value == y.base_value
        assert x.other_contribution == pytest.approx(y.other_contribution, abs=1e-12)
    assert [r.code for r in later[0].reasons] != [r.code for r in later[3].reasons] or (
        later[0].base_value != later[3].base_value
    )  # the two models explain the same transaction differently: a mix-up would show


def test_an_explained_request_does_not_hold_up_the_requests_behind_it() -> None:
    """TreeSHAP runs off the event loop: while one request's reasons are being computed, another is answered."""
    release = threading.Event()

    class SlowReasons(TinyBundle):
        def contributions(self, X: np.ndarray) -> np.ndarray:
            assert release.wait(10), "reasons never released"
            return super().contributions(X)

    bundle = SlowReasons()
    bundle.thresholds = {"review": 1.0, "decline": 1.0}  # every decision an approval: reasons only when asked
    reader = SimpleNamespace(read=online_rows, healthy=True)
    holder = SimpleNamespace(current=served(bundle))
    settings = ScorerSettings(scorer_api_keys=["k"])

    async def run() -> tuple[bool, core.Scored, core.Scored]:
        service = ScoringService(settings, cast(Any, holder), cast(Any, reader), Metrics.create(), None)
        service.batcher.start()
        slow = asyncio.create_task(service.score([txn(1)], explain=True))
        await asyncio.sleep(0.05)  # its batch scored, its reasons under way
        (plain,) = await asyncio.wait_for(service.score([txn(2)]), 5)
        slow_still_waiting = not slow.done()
        release.set()
        (explained,) = await asyncio.wait_for(slow, 5)
        await service.stop()
        return slow_still_waiting, plain, explained

    slow_still_waiting, plain, explained = asyncio.run(run())
    assert slow_still_waiting and not plain.explained
    assert explained.explained and explained.base_value is not None
    assert explained.base_value + sum(r.contribution for r in explained.reasons) + (
        explained.other_contribution or 0.0
    ) == pytest.approx(explained.raw_score, abs=1e-9)


def test_scorer_matrix_equals_the_training_matrix() -> None:
    """The scorer finishes the windows from the user's online row at the request's instant; training
    evaluates the same functions over the history at the transaction's instant: the same matrix."""
    txns = [txn(1), txn(2, device_id="dev-B", asset="ETH", type="buy", payment_method="card", destination_address=None)]
    rows = online_rows(txns)
    frame = pd.DataFrame([transaction_record(t) for t in txns])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    stored = A.features_at(_user_history(), None, frame)
    stored["signup_time"] = pd.Timestamp(T0 - timedelta(days=400))
    stored["kyc_tier"] = 2
    training = F.model_matrix(stored, F.request_features(frame, stored)).to_numpy()
    served_matrix = core.model_inputs(txns, rows)
    assert not np.isnan(served_matrix[:, NAMES.index("txn_count_30d")]).any()
    np.testing.assert_allclose(served_matrix, training, rtol=1e-12, equal_nan=True)


def test_request_features_come_from_the_shared_feature_code() -> None:
    txns = [txn(1), txn(2, device_id="dev-B", asset="ETH", type="buy", payment_method="card", destination_address=None)]
    X = pd.DataFrame(core.model_inputs(txns, online_rows(txns)), columns=NAMES, index=["tx1", "tx2"])
    assert list(X.columns) == NAMES
    assert X.loc["tx1", "new_device"] == 1 and X.loc["tx2", "new_device"] == 0  # dev-B is known to the user
    assert X.loc["tx1", "seconds_since_prev_txn"] == pytest.approx(7200.0)
    usd = _user_history()["amount_usd"]  # all within the last 30 days
    assert X.loc["tx1", "amount_z_30d"] == pytest.approx((30_000.0 - usd.mean()) / usd.std(ddof=0))
    assert X.loc["tx1", "balance_share_leaving"] == pytest.approx(0.5 / 1.2)  # 12 deposits of 0.1 BTC
    assert X["device_txn_count_24h"].isna().iloc[0]  # no device row: missing, not zero


def test_missing_groups_and_freshness() -> None:
    txns = [txn(1), txn(2, type="buy", payment_method="card", destination_address=None)]
    results = core.score_batch(served(TinyBundle()), txns, online_rows(txns))
    assert set(results[0].missing) == {"address_activity", "address_list", "device_activity"}  # dev-A is new
    assert set(results[1].missing) == {"device_activity"}  # no address: the address views do not apply
    fresh = results[0].freshness["user_activity"]
    assert fresh.age_seconds == pytest.approx(7200.0) and fresh.as_of == T0 - timedelta(hours=2)
    unknown = core.score_batch(served(TinyBundle()), txns[:1], online_rows(txns[:1], known_user=False))[0]
    assert "user_activity" in unknown.missing and "account" in unknown.missing


def test_store_down_scores_from_request_features_and_says_so() -> None:
    txns = [txn(1)]
    result = core.score_batch(served(TinyBundle()), txns, core.OnlineRows.unavailable(1))[0]
    assert result.degraded
    assert set(result.missing) == set(ALL_VIEWS)
    assert 0.0 <= result.score <= 1.0 and result.freshness == {}


def test_audit_record_is_plain_json() -> None:
    txns = [txn(1)]
    result = core.score_batch(served(TinyBundle(version="7")), txns, online_rows(txns))[0]
    record = core.audit_record(result, NAMES, T0)
    decoded = json.loads(json.dumps(record, allow_nan=False))
    assert decoded["model_version"] == "7" and decoded["transaction"]["transaction_id"] == "tx1"
    assert decoded["features"]["device_txn_count_24h"] is None and decoded["features"]["new_device"] == 1.0
    assert set(decoded) >= {"score", "decision", "reason_codes", "degraded", "missing_features"}


def test_micro_batcher_routes_results_and_isolates_a_failing_request() -> None:
    sizes: list[int] = []

    def process(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad item")
        return [x * 10 for x in items]

    async def run() -> list[Any]:
        batcher: MicroBatcher[int, int] = MicroBatcher(process, max_rows=8, on_batch=sizes.append)
        batcher.start()
        calls = [batcher.submit([i, i + 1]) for i in range(0, 20, 2)] + [batcher.submit([-1])]
        out = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.stop()
        return out

    out = asyncio.run(run())
    assert out[:10] == [[i * 10, (i + 1) * 10] for i in range(0, 20, 2)]
    assert isinstance(out[10], ValueError)
    assert max(sizes) <= 8 and sum(sizes) == 20  # batched, bounded, nothing scored twice


def test_thread_batcher_takes_everything_queued_in_one_pass_and_isolates_a_failure() -> None:
    gate = threading.Event()
    passes: list[list[int]] = []

    def process(items: list[list[int]]) -> None:
        gate.wait(5)
        passes.append([x[0] for x in items])
        if [-1] in items:
            raise ValueError("bad item")
        for x in items:
            x[1:] = [x[0] * 10]  # in place, idempotent

    async def run() -> tuple[list[Any], list[list[int]]]:
        batcher: ThreadBatcher[list[int]] = ThreadBatcher(process, "test-reasons")
        items = [[i] for i in range(6)]
        first = batcher.submit(items[:1])  # the thread takes it and waits at the gate
        await asyncio.sleep(0.05)
        rest = [batcher.submit([x]) for x in items[1:]] + [batcher.submit([[-1]])]
        gate.set()
        out = await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), 10)
        await asyncio.to_thread(batcher.stop)
        return out, items

    out, items = asyncio.run(run())
    assert out[:6] == [None] * 6 and isinstance(out[6], ValueError)
    assert items == [[i, i * 10] for i in range(6)]
    assert passes[0] == [0] and sorted(passes[1]) == [-1, 1, 2, 3, 4, 5]  # all that queued meanwhile, in one pass
    assert sorted(p[0] for p in passes[2:]) == [-1, 1, 2, 3, 4, 5]  # then one by one: only -1 fails


class FakeSource:
    def __init__(self) -> None:
        self.version: str | None = None
        self.bundles: dict[str, TinyBundle] = {}

    def champion_version(self) -> str | None:
        return self.version

    def load(self) -> ServedModel:
        assert self.version is not None
        return served(self.bundles[self.version])


def test_model_holder_swaps_only_to_a_model_with_the_served_feature_list() -> None:
    source = FakeSource()
    holder = ModelHolder(source, NAMES)
    assert not holder.refresh() and holder.current is None  # no champion yet: not ready
    source.bundles = {"1": TinyBundle("1"), "2": TinyBundle("2", names=[*NAMES[:-1], "other"]), "3": TinyBundle("3")}
    source.version = "1"
    assert holder.refresh() and holder.current is not None and holder.current.version == "1"
    assert not holder.refresh()  # unchanged
    source.version = "2"
    assert not holder.refresh() and holder.current.version == "1"  # wrong features: refused, v1 keeps serving
    source.version = "3"
    assert holder.refresh() and holder.current.version == "3"


def _as_read(rows: core.OnlineRows) -> core.OnlineRows:
    """The rows' array fields as the Feast edge hands them over: read-only, straight from protobuf bytes."""
    from feast.protos.feast.types.Value_pb2 import DoubleList
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    from services.scorer.online import _doubles

    values = dict(rows.values)
    for kind in KIND_OF_VIEW.values():
        for name in state_fields(kind):
            values[name] = [
                None if a is None else _doubles(ValueProto(double_list_val=DoubleList(val=list(a))))
                for a in cast(list[Any], values[name])
            ]
    return core.OnlineRows(values=values, as_of=rows.as_of)


def test_warm_up_compiles_what_every_request_runs() -> None:
    """`warm_up` (made-up transaction, no stored rows) leaves nothing for a request to compile: rows read
    from the store (read-only arrays), alone or in a batch, and history queries all run the one numba
    specialisation of each kernel. A second one would be compiled or loaded by the first such request
    (~0.5 s), and its objects, made after the lifespan froze the collector, walked by every full collection."""
    model = served(TinyBundle())
    core.warm_up(model)
    core.warm_up(None)
    txns = [txn(1), txn(2, device_id="dev-B")]
    rows = _as_read(online_rows(txns))
    assert not cast(list[Any], rows.values["user_events"])[0].flags.writeable
    core.score_batch(model, txns[:1], _as_read(online_rows(txns[:1])), explain=[True])
    core.score_batch(model, txns, rows, explain=[True, True])
    frame = pd.DataFrame([transaction_record(t) for t in txns])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    A.features_at(_user_history(), None, frame)
    assert len(A._user_kernel.signatures) == 1
    assert len(A._counterparty_kernel.signatures) == 1
