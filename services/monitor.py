"""`fraud monitor`: drift of live scoring traffic against the champion's training data.

Each window: read the latest scored transactions from `fraud-scores` (the last N records, optionally
only the last T minutes) -> flatten them (`data_quality.traffic`) -> validate them with the
`scoring_traffic` suite into Data Docs -> compare with the champion's drift reference
(`data_quality.drift`, pure) -> write an HTML report under `<data_dir>/reports/` -> set Prometheus
gauges; every breached threshold is a WARNING log line and an increment of `fraud_drift_alerts_total`.

The reference comes from the champion's MLflow run (artifact `drift_reference.json`, logged by
training) or from `FRAUD_MONITOR_REFERENCE_PATH` (that JSON, or a training-set Parquet/CSV).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from data_quality.drift import REFERENCE_ARTIFACT, DriftReference, DriftResult, Thresholds, assess, build_reference
from data_quality.drift_report import ReportContext, render
from data_quality.traffic import traffic_frame
from fraud import features as F
from fraud.settings import MonitorSettings

log = logging.getLogger(__name__)


class MonitorMetrics:
    """Prometheus gauges of the latest window, and counters of windows and alerts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.psi = Gauge("fraud_drift_feature_psi", "PSI of a model feature, latest window", ["feature"], registry=r)
        self.score_psi = Gauge("fraud_drift_score_psi", "PSI of the score, latest window", registry=r)
        self.max_psi = Gauge("fraud_drift_max_feature_psi", "Largest feature PSI, latest window", registry=r)
        self.features_breached = Gauge(
            "fraud_drift_features_breached", "Features over the PSI threshold, latest window", registry=r
        )
        self.rate = Gauge(
            "fraud_drift_decision_rate",
            "Decision rates: live window and validation",
            ["decision", "source"],
            registry=r,
        )
        self.missing_rate = Gauge("fraud_drift_missing_rate", "Share of rows with a missing feature group", registry=r)
        self.degraded_rate = Gauge("fraud_drift_degraded_rate", "Share of rows scored degraded", registry=r)
        self.rows = Gauge("fraud_drift_window_rows", "Scored transactions in the latest window", registry=r)
        self.breach = Gauge("fraud_drift_breach", "1 if the latest window breached a threshold", registry=r)
        self.quality = Gauge(
            "fraud_drift_traffic_validation_success", "1 if the window passed the scoring_traffic suite", registry=r
        )
        self.last_run = Gauge(
            "fraud_drift_last_run_timestamp_seconds", "When the latest window was checked", registry=r
        )
        self.windows = Counter("fraud_drift_windows", "Windows checked", registry=r)
        self.alerts = Counter("fraud_drift_alerts", "Drift alerts raised", ["kind"], registry=r)

    def update(self, result: DriftResult, validation_ok: bool | None, now: datetime) -> None:
        """Publish one window's figures."""
        for d in result.features:
            self.psi.labels(feature=d.name).set(d.psi)
        self.max_psi.set(result.features[0].psi if result.features else 0.0)
        self.features_breached.set(len(result.breached))
        if result.score is not None:
            self.score_psi.set(result.score.psi)
        for decision, value in result.live_rates.items():
            self.rate.labels(decision=decision, source="live").set(value)
        for decision, value in result.reference_rates.items():
            self.rate.labels(decision=decision, source="validation").set(value)
        self.missing_rate.set(result.missing_rate)
        self.degraded_rate.set(result.degraded_rate)
        self.rows.set(result.rows)
        self.breach.set(1 if result.alerts else 0)
        if validation_ok is not None:
            self.quality.set(1 if validation_ok else 0)
        for kind in result.alert_kinds:
            self.alerts.labels(kind=kind).inc()
        if validation_ok is False:
            self.alerts.labels(kind="traffic_validation").inc()
        self.windows.inc()
        self.last_run.set(now.timestamp())


def thresholds(settings: MonitorSettings) -> Thresholds:
    """The drift thresholds in the settings."""
    return Thresholds(
        psi=settings.monitor_psi_threshold,
        score_psi=settings.monitor_score_psi_threshold,
        rate_abs=settings.monitor_rate_abs_tolerance,
        rate_rel=settings.monitor_rate_rel_tolerance,
        missing_rate=settings.monitor_max_missing_rate,
        degraded_rate=settings.monitor_max_degraded_rate,
        min_rows=settings.monitor_min_rows,
    )


