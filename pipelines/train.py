"""`fraud train`: point-in-time training set -> data gate -> LightGBM -> evaluation -> MLflow -> registry gate.

1. Read the raw history (`fraud.history`): labelled transactions known at the cutoff.
2. Split by event time, never at random: train | gap | validation | gap | test. The gaps are the label
   delay. The model is built as it would have been on the first test day: train and validation rows
   only count if their label was known by then (`label_time <= test_start`); test rows use every
   label known at the cutoff.
3. Point-in-time features for those rows (`pipelines.training_set.training_frame`), checked by the
   `training_set` suite. A failing suite stops here (recorded as a failed MLflow run, no model).
4. LightGBM with early stopping on validation (optionally tuned by Optuna), Platt-calibrated on
   validation; review/decline thresholds from the cost model on validation.
5. The model and two baselines (rules, logistic regression) on the test period; plots.
6. MLflow: params, metrics, plots, model (signature + input example), bundle.json, data quality,
   training-data fingerprint, model card. The new version is `challenger`; it becomes `champion`
   if its test average precision beats the current champion scored on the same test rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fraud import features as F
from fraud import history
from fraud.settings import TrainSettings
from models.bundle import MODEL_NAME, Calibration, ModelBundle, Thresholds
from models.thresholds import CostModel

if TYPE_CHECKING:
    from models.training import FittedModel, TuneResult

SERVICE_NAME = "fraud_detection_v1"  # feature_repo.repo.SERVICE_NAME (imported lazily: Feast is slow to import)

log = logging.getLogger(__name__)

DAY = pd.Timedelta(days=1)
MIN_TEST_FRAUDS = 10  # fewer: the test period cannot rank models, so nothing is promoted


class DataQualityError(RuntimeError):
    """The training set failed its Great Expectations suite; `summary` says how."""

    def __init__(self, summary: Any) -> None:
        super().__init__(summary.report())
        self.summary = summary


# ---------------------------------------------------------------------------------------------
# The out-of-time split (pure).


@dataclass(frozen=True)
class Split:
    """Half-open event-time periods [start, end); `cutoff` is when the test labels were read."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    cutoff: pd.Timestamp

    def __post_init__(self) -> None:
        order = [self.train_start, self.train_end, self.valid_start, self.valid_end, self.test_start, self.test_end]
        if any(b <= a for a, b in zip(order[::2], order[1::2], strict=True)):
            raise ValueError(f"every period needs start < end: {self.describe()}")
        if not (self.train_end <= self.valid_start and self.valid_end <= self.test_start):
            raise ValueError(f"periods overlap: {self.describe()}")
        if self.cutoff < self.test_start:
            raise ValueError(f"cutoff {self.cutoff} is before the test period starts")

    def describe(self) -> dict[str, str]:
        """ISO strings, for params and reports."""
        return {k: pd.Timestamp(v).isoformat() for k, v in asdict(self).items()}


def _day(ts: pd.Timestamp) -> pd.Timestamp:
    return pd.Timestamp(ts).floor("D")


def _as_utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc(value: datetime | pd.Timestamp | None) -> pd.Timestamp | None:
    return None if value is None else _as_utc(value)


def make_split(
    first_event: pd.Timestamp,
    last_event: pd.Timestamp,
    cutoff: pd.Timestamp,
    gap_days: float = 7.0,
    warmup_days: float = 7.0,
    test_days: float | None = None,
    valid_days: float | None = None,
    train_start: datetime | None = None,
    train_end: datetime | None = None,
    test_start: datetime | None = None,
    test_end: datetime | None = None,
) -> Split:
    """Periods from explicit dates where given, else from the history's span (day boundaries).

    Defaults: train from `warmup_days` after the first event; test to the last event; of the rest
    (minus two gaps), 60% train, 20% validation, 20% test. Validation lies between the two gaps.
    """
    gap = pd.Timedelta(days=gap_days)
    t_start = _utc(train_start) or _day(first_event + pd.Timedelta(days=warmup_days))
    t_end_test = _utc(test_end) or (pd.Timestamp(last_event) + pd.Timedelta(microseconds=1))
    usable = (t_end_test - t_start) - 2 * gap
    if usable <= pd.Timedelta(0) and (test_start is None or train_end is None):
        raise ValueError(
            f"history too short: {first_event} .. {last_event} leaves nothing after warm-up and two {gap_days}-day gaps"
        )
    s_test = _utc(test_start) or _day(t_end_test - (pd.Timedelta(days=test_days) if test_days else usable * 0.2))
    v_end = s_test - gap
    if train_end is not None:
        e_train = _as_utc(train_end)
        v_start = e_train + gap
    else:
        length = pd.Timedelta(days=valid_days) if valid_days else usable * 0.2
        v_start = _day(v_end - length)
        e_train = v_start - gap
    return Split(t_start, e_train, v_start, v_end, s_test, t_end_test, pd.Timestamp(cutoff))


