"""`fraud`: the one command line of crypto-fraud-detection. Every service and pipeline stage is a command.

Commands import their implementation lazily so that `fraud --help` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from fraud.logs import setup_logging
from fraud.settings import CommonSettings, KafkaAdminSettings

app = typer.Typer(
    name="fraud",
    help="Real-time fraud detection for a crypto exchange: simulate, ingest, train, serve, monitor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Real-time fraud detection for a crypto exchange: simulate, ingest, train, serve, monitor.

    Settings come from FRAUD_* environment variables (see README); defaults are the local setup.
    """


def _logging(settings: CommonSettings) -> None:
    setup_logging(settings.log_level, settings.log_json)


@app.command()
def topics(
    partitions: int | None = typer.Option(None, help="partitions per topic (default: settings)"),
) -> None:
    """Wait for the Kafka broker and create the project's topics (safe to run twice)."""
    from fraud.contracts import ALL_TOPICS
    from fraud.kafka import ensure_topics, wait_for_broker

    settings = KafkaAdminSettings()
    _logging(settings)
    wait_for_broker(settings.kafka_bootstrap_servers, settings.kafka_wait_seconds)
    created = ensure_topics(
        settings.kafka_bootstrap_servers,
        ALL_TOPICS,
        partitions or settings.topic_partitions,
        settings.topic_replication_factor,
    )
    for name in ALL_TOPICS:
        typer.echo(f"{name}: {'created' if name in created else 'exists'}")


