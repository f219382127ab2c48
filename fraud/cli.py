"""`fraud`: the one command line of crypto-fraud-detection. Every service and pipeline stage is a command.

Commands import their implementation lazily so that `fraud --help` stays fast.
"""

from __future__ import annotations

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