def assign_periods(event_time: pd.Series, label_time: pd.Series, split: Split) -> np.ndarray:
    """Each row's period: "train", "valid", "test", or "" (warm-up, gaps, late labels, outside).

    Train and validation rows need a label known at `test_start` (when the model is built); test
    rows a label known at the cutoff.
    """
    et = pd.to_datetime(event_time, utc=True)
    lt = pd.to_datetime(label_time, utc=True)
    deploy_known = (lt <= split.test_start).to_numpy()
    out = np.full(len(et), "", dtype=object)
    for name, lo, hi, known in (
        ("train", split.train_start, split.train_end, deploy_known),
        ("valid", split.valid_start, split.valid_end, deploy_known),
        ("test", split.test_start, split.test_end, (lt <= split.cutoff).to_numpy()),
    ):
        mask = ((et >= lo) & (et < hi)).to_numpy() & known
        out[mask] = name
    return out


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass
class TrainOptions:
    """What one `fraud train` invocation asks for."""

    train_start: datetime | None = None
    train_end: datetime | None = None
    test_start: datetime | None = None
    test_end: datetime | None = None
    cutoff: datetime | None = None
    tune: bool = False
    report: Path | None = None
    model_card: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)  # LightGBM overrides
    max_rounds: int | None = None
    progress: bool = False


