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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