# -- inputs: the traffic window and the reference ---------------------------------------------------


def read_window(
    bootstrap_servers: str,
    topic: str,
    max_records: int,
    since: datetime | None = None,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """The latest `max_records` JSON records of `topic` (only those produced after `since`), oldest first.

    Reads each partition from (end - max_records), or from the first offset at `since`, up to the end
    offsets seen at the start; no consumer group, nothing committed. Unparseable records are skipped.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            log.warning("topic %s has no partitions (not created yet?)", topic)
            return []
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        starts = {tp: max(begins[tp], ends[tp] - max_records) for tp in tps}
        if since is not None:
            found = consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
            for tp in tps:
                at = found.get(tp)
                starts[tp] = max(starts[tp], at.offset if at is not None else ends[tp])
        todo = {tp for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        out: list[tuple[int, dict[str, Any]]] = []
        bad = 0
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=500, max_records=5000)
            for tp, records in polled.items():
                for rec in records:
                    if rec.offset >= ends[tp]:
                        continue
                    try:
                        out.append((rec.timestamp, json.loads(rec.value)))
                    except (ValueError, TypeError):
                        bad += 1
            for tp in list(todo):
                if consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        if todo:
            log.warning("window read timed out after %.0fs: %d partitions incomplete", timeout_s, len(todo))
        if bad:
            log.warning("skipped %d unparseable records on %s", bad, topic)
    finally:
        consumer.close()
    out.sort(key=lambda item: item[0])
    return [value for _, value in out[-max_records:]]


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet or CSV file as a frame."""
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def reference_from_file(path: Path) -> DriftReference:
    """A drift reference JSON, or one built from a training-set table (feature columns, optional score/decision)."""
    if not path.exists():
        raise FileNotFoundError(f"reference {path} does not exist")
    if path.suffix.lower() == ".json":
        return DriftReference.from_json(path.read_text())
    frame = read_table(path)
    return build_reference(
        frame,
        [f for f in F.model_feature_names() if f in frame],
        scores=frame.get("score", None),
        decisions=frame.get("decision", None),
        source=str(path),
    )


def champion_reference(settings: MonitorSettings) -> DriftReference:
    """The drift reference logged in the champion's MLflow run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    name, alias = settings.monitor_model_name, settings.monitor_model_alias
    version = client.get_model_version_by_alias(name, alias)
    local = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=settings.tracking_uri
    )
    ref = DriftReference.from_json(Path(local).read_text())
    return DriftReference(
        ref.features, ref.score, ref.decision_rates, ref.rows, f"{name}@{alias} v{version.version} ({ref.source})"
    )


def load_reference(settings: MonitorSettings) -> DriftReference:
    """The reference from `monitor_reference_path`, else from the champion's MLflow run."""
    if settings.monitor_reference_path is not None:
        return reference_from_file(settings.monitor_reference_path)
    return champion_reference(settings)


# -- one window ---------------------------------------------------------------------------------------


@dataclass
class WindowOutcome:
    """What checking one window produced."""

    result: DriftResult
    report: Path
    validation_ok: bool | None
    validation_page: Path | None


def check_window(
    settings: MonitorSettings,
    reference: DriftReference,
    records: list[dict[str, Any]],
    metrics: MonitorMetrics | None = None,
    now: datetime | None = None,
) -> WindowOutcome:
    """Validate, assess and report one window of `fraud-scores` records; log alerts, update metrics."""
    now = now or datetime.now(UTC)
    frame = traffic_frame(records)
    validation_ok: bool | None = None
    validation_text: str | None = None
    page: Path | None = None
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    if settings.monitor_data_docs and len(frame):
        from data_quality.docs import docs_dir_for
        from data_quality.runner import validate

        summary = validate(
            frame,
            "scoring_traffic",
            docs_dir=docs_dir_for(settings.data_dir),
            docs_run="monitor",
            docs_batch=f"window-{stamp}",
            max_decline_rate=min(1.0, max(0.2, 3 * reference.decision_rates.get("decline", 0.0))),
            max_degraded_rate=settings.monitor_max_degraded_rate,
            max_missing_rate=settings.monitor_max_missing_rate,
        )
        validation_ok, validation_text, page = summary.success, summary.report(), summary.docs_path
        if not summary.success:
            log.warning("ALERT scoring traffic failed its expectations: %s", summary.report())
    result = assess(reference, frame, thresholds(settings))
    for message in result.alerts:
        log.warning("ALERT drift: %s", message)
    span = "empty"
    if len(frame):
        span = f"{len(frame)} scored transactions, {frame['scored_at'].min():%Y-%m-%d %H:%M} to "
        span += f"{frame['scored_at'].max():%Y-%m-%d %H:%M} UTC"
    reports = settings.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(
        generated_at=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        window=span,
        model_versions=sorted({str(v) for v in frame["model_version"].dropna().unique()}) if len(frame) else [],
        reference_source=reference.source or "training data",
        validation=validation_text,
        validation_link=os.path.relpath(page, reports) if page else None,
    )
    path = reports / f"drift-{stamp}.html"
    _write_text(path, render(result, ctx))
    _write_text(path.with_suffix(".json"), json.dumps(result.summary(), indent=1, default=str))
    if metrics is not None:
        metrics.update(result, validation_ok, now)
    log.info(
        "drift window: %d rows, score PSI %s, %d features over threshold, %d alerts; report %s",
        result.rows,
        f"{result.score.psi:.3f}" if result.score else "n/a",
        len(result.breached),
        len(result.alerts),
        path,
    )
    return WindowOutcome(result, path, validation_ok, page)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- the service ----------------------------------------------------------------------------------------


class Monitor:
    """The monitoring loop; `main` builds it (the composition root)."""

    def __init__(
        self,
        settings: MonitorSettings,
        reader: Callable[[], list[dict[str, Any]]],
        reference: Callable[[], DriftReference],
        metrics: MonitorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.reference = reference
        self.metrics = metrics or MonitorMetrics()
        self.stopping = False

    def once(self) -> WindowOutcome | None:
        """Check the current window (None when no reference or no traffic yet)."""
        try:
            reference = self.reference()
        except Exception as exc:
            log.warning("no drift reference yet (%s): skipping this window", exc)
            return None
        records = self.reader()
        if not records:
            log.info("no scoring traffic in the window yet")
            return None
        return check_window(self.settings, reference, records, self.metrics)

    def run(self) -> None:
        """Check a window every `monitor_interval_seconds` until stopped."""
        while not self.stopping:
            started = time.monotonic()
            self.once()
            while not self.stopping and time.monotonic() - started < self.settings.monitor_interval_seconds:
                time.sleep(0.5)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Stop after the current window (wired to SIGTERM and SIGINT)."""
        log.info("stop requested (signal %s)", signum)
        self.stopping = True


def build(settings: MonitorSettings) -> Monitor:
    """The composition root: the Kafka window reader and the reference loader."""
    from fraud.kafka import wait_for_broker

    wait_for_broker(settings.kafka_bootstrap_servers, settings.kafka_wait_seconds)

    def reader() -> list[dict[str, Any]]:
        since = None
        if settings.monitor_window_minutes:
            since = datetime.now(UTC) - timedelta(minutes=settings.monitor_window_minutes)
        return read_window(
            settings.kafka_bootstrap_servers,
            settings.monitor_topic,
            settings.monitor_window_records,
            since,
            settings.monitor_read_timeout_seconds,
        )

    return Monitor(settings, reader, lambda: load_reference(settings))


def main(settings: MonitorSettings, once: bool = False) -> WindowOutcome | None:
    """Run `fraud monitor`: one window (`once`), or one every interval until SIGTERM/SIGINT."""
    monitor = build(settings)
    if settings.monitor_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(
            settings.monitor_metrics_port, addr=settings.monitor_metrics_host, registry=monitor.metrics.registry
        )
    if once:
        return monitor.once()
    signal.signal(signal.SIGTERM, monitor.stop)
    signal.signal(signal.SIGINT, monitor.stop)
    monitor.run()
    log.info("monitor stopped")
    return None