@dataclass
class TrainResult:
    """What a run produced: the registered version, the gate's verdict, metrics, timings."""

    version: str
    promoted: bool
    gate_reason: str
    run_id: str
    split: Split
    rows: dict[str, int]
    metrics: dict[str, dict[str, Any]]
    thresholds: Thresholds
    calibration: Calibration
    cost_model: CostModel
    champion_before: str | None
    champion_after: str | None
    data_quality: dict[str, Any]
    fingerprint: str
    seconds: dict[str, float]
    params: dict[str, Any]
    best_iteration: int
    tuning: dict[str, Any] | None = None  # `--tune`: trials, seconds, budget, best params

    def report(self) -> dict[str, Any]:
        """The `--report` JSON."""
        return {
            "model_name": MODEL_NAME,
            "version": self.version,
            "promoted": self.promoted,
            "gate_reason": self.gate_reason,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "run_id": self.run_id,
            "split": self.split.describe(),
            "rows": self.rows,
            "thresholds": asdict(self.thresholds),
            "calibration": asdict(self.calibration),
            "cost_model": self.cost_model.to_dict(),
            "test_metrics": self.metrics,
            "data_quality": self.data_quality,
            "fingerprint": self.fingerprint,
            "best_iteration": self.best_iteration,
            "tuning": self.tuning,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


class _Phases:
    """Times named phases and drives an optional rich progress bar."""

    NAMES = ("read", "features", "validate", "train", "baselines", "evaluate", "log", "register")

    def __init__(self, show: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.seconds: dict[str, float] = {}
        self._progress = Progress(
            TextColumn("[bold]train[/] {task.description:<10}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            disable=not show,
        )
        self._task = self._progress.add_task(self.NAMES[0], total=len(self.NAMES))

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._progress.update(self._task, description=name)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self._progress.advance(self._task)

    def note(self, text: str) -> None:
        """Show what the current phase is doing (e.g. the tuning trial)."""
        self._progress.update(self._task, description=text)

    def __enter__(self) -> _Phases:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def fingerprint(frame: pd.DataFrame, X: np.ndarray) -> str:
    """SHA-256 of the training data: ids, labels, label times, periods and the exact feature matrix."""
    digest = hashlib.sha256()
    keys = frame[["transaction_id", "is_fraud", "label_time", "period"]]
    digest.update(pd.util.hash_pandas_object(keys, index=False).to_numpy().tobytes())
    digest.update(np.ascontiguousarray(X).tobytes())
    return digest.hexdigest()


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's float matrix (`fraud.features.model_matrix`) from a training frame."""
    stored = [c for c in F.stored_feature_names() if c in frame.columns]
    return F.model_matrix(frame[stored], frame[F.REQUEST_FEATURES])


def _experiment(settings: TrainSettings) -> str:
    import mlflow

    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    existing = mlflow.get_experiment_by_name(settings.train_experiment)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.resolve().as_uri()
    return str(mlflow.create_experiment(settings.train_experiment, artifact_location=location))


def _log_failed_data_quality(settings: TrainSettings, summary: Any, split: Split) -> None:
    """Record a refused training set in MLflow (no model), for the audit trail."""
    import mlflow

    experiment_id = _experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train (data quality failed)"):
        mlflow.set_tags({"stage": "train", "data_quality": "failed"})
        mlflow.log_params({f"split_{k}": v for k, v in split.describe().items()})
        mlflow.log_dict(summary.to_dict(), "data_quality/training_set.json")


def champion_ap_on(
    settings: TrainSettings, X_test: pd.DataFrame, y_test: np.ndarray
) -> tuple[str | None, float | None, str]:
    """The current champion scored on the new test rows: (version, AP, note)."""
    from sklearn.metrics import average_precision_score

    from models import registry
    from models.bundle import load_bundle

    mc = registry.client(settings.tracking_uri)
    version = registry.alias_version(mc, registry.CHAMPION, settings.train_model_name)
    if version is None:
        return None, None, "no champion"
    bundle = load_bundle(settings.tracking_uri, name=settings.train_model_name, version=version)
    if bundle.feature_names != list(X_test.columns):
        return version, float("inf"), "champion uses another feature list; promote explicitly"
    return version, float(average_precision_score(y_test, bundle.proba(X_test))), ""


def run(settings: TrainSettings, options: TrainOptions | None = None) -> TrainResult:
    """Train, evaluate, log, register and gate one model version."""
    options = options or TrainOptions()
    from data_quality.runner import validate
    from data_quality.suites import training_set_frame
    from feature_repo.repo import SERVICE_NAME as service
    from fraud import store as S
    from models import baselines, evaluation, registry, thresholds, training
    from pipelines.training_set import training_frame

    if service != SERVICE_NAME:
        raise RuntimeError(f"feature service {service!r} is not the repository's {SERVICE_NAME!r}")
    cost = CostModel(settings.train_review_cost, settings.train_decline_cost, settings.train_max_review_rate)
    with _Phases(options.progress) as phase:
        with phase("read"):
            txns = history.read(settings.data_dir, "transactions")
            labels = history.read(settings.data_dir, "labels")
            if txns.empty or labels.empty:
                raise ValueError(f"no history under {settings.data_dir}: run `fraud backfill` (or ingest) first")
            et = pd.to_datetime(txns["event_time"], utc=True)
            cutoff = _utc(options.cutoff) or max(et.max(), pd.to_datetime(labels["label_time"], utc=True).max())
            split = make_split(
                et.min(),
                et.max(),
                cutoff,
                settings.train_gap_days,
                settings.train_warmup_days,
                settings.train_test_days,
                settings.train_valid_days,
                options.train_start,
                options.train_end,
                options.test_start,
                options.test_end,
            )
            log.info("split: %s", split.describe())
            # only rows that land in a period are worth a point-in-time lookup
            label_time = txns[["transaction_id"]].merge(labels, on="transaction_id", how="left")["label_time"]
            txns = txns[assign_periods(et, label_time, split) != ""].reset_index(drop=True)

        with phase("features"):
            store = S.open_store(settings)
            frame = training_frame(store, txns, labels, split.cutoff)
            frame = frame.loc[:, ~frame.columns.duplicated()].copy()
            frame["period"] = assign_periods(frame["event_time"], frame["label_time"], split)
            frame = frame[frame["period"] != ""].reset_index(drop=True)
            frame["is_fraud"] = frame["is_fraud"].astype(bool)

        with phase("validate"):
            from data_quality.docs import docs_dir_for

            dq = validate(
                training_set_frame(frame),
                "training_set",
                docs_dir=docs_dir_for(settings.data_dir),
                docs_run="train",
                min_fraud_rate=settings.train_min_fraud_rate,
                max_fraud_rate=settings.train_max_fraud_rate,
            )
            if not dq.success:
                _log_failed_data_quality(settings, dq, split)
                raise DataQualityError(dq)

        X_all = model_inputs(frame)
        names = list(X_all.columns)
        y_all = frame["is_fraud"].to_numpy()
        parts = {p: (frame["period"] == p).to_numpy() for p in ("train", "valid", "test")}
        rows = {p: int(m.sum()) for p, m in parts.items()} | {
            f"{p}_frauds": int(y_all[m].sum()) for p, m in parts.items()
        }
        if min(rows["train_frauds"], rows["valid_frauds"]) == 0:
            raise ValueError(f"a period has no fraud to learn or validate on: {rows}")
        Xtr, Xva, Xte = (X_all[parts[p]] for p in ("train", "valid", "test"))
        ytr, yva, yte = (y_all[parts[p]] for p in ("train", "valid", "test"))
        test = frame[parts["test"]].reset_index(drop=True)
        valid = frame[parts["valid"]].reset_index(drop=True)

        with phase("train"):
            config = training.TrainConfig(
                seed=settings.train_seed, num_threads=settings.train_threads, params=dict(options.params)
            )
            if options.max_rounds is not None:
                config.max_rounds = options.max_rounds
            tuning = None
            if options.tune:
                tuning = training.tune(
                    Xtr.to_numpy(),
                    ytr,
                    Xva.to_numpy(),
                    yva,
                    names,
                    config,
                    settings.train_tune_seconds,
                    progress=phase.note,
                )
            params = tuning.params if tuning else None
            fitted = training.train(Xtr.to_numpy(), ytr, Xva.to_numpy(), yva, names, config, params)
            bundle = ModelBundle(
                booster=fitted.booster,
                feature_names=names,
                calibration=fitted.calibration,
                thresholds=Thresholds(1.0, 1.0),
                feature_service=SERVICE_NAME,
            )
            p_valid = bundle.proba(Xva)
            bundle.thresholds = thresholds.choose(p_valid, yva, valid["amount_usd"].to_numpy(), cost)

        with phase("baselines"):
            logistic = baselines.fit_logistic(Xtr, ytr, seed=settings.train_seed)
            valid_scores = {"rules": baselines.rules_score(Xva), "logistic": baselines.logistic_score(logistic, Xva)}
            base_thresholds = {
                k: thresholds.choose(s, yva, valid["amount_usd"].to_numpy(), cost) for k, s in valid_scores.items()
            }

        with phase("evaluate"):
            scores = {
                "model": bundle.proba(Xte),
                "rules": baselines.rules_score(Xte),
                "logistic": baselines.logistic_score(logistic, Xte),
            }
            limits = {"model": bundle.thresholds, **base_thresholds}
            metrics = {
                k: evaluation.evaluate(
                    yte, s, test["amount_usd"].to_numpy(), test["fraud_type"], test["event_time"], limits[k], cost
                )
                for k, s in scores.items()
            }
            champion_before, champion_ap, note = champion_ap_on(settings, Xte, yte)
            digest = fingerprint(frame, X_all.to_numpy())

        with phase("log"):
            run_id, model_uri, model_id = _log_run(
                settings, options, bundle, fitted, tuning, split, rows, metrics, scores, yte, Xte, dq, digest, cost
            )

        with phase("register"):
            mc = registry.client(settings.tracking_uri)
            version = registry.register(mc, model_uri, run_id, dq.success, settings.train_model_name, model_id)
            bundle.version = version
            enough = rows["test_frauds"] >= MIN_TEST_FRAUDS
            decision = registry.gate(
                dq.success and enough, metrics["model"]["average_precision"], champion_ap, champion_before
            )
            if not enough:
                decision = registry.GateDecision(
                    False, f"only {rows['test_frauds']} frauds in the test period", decision.challenger_ap, None, None
                )
            elif note and champion_ap == float("inf"):
                decision = registry.GateDecision(False, note, decision.challenger_ap, None, champion_before)
            registry.apply_gate(mc, version, decision, settings.train_model_name)
            champion_after = registry.alias_version(mc, registry.CHAMPION, settings.train_model_name)
            mc.set_tag(run_id, "registered_version", version)
            mc.set_tag(run_id, "gate", decision.reason)

    result = TrainResult(
        version=version,
        promoted=decision.promote,
        gate_reason=decision.reason,
        run_id=run_id,
        split=split,
        rows=rows,
        metrics=metrics,
        thresholds=bundle.thresholds,
        calibration=bundle.calibration,
        cost_model=cost,
        champion_before=champion_before,
        champion_after=champion_after,
        data_quality=dq.to_dict(),
        fingerprint=digest,
        seconds=phase.seconds,
        params=fitted.params,
        best_iteration=fitted.best_iteration,
        tuning=tuning.summary() | {"best_params": tuning.best} if tuning else None,
    )
    card = model_card(result, names)
    with tempfile.TemporaryDirectory() as tmp:
        import mlflow

        (Path(tmp) / "MODEL_CARD.md").write_text(card)
        (Path(tmp) / "train_report.json").write_text(json.dumps(result.report(), indent=2, default=str))
        mlflow.MlflowClient(settings.tracking_uri).log_artifacts(run_id, tmp)
    if options.model_card:
        options.model_card.parent.mkdir(parents=True, exist_ok=True)
        options.model_card.write_text(card)
    if options.report:
        options.report.parent.mkdir(parents=True, exist_ok=True)
        options.report.write_text(json.dumps(result.report(), indent=2, default=str))
    log.info("trained %s v%s: %s", settings.train_model_name, version, decision.reason)
    return result


def _log_run(
    settings: TrainSettings,
    options: TrainOptions,
    bundle: ModelBundle,
    fitted: FittedModel,
    tuning: TuneResult | None,
    split: Split,
    rows: dict[str, int],
    metrics: dict[str, dict[str, Any]],
    scores: dict[str, np.ndarray],
    y_test: np.ndarray,
    X_test: pd.DataFrame,
    dq: Any,
    digest: str,
    cost: CostModel,
) -> tuple[str, str, str | None]:
    """One MLflow run: params, metrics, plots, the model and its bundle; returns (run id, model URI, model id)."""
    import mlflow
    from mlflow.models import infer_signature

    from models import plots
    from models.evaluation import flat_metrics

    experiment_id = _experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as active:
        run_id = active.info.run_id
        mlflow.set_tags(
            {"stage": "train", "data_quality": "passed" if dq.success else "failed", "feature_service": SERVICE_NAME}
        )
        from data_quality.mlflow_link import link_validation

        link_validation(dq)  # tags the run with the training set's Data Docs page and attaches it
        params = {k: v for k, v in fitted.params.items() if k not in ("verbosity",)}
        mlflow.log_params(
            {f"lgbm_{k}": v for k, v in params.items()}
            | {f"split_{k}": v for k, v in split.describe().items()}
            | {"test_start": split.describe()["test_start"], "best_iteration": fitted.best_iteration}
            | {"tuned": options.tune, "feature_service": SERVICE_NAME, "n_features": len(bundle.feature_names)}
            | {f"rows_{k}": v for k, v in rows.items()}
            | {f"cost_{k}": v for k, v in cost.to_dict().items()}
            | {"fingerprint": digest}
            | ({f"tune_{k}": v for k, v in tuning.summary().items()} if tuning else {})
        )
        if tuning is not None:
            mlflow.log_dict({"summary": tuning.summary(), "best_params": tuning.best}, "tuning.json")
        flat: dict[str, float] = {"valid_model_average_precision": fitted.valid_ap}
        for name, m in metrics.items():
            flat |= flat_metrics(f"test_{name}", m)
        flat |= {"threshold_review": bundle.thresholds.review, "threshold_decline": bundle.thresholds.decline}
        flat |= {"calibration_a": bundle.calibration.a, "calibration_b": bundle.calibration.b}
        mlflow.log_metrics({k: v for k, v in flat.items() if np.isfinite(v)})
        mlflow.log_dict(bundle.to_json(), "bundle.json")
        mlflow.log_dict({"sha256": digest, "rows": rows}, "training_data_fingerprint.json")
        mlflow.log_dict(metrics, "test_metrics.json")
        # what `fraud monitor` compares live traffic with: the held-out period's features and scores
        from data_quality.mlflow_link import log_drift_reference

        log_drift_reference(
            X_test,
            bundle.feature_names,
            scores=scores["model"],
            decisions=list(bundle.decide(scores["model"])),
            source="test period of the training run",
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            plots.pr_roc_curves(y_test, scores, out)
            plots.calibration(y_test, scores["model"], out)
            gain = bundle.booster.feature_importance(importance_type="gain")
            plots.feature_importance(bundle.feature_names, np.asarray(gain, dtype=np.float64), out)
            sample = X_test.sample(min(len(X_test), 2000), random_state=settings.train_seed)
            plots.shap_summary(bundle.feature_names, bundle.contributions(sample), sample.to_numpy(), out)
            plots.score_distribution(
                y_test, scores["model"], (bundle.thresholds.review, bundle.thresholds.decline), out
            )
            mlflow.log_artifacts(str(out), "plots")
        example = X_test.head(5)
        signature = infer_signature(example, bundle.booster.predict(example.to_numpy()))
        info = mlflow.lightgbm.log_model(
            bundle.booster,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=_serving_requirements(),  # stated: inferring them loads the model in a subprocess
        )
    return run_id, info.model_uri, getattr(info, "model_id", None)


def _serving_requirements() -> list[str]:
    """Pinned packages `mlflow models serve` needs for the LightGBM flavour: this environment's versions."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "lightgbm", "numpy", "pandas", "scikit-learn", "scipy")]


# ---------------------------------------------------------------------------------------------
# The model card.


def _pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{100 * float(x):.1f}%"


def _num(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{float(x):.{digits}f}"


def _tuned(tuning: dict[str, Any] | None) -> str:
    if tuning is None:
        return ", default parameters"
    return f", parameters from an Optuna search: {tuning['trials']} trials in {tuning['seconds']:.0f} s"


def model_card(result: TrainResult, feature_names: list[str]) -> str:
    """`MODEL_CARD.md` for a run, from its own figures."""
    m = result.metrics
    split = result.split.describe()
    cols = ("model", "logistic", "rules")
    head = "| metric | LightGBM | logistic regression | rules |\n|---|---|---|---|"
    top_k = next(k for k in m["model"] if k.startswith("precision_top"))
    lines = [
        f"| average precision (PR-AUC) | {' | '.join(_num(m[c]['average_precision']) for c in cols)} |",
        f"| ROC-AUC | {' | '.join(_num(m[c]['roc_auc']) for c in cols)} |",
        f"| recall at 1% FPR | {' | '.join(_pct(m[c]['recall_at_1pct_fpr']) for c in cols)} |",
        f"| {top_k.replace('_', ' ')} | {' | '.join(_pct(m[c][top_k]) for c in cols)} |",
        f"| recall at its thresholds | {' | '.join(_pct(m[c]['recall_at_thresholds']) for c in cols)} |",
        f"| precision at its thresholds | {' | '.join(_pct(m[c]['precision_at_thresholds']) for c in cols)} |",
        "| expected cost per 1k transactions (USD) | "
        + " | ".join(_num(m[c]["cost"]["per_1k_txns"], 0) for c in cols)
        + " |",
    ]
    typ = [
        f"| {t} | {m['model']['frauds_by_type'][t]} | "
        + " | ".join(_pct(m[c]["recall_by_fraud_type"][t]) for c in cols)
        + " |"
        for t in m["model"]["recall_by_fraud_type"]
    ]
    r = result.rows
    verdict = "promoted to champion" if result.promoted else "challenger only"
    dq_state = "passed" if result.data_quality["success"] else "FAILED"
    return f"""# Model card: {MODEL_NAME} v{result.version}

Generated by `fraud train` from MLflow run `{result.run_id}`.
Gate: **{verdict}** ({result.gate_reason}).

## What it does
Scores one exchange transaction (deposit, withdrawal, buy, sell, send, receive) with the probability
that it is fraud, explains the score with per-feature SHAP contributions, and recommends approve,
review or decline. LightGBM binary classifier ({result.best_iteration} trees{_tuned(result.tuning)}),
Platt-calibrated on validation.

## Data
- Labelled transactions from the history in `fraud.history` with point-in-time features: each
  user's and counterparty's windows over `[t - w, t)` at the transaction's instant t, from the events
  strictly before it and the labels known then (`fraud.aggregates`, the functions the scorer finishes
  at request time), and the account and list features of Feast's point-in-time join (FeatureService
  `{SERVICE_NAME}`).
- Out-of-time split (event time, half-open), label delay respected:

| period | from | to | rows | frauds |
|---|---|---|---|---|
| train | {split["train_start"]} | {split["train_end"]} | {r["train"]:,} | {r["train_frauds"]:,} |
| validation | {split["valid_start"]} | {split["valid_end"]} | {r["valid"]:,} | {r["valid_frauds"]:,} |
| test | {split["test_start"]} | {split["test_end"]} | {r["test"]:,} | {r["test_frauds"]:,} |

  Train and validation rows count only if their label was known by the first test day (the model is
  built as it would have been then); test labels are those known at {split["cutoff"]}.
- Training set checked by the Great Expectations suite `training_set`: {result.data_quality["evaluated"]}
  expectations, {dq_state}. Fingerprint (SHA-256) `{result.fingerprint[:16]}…`.

## Features
{len(feature_names)} inputs (`fraud.features.model_feature_names()`): user activity windows (1h-30d,
per transaction type, ending at the transaction), distinct devices/IPs/countries/addresses, balances,
counterparty activity and label-derived fraud counts and rates (device, IP, destination address; a
label counts from its label time), account age and KYC tier, sanctions/mixer
list membership, and request-time features (amount, type, asset, channel, new-device/IP/country/address
flags, amount relative to the user's 30-day mean, share of the balance leaving, time since the
previous transaction, counterparty ages).

## Test-period metrics (model vs baselines, same rows)
{head}
{chr(10).join(lines)}

Rules: hand-written red flags (`models/baselines.py`). Logistic regression: same features, median
imputation with missing indicators, signed log, scaling, one-hot categories, balanced classes.
Each scorer's thresholds are chosen on validation with the same cost model.

## Recall by fraud type (test, flagged = review or decline)
| fraud type | frauds in test | LightGBM | logistic regression | rules |
|---|---|---|---|---|
{chr(10).join(typ)}

## Thresholds and cost model
- review if p >= **{result.thresholds.review:.4f}**, decline if p >= **{result.thresholds.decline:.4f}**
  (calibrated probability).
- Chosen on validation to minimise: {result.cost_model.describe()}.
- At these thresholds on test: review rate {_pct(m["model"]["cost"]["review_rate"])}, decline rate
  {_pct(m["model"]["cost"]["decline_rate"])}, missed fraud ${m["model"]["cost"]["missed_fraud_usd"]:,.0f} of
  ${m["model"]["cost"]["fraud_usd_total"]:,.0f}.

## Serving
`fraud serve` loads the model with `bundle.json` from its run and returns the calibrated probability,
the decision at the thresholds above and reason codes. The logged MLflow model is the raw LightGBM
booster, so `mlflow models serve -m models:/{MODEL_NAME}/{result.version} --env-manager local` also serves it, but
its `/invocations` output is the **uncalibrated** booster probability for the {len(feature_names)} model inputs
(`fraud.features.model_matrix`): apply the calibration (p = sigmoid(a * margin + b)) and thresholds
from `bundle.json` to get the scorer's score and decision.

## Limits
- Trained on the project's simulator unless you backfill your own history: figures describe that
  synthetic exchange, not a real one.
- Labels arrive late (chargebacks weeks later, AML investigations later still): typologies with long
  delays (structuring, money mules, stolen cards) are under-represented in train and validation, and
  recent fraud is invisible until labelled.
- Calibration is fitted on validation rows whose labels were known by the first test day; the fraud
  rate drifts, so the probability scale should be re-checked on fresh labels.
- Transactions before {split["train_start"]} are skipped as feature warm-up (windows still filling);
  accounts with no history get missing user features and are scored on less evidence.
- Per-typology recall on a few dozen frauds has wide confidence intervals.
"""
