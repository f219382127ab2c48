"""Settings: one pydantic-settings class per service, read from `FRAUD_*` environment variables.

Defaults are the embedded local setup (Kafka on 127.0.0.1, SQLite and file stores under `data/`).
Compose sets the same variables to its containers' host names.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fraud.contracts import TOPIC_LABELS, TOPIC_SCORES, TOPIC_TRANSACTIONS


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


class FeatureStoreSettings(CommonSettings):
    """The Feast store: embedded (SQLite online, Parquet offline) or compose (Redis online)."""

    feast_mode: str = Field("embedded", pattern="^(embedded|compose)$")
    feast_project: str = "crypto_fraud"
    feast_redis_url: str = "127.0.0.1:6379"
    feast_offline_dir: Path | None = None  # default: <data_dir>/offline
    feast_registry_path: Path | None = None  # default: <data_dir>/feast/registry.db

    @property
    def offline_dir(self) -> Path:
        return self.feast_offline_dir or self.data_dir / "offline"

    @property
    def registry_path(self) -> Path:
        return self.feast_registry_path or self.data_dir / "feast" / "registry.db"

    @property
    def online_path(self) -> Path:
        return self.data_dir / "feast" / "online.db"


class BackfillSettings(FeatureStoreSettings):
    """`fraud backfill`: batch features for a whole history."""

    backfill_online_batch_rows: int = 5000


class SimulatorSettings(CommonSettings):
    """`fraud simulate`: the synthetic exchange (FRAUD_SIM_*), its outputs and Kafka topics."""

    sim_seed: int = 7
    sim_users: int = Field(20_000, ge=10)
    sim_days: int = Field(60, ge=1)
    sim_start: date = date(2025, 1, 1)
    sim_fraud_rate: float = Field(0.01, ge=0.0, lt=0.5)
    sim_rate: float = Field(0.0, ge=0.0, description="Kafka messages per second; 0 = as fast as possible")
    sim_realtime: bool = Field(False, description="Kafka: stamp events with the wall-clock time at send")
    sim_out: Path | None = Field(None, description="Parquet output directory (default: <data_dir>/simulated)")
    sim_transactions_topic: str = TOPIC_TRANSACTIONS
    sim_labels_topic: str = TOPIC_LABELS
    sim_data_docs: bool = Field(False, description="also write GX Data Docs under <data_dir>/data_docs")

    @property
    def out_dir(self) -> Path:
        """Where Parquet history goes."""
        return self.sim_out or self.data_dir / "simulated"


class IngestSettings(FeatureStoreSettings):
    """`fraud ingest` and `fraud ingest-labels`: Kafka to Feast, in micro-batches."""

    ingest_group_id: str = "fraud-ingest"
    ingest_labels_group_id: str = "fraud-ingest-labels"
    ingest_topic: str = "transactions"
    ingest_dlq_topic: str = "transactions.dlq"
    ingest_labels_topic: str = "fraud-labels"
    ingest_batch_max_events: int = Field(5000, ge=1)
    ingest_batch_max_seconds: float = Field(1.0, gt=0)
    ingest_batch_linger_seconds: float = Field(
        0.02, ge=0, description="close a batch once it holds what the broker had, after one wait this long"
    )
    ingest_offline_commit_seconds: float = Field(
        1.0, ge=0, description="commit the offline rows (and then the offsets) of the batches written this often"
    )
    ingest_max_event_skew_hours: float = Field(
        24.0 * 365 * 3, gt=0, description="maximum event age: older events are dead-lettered (and fail the batch check)"
    )
    ingest_max_future_skew_seconds: float = Field(
        300.0, ge=0, description="events (and labels) dated further ahead of the wall clock are dead-lettered"
    )
    ingest_allowed_lateness_seconds: float = Field(
        86400.0,
        ge=0,
        le=86400.0,
        description="events further behind the stream's watermark are dead-lettered (at most the state's 1-day margin)",
    )
    ingest_dlq_max_bytes: int = Field(
        512 * 1024, ge=4096, description="a DLQ record's size bound: larger originals keep a prefix and their SHA-256"
    )
    ingest_dlq_attempts: int = Field(5, ge=1, description="tries to write a dead letter before the stage stops")
    ingest_store_wait_seconds: float = Field(
        60.0,
        ge=0,
        le=500,  # the main loop waits on the writer meanwhile: well under the consumer's max poll interval
        description="how long the writer retries an unreachable online store (Redis) before the ingest stops",
    )
    ingest_session_timeout_seconds: float = Field(
        45.0,
        ge=6,  # the broker's group.min.session.timeout.ms
        le=300,
        description="consumer-group session: after a crash, how long the group waits before a restart takes over",
    )
    ingest_metrics_port: int = Field(0, description="Prometheus port on 127.0.0.1 (0: no metrics server)")
    ingest_metrics_public: bool = Field(
        False, description="serve metrics on all interfaces (containers), not 127.0.0.1"
    )
    ingest_idle_exit_seconds: float = Field(0.0, description="stop after this long without events (0: never)")
    ingest_validate_batches: bool = True
    ingest_data_docs_every: int = Field(
        100, ge=0, description="Data Docs: publish the first batch check, every Nth and every failure (0: none)"
    )


class ScorerSettings(FeatureStoreSettings):
    """`fraud serve`: the real-time scoring API (FRAUD_SCORER_*), its model registry and audit topic."""

    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI (default: SQLite under data_dir)"
    )
    scorer_host: str = "127.0.0.1"
    scorer_port: int = Field(8000, ge=1, le=65535)
    scorer_workers: int = Field(2, ge=1, description="uvicorn worker processes (one per core)")
    scorer_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted X-API-Key values, comma-separated (or a JSON list)"
    )
    scorer_model_name: str = "crypto-fraud-detector"
    scorer_model_alias: str = "champion"
    scorer_poll_seconds: float = Field(30.0, gt=0, description="how often to look for a new champion")
    scorer_max_body_bytes: int = Field(256 * 1024, ge=1024)
    scorer_batch_max: int = Field(100, ge=1, le=10_000, description="transactions per /v1/score/batch request")
    scorer_client_rate_limit: float = Field(
        2000.0, ge=0, description="requests a second per API key and worker process, then 429 (0: no limit)"
    )
    scorer_client_burst_seconds: float = Field(1.0, gt=0, description="a key may send this many seconds' worth at once")
    scorer_store_down: Literal["degraded", "unavailable"] = Field(
        "degraded", description="online store unreachable: score from request features, or answer 503"
    )
    scorer_store_timeout_ms: float = Field(1000.0, gt=0, description="an online read slower than this: store down")
    scorer_store_retry_seconds: float = Field(5.0, ge=0, description="after a store failure, skip it this long")
    scorer_microbatch_max: int = Field(128, ge=1, description="most transactions scored in one model call")
    scorer_microbatch_wait_ms: float = Field(0.0, ge=0, description="extra wait to fill a micro-batch")
    scorer_top_reasons: int = Field(3, ge=1, le=20)
    scorer_explain: Literal["flagged", "all"] = Field(
        "flagged",
        description="reason codes for review/decline (and requests with ?explain=true), or for every decision",
    )
    scorer_lgbm_threads: int = Field(1, ge=1, description="LightGBM threads per worker")
    scorer_audit_enabled: bool = True
    scorer_audit_topic: str = TOPIC_SCORES
    scorer_audit_queue_max: int = Field(100_000, ge=1)
    scorer_access_log: bool = False
    scorer_audit_spool_dir: Path | None = Field(
        None, description="decisions Kafka did not take, until published (default: <data_dir>/scorer/audit-spool)"
    )
    scorer_audit_retry_max_seconds: float = Field(30.0, gt=0, description="longest wait between spool replays")
    scorer_audit_stall_seconds: float = Field(
        5.0, gt=0, description="no acknowledgement this long: the broker is away, spool new decisions"
    )
    scorer_registry_timeout_seconds: float = Field(
        10.0, gt=0, description="MLflow server: timeout of one registry or artifact request (whole seconds)"
    )
    scorer_registry_retries: int = Field(
        0, ge=0, description="MLflow server: client retries of one request (the watcher's backoff retries anyway)"
    )
    scorer_model_retry_min_seconds: float = Field(
        1.0, gt=0, description="after a failed champion poll or load, first retry after this long (then doubling)"
    )
    scorer_model_retry_max_seconds: float = Field(30.0, gt=0, description="longest wait between champion retries")

    @field_validator("scorer_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)  # a JSON list works too
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI; the local default is a SQLite file under data_dir."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"


class TrafficSettings(CommonSettings):
    """`fraud traffic`: simulated payment-flow traffic against the scorer."""

    traffic_url: str = "http://127.0.0.1:8000"
    traffic_api_key: str = "demo-key"
    traffic_rate: float = Field(20.0, ge=0.0, description="requests per second (0: as fast as possible)")
    traffic_users: int = Field(300, ge=10)
    traffic_seed: int = 123
    traffic_duration_s: float = Field(0.0, ge=0.0, description="stop after this long (0: run until stopped)")


class MonitorSettings(CommonSettings):
    """`fraud monitor`: drift of scoring traffic (`fraud-scores`) against the champion's training data."""

    mlflow_tracking_uri: str | None = Field(None, description="MLflow URI (default: SQLite under data_dir)")
    monitor_topic: str = TOPIC_SCORES
    monitor_model_name: str = "crypto-fraud-detector"
    monitor_model_alias: str = "champion"
    monitor_reference_path: Path | None = Field(
        None, description="drift reference JSON or a training-set Parquet/CSV (default: the champion's MLflow run)"
    )
    monitor_window_records: int = Field(5000, ge=1, description="window: at most the last N scored transactions")
    monitor_window_minutes: float = Field(0.0, ge=0.0, description="window: only the last T minutes (0: no limit)")
    monitor_interval_seconds: float = Field(300.0, gt=0, description="time between windows when running")
    monitor_read_timeout_seconds: float = Field(30.0, gt=0)
    monitor_psi_threshold: float = Field(0.2, gt=0, description="feature PSI above this is an alert")
    monitor_score_psi_threshold: float = Field(0.2, gt=0, description="score PSI above this is an alert")
    monitor_rate_abs_tolerance: float = Field(0.01, ge=0, description="decision-rate move allowed (absolute)")
    monitor_rate_rel_tolerance: float = Field(1.0, ge=0, description="decision-rate move allowed (share of val.)")
    monitor_max_missing_rate: float = Field(0.1, ge=0, le=1, description="share of rows with a missing view")
    monitor_max_degraded_rate: float = Field(0.05, ge=0, le=1, description="share scored without online store")
    monitor_min_rows: int = Field(200, ge=1, description="fewer rows: report, but raise no drift alert")
    monitor_metrics_host: str = "127.0.0.1"
    monitor_metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port (0: no metrics server)")
    monitor_data_docs: bool = Field(True, description="validate each window with scoring_traffic into Data Docs")

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI; the local default is a SQLite file under data_dir."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def reports_dir(self) -> Path:
        """Where drift reports go."""
        return self.data_dir / "reports"


