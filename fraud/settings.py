"""Settings: one pydantic-settings class per service, read from `FRAUD_*` environment variables.

Defaults are the embedded local setup (Kafka on 127.0.0.1, SQLite and file stores under `data/`).
Compose sets the same variables to its containers' host names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """What every service shares: where data lives, the Kafka broker, logging."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore")

    data_dir: Path = Path("data")
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_wait_seconds: float = Field(60.0, description="how long to wait for the broker at start")
    log_level: str = "INFO"
    log_json: bool = False


class KafkaAdminSettings(CommonSettings):
    """`fraud topics`: topic layout."""

    topic_partitions: int = 3
    topic_replication_factor: int = 1
