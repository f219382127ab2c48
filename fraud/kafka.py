"""Thin Kafka edge: wait for the broker, create topics, build producers and consumers (kafka-python)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fraud.contracts import ALL_TOPICS

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The Kafka broker did not answer within the allowed time."""


def wait_for_broker(bootstrap_servers: str, timeout_s: float = 60.0, interval_s: float = 1.0) -> None:
    """Block until the broker answers a metadata request, or raise after `timeout_s` with a clear message."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    last_error: Exception | None = None
    while True:
        attempt += 1
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
            try:
                admin.list_topics()
            finally:
                admin.close()
            if attempt > 1:
                log.info("kafka broker %s answered after %d attempts", bootstrap_servers, attempt)
            return
        except (KafkaError, OSError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"Kafka broker at {bootstrap_servers} did not answer within {timeout_s:.0f}s "
                f"({attempt} attempts; last error: {last_error!r}). Is it running? "
                "Locally: infra/kafka/broker.sh start"
            )
        log.warning("waiting for kafka broker %s (attempt %d): %s", bootstrap_servers, attempt, last_error)
        time.sleep(interval_s)


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str] = ALL_TOPICS,
    partitions: int = 3,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to call twice."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        created: list[str] = []
        for name in missing:
            try:
                admin.create_topics(
                    [NewTopic(name=name, num_partitions=partitions, replication_factor=replication_factor)]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def topic_partitions(bootstrap_servers: str, topic: str) -> int:
    """Number of partitions of `topic` (0 when it does not exist)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        parts = consumer.partitions_for_topic(topic)
        return len(parts) if parts else 0
    finally:
        consumer.close()


def json_bytes(value: Any) -> bytes:
    """Serialize to compact JSON bytes (datetimes as ISO 8601)."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def make_producer(bootstrap_servers: str, **overrides: Any) -> KafkaProducer:
    """An idempotent producer: acks=all, batching and lz4 compression for throughput."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "compression_type": "lz4",
        "max_in_flight_requests_per_connection": 5,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap_servers: str, group_id: str, *topics: str, **overrides: Any) -> KafkaConsumer:
    """A consumer-group member with auto-commit off: the caller commits after its writes are durable."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "isolation_level": "read_committed",
    }
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def poll_batch(
    consumer: KafkaConsumer,
    max_events: int,
    max_seconds: float,
    stopping: Callable[[], bool],
    linger_seconds: float | None = None,
) -> list[Any]:
    """A micro-batch: records up to `max_events` or `max_seconds`, whichever comes first.

    With `linger_seconds`, the batch closes early, as soon as it holds what the broker had: it keeps
    what arrives for `linger_seconds` after the first record (at least one fetch round trip: the
    first records may come from a fetch answered long ago), then takes only what is already fetched,
    and the first empty poll closes it. Live traffic is then processed as soon as it is there, while
    a backlog still fills batches up to `max_events`.
    """
    records: list[Any] = []
    deadline = time.monotonic() + max_seconds
    linger_until = float("inf")
    while len(records) < max_events and not stopping():
        now = time.monotonic()
        if now >= deadline:
            break
        wait = min(deadline, linger_until) - now
        polled = consumer.poll(timeout_ms=max(int(wait * 1000), 0), max_records=max_events - len(records))
        if not polled and now >= linger_until:
            break
        for batch in polled.values():
            records.extend(batch)
        if records and linger_seconds is not None and linger_until == float("inf"):
            linger_until = time.monotonic() + linger_seconds
    return records


def offsets_after(records: list[Any]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets that mark `records` as processed: per partition, the last one plus one."""
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    for rec in records:
        tp = TopicPartition(rec.topic, rec.partition)
        if tp not in offsets or offsets[tp].offset < rec.offset + 1:
            offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
    return offsets


def commit_offsets(
    consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata], wait_seconds: float
) -> None:
    """Commit `offsets`, retrying while the broker is away (up to `wait_seconds`)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            consumer.commit(offsets)
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("offset commit failed (%s); retrying", exc)
            time.sleep(1.0)