class TrainSettings(FeatureStoreSettings):
    """`fraud train`, `fraud models`, `fraud promote`, `fraud rollback`, `fraud backtest` (FRAUD_TRAIN_*)."""

    mlflow_tracking_uri: str | None = Field(None, description="MLflow URI (default: SQLite under data_dir)")
    train_experiment: str = "crypto-fraud-detection"
    train_model_name: str = "crypto-fraud-detector"
    train_gap_days: float = Field(7.0, ge=0, description="label-delay gap before validation and before test")
    train_warmup_days: float = Field(7.0, ge=0, description="first days skipped: feature windows still filling")
    train_test_days: float | None = Field(None, gt=0, description="test period length (default: 20% of the span)")
    train_valid_days: float | None = Field(None, gt=0, description="validation length (default: 20% of the span)")
    train_seed: int = 7
    train_threads: int = Field(1, ge=0, description="LightGBM threads (1: robust on a shared 2-core box; 0: all)")
    train_tune_seconds: float = Field(300.0, gt=0, description="--tune: Optuna time budget")
    train_review_cost: float = Field(5.0, ge=0, description="USD per analyst review")
    train_decline_cost: float = Field(30.0, ge=0, description="USD of friction per declined legitimate transaction")
    train_max_review_rate: float = Field(0.01, gt=0, le=1, description="analyst capacity: share of traffic")
    train_min_fraud_rate: float = Field(0.001, ge=0, description="training_set suite: label rate bounds")
    train_max_fraud_rate: float = Field(0.2, le=1)

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI; the local default is a SQLite file under data_dir."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        """Where the embedded store keeps run artifacts (a tracking server keeps its own)."""
        return self.data_dir / "mlflow" / "artifacts"

    @property
    def training_dir(self) -> Path:
        """Local outputs of the last training run (plots, reports, data-quality results)."""
        return self.data_dir / "training"