@app.command()
def simulate(
    seed: int | None = typer.Option(None, help="random seed: same seed and options, same output"),
    users: int | None = typer.Option(None, help="number of customers (fraud rings add their own accounts)"),
    days: int | None = typer.Option(None, help="length of the simulated window in days"),
    start: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="first day of the window (UTC)"),
    fraud_rate: float | None = typer.Option(None, help="share of fraudulent transactions (default 0.01)"),
    to: str = typer.Option("parquet", help="kafka or parquet"),
    out: Path | None = typer.Option(None, help="Parquet output directory (default <data_dir>/simulated)"),
    rate: float | None = typer.Option(None, help="Kafka messages per second (0: as fast as possible)"),
    realtime: bool = typer.Option(False, help="Kafka: event and label times are the wall-clock time at send"),
) -> None:
    """Simulate an exchange's transactions and late fraud labels; validate them; write Parquet or stream to Kafka."""
    from fraud.settings import SimulatorSettings
    from pipelines.simulate import DataQualityError, run

    if to not in ("kafka", "parquet"):
        raise typer.BadParameter("--to must be kafka or parquet")
    overrides: dict[str, Any] = {
        "sim_seed": seed,
        "sim_users": users,
        "sim_days": days,
        "sim_start": start.date() if start else None,
        "sim_fraud_rate": fraud_rate,
        "sim_out": out,
        "sim_rate": rate,
        "sim_realtime": realtime or None,
    }
    settings = SimulatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    _logging(settings)
    try:
        report = run(settings, "kafka" if to == "kafka" else "parquet", progress=True)
    except DataQualityError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{report.transactions:,} transactions ({report.fraud:,} fraud), {report.accounts:,} accounts")
    for kind, n in sorted(report.by_type.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {kind:<22} {n:>10,}")
    typer.echo("\n".join(report.validation))
    for path in report.written:
        typer.echo(f"wrote {path}")
    if report.kafka_events_per_s is not None:
        typer.echo(f"kafka: {report.kafka_events_per_s:,.0f} messages/s")
    typer.echo("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items()))


features_app = typer.Typer(help="The Feast feature store.", no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("apply")
def features_apply() -> None:
    """Register the feature repository (`feast apply`) for the configured store (embedded or compose)."""
    from fraud.settings import FeatureStoreSettings
    from fraud.store import apply

    settings = FeatureStoreSettings()
    _logging(settings)
    store = apply(settings)
    views = sorted(v.name for v in store.list_feature_views())
    typer.echo(f"applied {settings.feast_project} ({settings.feast_mode}): {', '.join(views)}")


quarantine_app = typer.Typer(
    help="Events a failed ingest batch check isolated: list, show, replay.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list() -> None:
    """Every quarantined entry: id, events, the batch they came from, first failure, replayed when."""
    from fraud.settings import IngestSettings
    from services.quarantine import entries

    found = entries(IngestSettings().data_dir)
    if not found:
        typer.echo("nothing quarantined")
    for e in found:
        source = "whole batch" if e.whole_batch else f"of a batch of {e.batch_rows}"
        state = f"replayed {e.replayed}" if e.replayed else "not replayed"
        typer.echo(f"{e.id}  {e.rows} events ({source})  {state}\n    {e.first_failure}")


@quarantine_app.command("show")
def quarantine_show(
    entry: str = typer.Argument(..., help="an id from `fraud quarantine list`"),
    rows: int = typer.Option(10, min=0, help="events to print"),
) -> None:
    """An entry's check report and its first events."""
    from fraud.settings import IngestSettings
    from services.quarantine import load

    try:
        events, report = load(IngestSettings().data_dir, entry)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="ENTRY") from exc
    typer.echo(report.rstrip())
    typer.echo(events.head(rows).to_string(index=False) if rows else f"{len(events)} events")


@quarantine_app.command("replay")
def quarantine_replay(
    entry: str = typer.Argument(..., help="an id from `fraud quarantine list`"),
    force: bool = typer.Option(False, help="send again an entry already replayed"),
) -> None:
    """Send an entry's events back to the transactions topic, once the cause is fixed (idempotent)."""
    from fraud.settings import IngestSettings
    from services.quarantine import replay

    settings = IngestSettings()
    _logging(settings)
    try:
        sent = replay(settings, entry, force=force)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="ENTRY") from exc
    typer.echo(f"{entry}: {sent} events sent to {settings.ingest_topic}")


@app.command()
def backfill(
    transactions: Path = typer.Option(..., help="transactions file (Parquet or CSV, canonical schema)"),
    labels: Path = typer.Option(..., help="labels file (Parquet or CSV)"),
    accounts: Path | None = typer.Option(None, help="accounts table (optional: account features then missing)"),
    address_lists: Path | None = typer.Option(None, help="sanctions/mixer address lists (optional)"),
) -> None:
    """Compute every feature for a whole history; write the offline store and materialize the online store."""
    from fraud.settings import BackfillSettings
    from pipelines.backfill import backfill as run

    settings = BackfillSettings()
    _logging(settings)
    try:
        report = run(settings, transactions, labels, accounts, address_lists)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"backfill failed: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"transactions: {report.transactions_in} valid, {report.transactions_rejected} rejected; "
        f"labels: {report.labels_in} valid, {report.labels_rejected} rejected"
    )
    if report.rejects_path:
        typer.echo(f"rejected rows and reasons: {report.rejects_path}")
    for view, n in report.offline_rows.items():
        typer.echo(f"  {view}: {n} offline rows, {report.online_rows.get(view, 0)} online entities")
    typer.echo(f"features + offline write: {report.rows_per_s:,.0f} transactions/s")


@app.command()
def ingest(
    max_batches: int | None = typer.Option(None, help="stop after this many micro-batches (default: until stopped)"),
) -> None:
    """Consume `transactions` into Feast (online + offline) in validated micro-batches; bad events to the DLQ."""
    from fraud.settings import IngestSettings
    from services.ingest import main as run

    settings = IngestSettings()
    _logging(settings)
    run(settings, max_batches=max_batches)


@app.command("ingest-labels")
def ingest_labels() -> None:
    """Consume `fraud-labels` into the label store (with label_time) that training and risk features read."""
    from fraud.settings import IngestSettings
    from services.ingest_labels import main as run

    settings = IngestSettings()
    _logging(settings)
    run(settings)


@app.command()
def traffic(
    count: int | None = typer.Option(None, help="send this many transactions, then stop"),
    rate: float | None = typer.Option(None, help="requests per second (default: settings)"),
) -> None:
    """Keep sending simulated transactions to the scorer, like an exchange's payment flow."""
    from fraud.settings import TrafficSettings
    from services.traffic import main as run
    from services.traffic import send

    settings = TrafficSettings()
    if rate is not None:
        settings = settings.model_copy(update={"traffic_rate": rate})
    _logging(settings)
    if count is None:
        run(settings)
        return
    report = send(settings, count=count)
    typer.echo(
        f"sent {report.sent}, errors {report.errors}, decisions {dict(report.decisions)}, "
        f"p50 {report.percentile(50):.1f} ms, p99 {report.percentile(99):.1f} ms"
    )


@app.command()
def serve(
    host: str | None = typer.Option(None, help="listen address (default 127.0.0.1; FRAUD_SCORER_HOST)"),
    port: int | None = typer.Option(None, help="port (default 8000; FRAUD_SCORER_PORT)"),
    workers: int | None = typer.Option(None, help="uvicorn worker processes (default 2; FRAUD_SCORER_WORKERS)"),
) -> None:
    """Serve the real-time scoring API on the registry's champion model (FastAPI, uvicorn)."""
    from fraud.settings import ScorerSettings
    from services.scorer.app import serve as run

    overrides: dict[str, Any] = {"scorer_host": host, "scorer_port": port, "scorer_workers": workers}
    settings = ScorerSettings(**{k: v for k, v in overrides.items() if v is not None})
    _logging(settings)
    run(settings)


@app.command()
def demo(
    users: int = typer.Option(6000, help="simulated customers in the history"),
    days: int = typer.Option(45, help="days of simulated history"),
    sample: int = typer.Option(300, help="live transactions to send through the scorer"),
    fraud_rate: float = typer.Option(0.01, help="share of fraudulent transactions in the simulated history"),
    port: int = typer.Option(8000, help="scorer port on 127.0.0.1"),
    stop: bool = typer.Option(False, "--stop", help="stop what a previous demo started, and exit"),
    keep_running: bool = typer.Option(True, help="leave the services running after the summary"),
) -> None:
    """Run the whole story locally: broker, features, streaming ingest, training, scorer, live traffic."""
    from fraud.settings import CommonSettings
    from pipelines.demo import Demo, DemoConfig, DemoFailed, default_steps, run

    settings = CommonSettings()
    setup_logging("WARNING")
    cfg = DemoConfig(
        data_dir=settings.data_dir.resolve(),
        users=users,
        days=days,
        sample=sample,
        port=port,
        keep_running=keep_running,
    )
    if stop:
        Demo(cfg).stop_all()
        return
    try:
        run(cfg, default_steps())
    except DemoFailed as exc:
        raise typer.Exit(1) from exc
    except KeyboardInterrupt as exc:
        raise typer.Exit(130) from exc


@app.command("validate")
def validate_cmd(
    stage: str = typer.Argument(
        ...,
        help="raw_transactions, raw_labels, ingest_batch, training_set, features (user/address/device/ip_features), "
        "scoring_traffic",
    ),
    data: Path = typer.Option(..., help="the file: Parquet (or a folder of parts), CSV, or JSON lines of fraud-scores"),
    docs: bool = typer.Option(True, help="publish the result to the Data Docs site under <data_dir>/data_docs"),
    param: list[str] = typer.Option([], help="suite parameter key=value (repeatable), e.g. min_rows=1000"),
    transactions: Path | None = typer.Option(None, help="raw_labels: transactions file to take event_time from"),
) -> None:
    """Run a stage's Great Expectations suite on a file; exit 1 if it fails (2 if the input is unusable)."""
    from data_quality.docs import docs_dir_for, index
    from data_quality.files import parse_params, validate_file

    settings = CommonSettings()
    _logging(settings)
    docs_dir = docs_dir_for(settings.data_dir) if docs else None
    try:
        summary = validate_file(stage, data, docs_dir, parse_params(param), transactions)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.secho(f"cannot validate: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.secho(summary.report(), fg="green" if summary.success else "red")
    if docs_dir is not None:
        typer.echo(f"data docs: {summary.docs_path}\nsite: {index(docs_dir)}")
    if not summary.success:
        raise typer.Exit(1)


@app.command()
def monitor(
    once: bool = typer.Option(False, help="check one window and exit (default: every interval until stopped)"),
    reference: Path | None = typer.Option(None, help="drift reference JSON or training-set Parquet/CSV"),
    window: int | None = typer.Option(None, help="window: the last N scored transactions"),
    minutes: float | None = typer.Option(None, help="window: only the last T minutes"),
) -> None:
    """Drift monitoring: PSI of scoring traffic vs the champion's training data; HTML report and Prometheus gauges."""
    from fraud.settings import MonitorSettings
    from services.monitor import main as run

    overrides: dict[str, Any] = {
        "monitor_reference_path": reference,
        "monitor_window_records": window,
        "monitor_window_minutes": minutes,
    }
    settings = MonitorSettings(**{k: v for k, v in overrides.items() if v is not None})
    _logging(settings)
    outcome = run(settings, once=once)
    if once:
        if outcome is None:
            typer.secho("no window checked (no reference or no traffic yet)", fg="yellow", err=True)
            raise typer.Exit(2)
        alerts = outcome.result.alerts
        typer.secho(f"{len(alerts)} alert(s)" if alerts else "no drift alert", fg="red" if alerts else "green")
        for line in alerts:
            typer.echo(f"  - {line}")
        typer.echo(f"report: {outcome.report}")
        if outcome.validation_page:
            typer.echo(f"data docs: {outcome.validation_page}")


def _train_settings() -> Any:
    from fraud.settings import TrainSettings

    settings = TrainSettings()
    _logging(settings)
    return settings


@app.command()
def train(
    train_start: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="first training day (UTC)"),
    train_end: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="end of training (exclusive)"),
    test_start: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="first test day (model build day)"),
    test_end: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="end of the test period (exclusive)"),
    gap_days: float | None = typer.Option(None, help="label-delay gap before validation and test (default 7)"),
    cutoff: datetime | None = typer.Option(None, formats=["%Y-%m-%d"], help="labels known at (default: latest)"),
    tune: bool = typer.Option(False, help="Optuna search of the LightGBM parameters within a time budget"),
    tune_seconds: float | None = typer.Option(None, help="--tune: time budget (default FRAUD_TRAIN_TUNE_SECONDS)"),
    report: Path | None = typer.Option(None, help="write the test metrics and the gate's verdict as JSON"),
    model_card: Path | None = typer.Option(None, help="also write the model card here (e.g. docs/MODEL_CARD.md)"),
) -> None:
    """Train on point-in-time features, evaluate against baselines, log to MLflow, register and gate."""
    from pipelines.train import DataQualityError, TrainOptions, run

    settings = _train_settings()
    if gap_days is not None:
        settings.train_gap_days = gap_days
    if tune_seconds is not None:
        settings.train_tune_seconds = tune_seconds
    options = TrainOptions(
        train_start=train_start,
        train_end=train_end,
        test_start=test_start,
        test_end=test_end,
        cutoff=cutoff,
        tune=tune,
        report=report,
        model_card=model_card,
        progress=True,
    )
    try:
        result = run(settings, options)
    except DataQualityError as exc:
        typer.secho("training set failed its data-quality suite; no model trained:", fg="red", err=True)
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        typer.secho(f"train failed: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    split = result.split.describe()
    typer.echo(
        f"split: train {split['train_start'][:10]}..{split['train_end'][:10]}, "
        f"valid {split['valid_start'][:10]}..{split['valid_end'][:10]}, "
        f"test {split['test_start'][:10]}..{split['test_end'][:10]}"
    )
    typer.echo(f"rows: {result.rows}")
    typer.echo(f"{'scorer':<10} {'AP':>7} {'ROC-AUC':>8} {'R@1%FPR':>8} {'cost/1k':>9}")
    for name, m in result.metrics.items():
        typer.echo(
            f"{name:<10} {m['average_precision']:>7.4f} {m['roc_auc']:>8.4f} "
            f"{m['recall_at_1pct_fpr']:>8.3f} {m['cost']['per_1k_txns']:>9.0f}"
        )
    typer.echo(
        "recall by fraud type (model): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result.metrics["model"]["recall_by_fraud_type"].items() if v is not None)
    )
    if result.tuning:
        t = result.tuning
        budget = f"{t['trials']} trials in {t['seconds']:.0f}s (budget {t['budget_seconds']:.0f}s)"
        typer.echo(f"tuning: {budget}, best valid AP {t['best_valid_ap']:.4f}: {t['best_params']}")
    typer.echo(f"thresholds: review {result.thresholds.review:.4f}, decline {result.thresholds.decline:.4f}")
    verdict = "champion" if result.promoted else "challenger"
    typer.echo(f"registered v{result.version} as {verdict}: {result.gate_reason} (run {result.run_id})")
    typer.echo("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))


@app.command()
def models() -> None:
    """List the registered versions of the model with their aliases, gate verdicts and test metrics."""
    from models import registry

    settings = _train_settings()
    rows = registry.list_versions(registry.client(settings.tracking_uri), settings.train_model_name)
    if not rows:
        typer.echo(f"no versions of {settings.train_model_name} in {settings.tracking_uri}")
        return
    typer.echo(f"{'version':>7}  {'aliases':<22} {'gate':<8} {'test AP':>8} {'ROC-AUC':>8} {'R@1%FPR':>8}  test from")

    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    for r in rows:
        typer.echo(
            f"{r['version']:>7}  {','.join(r['aliases']) or '-':<22} {r['gate'] or '-':<8} "
            f"{fmt(r['test_ap']):>8} {fmt(r['test_roc_auc']):>8} {fmt(r['test_recall_at_1pct_fpr']):>8}  "
            f"{(r['test_start'] or '-')[:10]}"
        )


@app.command()
def promote(
    version: str = typer.Argument(..., help="model version to make the champion"),
    force: bool = typer.Option(False, help="even if its training data failed the quality suite"),
) -> None:
    """Point the `champion` alias at VERSION (an explicit decision; the previous champion is remembered)."""
    from mlflow.exceptions import MlflowException

    from models import registry

    settings = _train_settings()
    try:
        previous = registry.promote(registry.client(settings.tracking_uri), version, settings.train_model_name, force)
    except (ValueError, MlflowException) as exc:
        typer.secho(f"promote failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{settings.train_model_name}@champion: v{previous or '-'} -> v{version}")


@app.command()
def rollback() -> None:
    """Point `champion` back at the previous champion."""
    from mlflow.exceptions import MlflowException

    from models import registry

    settings = _train_settings()
    try:
        old, new = registry.rollback(registry.client(settings.tracking_uri), settings.train_model_name)
    except (ValueError, MlflowException) as exc:
        typer.secho(f"rollback failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{settings.train_model_name}@champion: v{old} -> v{new}")


@app.command()
def backtest(
    transactions: Path = typer.Option(..., help="transactions to score (Parquet or CSV, canonical schema)"),
    out: Path = typer.Option(..., help="output file: .parquet or .csv"),
    model_version: str | None = typer.Option(None, help="registered version (default: the champion)"),
) -> None:
    """Score historical transactions with point-in-time features; write transaction_id, score, decision."""
    from rich.console import Console

    from pipelines.backtest import backtest as run

    settings = _train_settings()
    try:
        with Console(stderr=True).status("scoring with point-in-time features..."):
            report = run(settings, transactions, out, model_version)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"backtest failed: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"scored {report.rows:,} transactions with v{report.version} ({report.rejected} rejected)")
    typer.echo(f"decisions: {report.decisions}")
    typer.echo(f"wrote {report.out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
