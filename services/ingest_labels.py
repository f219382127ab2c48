"""`fraud ingest-labels`: fraud verdicts from Kafka into the label store, as they become known.

Each label keeps its `label_time`, so training joins only labels known at its cutoff and the
label-derived risk features count a fraud only from the moment it was confirmed. Bad messages go to
the dead-letter topic like bad transactions do. Offsets are committed after the label part is written.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

import pandas as pd
from kafka import KafkaConsumer, KafkaProducer

from fraud import history
from fraud.contracts import FraudLabel
from fraud.dlq import DeadLetterError, dead_letter, error_text, send_dead_letters
from fraud.event_time import EventTimePolicy
from fraud.kafka import (
    commit_offsets,
    ensure_topics,
    make_consumer,
    make_producer,
    offsets_after,
    poll_batch,
    wait_for_broker,
)
from fraud.settings import IngestSettings

log = logging.getLogger(__name__)


class LabelIngestor:
    """Consumes `fraud-labels`, writes validated labels to the label history."""

    def __init__(self, settings: IngestSettings, consumer: KafkaConsumer, producer: KafkaProducer) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.stopping = False
        self.written = 0
        self.dead_lettered = 0
        # labels are not ordered by label_time across a topic: only the clock bounds apply to them
        self.policy = EventTimePolicy.of_seconds(
            settings.ingest_max_future_skew_seconds,
            settings.ingest_allowed_lateness_seconds,
            settings.ingest_max_event_skew_hours * 3600,
        )

    def poll_batch(self) -> list[Any]:
        s = self.settings
        return poll_batch(self.consumer, s.ingest_batch_max_events, s.ingest_batch_max_seconds, lambda: self.stopping)

    def commit(self, records: list[Any]) -> None:
        commit_offsets(self.consumer, offsets_after(records), self.settings.kafka_wait_seconds)

    def process(self, records: list[Any]) -> int:
        good: list[dict[str, Any]] = []
        letters: list[tuple[bytes | None, bytes]] = []
        now_us = time.time_ns() // 1000
        s = self.settings
        for rec in records:
            try:
                if rec.value is None:
                    raise ValueError("empty message (tombstone)")
                label = FraudLabel.model_validate_json(rec.value)
                t_us = int(label.label_time.timestamp() * 1_000_000)
                refused = self.policy.violation(t_us, now_us, None, field="label_time")
                if refused is not None:
                    raise ValueError(refused.reason)
                good.append(
                    label.model_dump(exclude={"schema_version"})
                    | {"fraud_type": label.fraud_type and label.fraud_type.value}
                )
            except Exception as exc:  # whatever one message does, it is that message's fault
                letter = dead_letter(
                    rec.value, error_text(exc), rec.topic, rec.partition, rec.offset, s.ingest_dlq_max_bytes
                )
                letters.append((rec.key, letter))
        if letters:  # raises DeadLetterError after its retries: then the batch's offsets are not committed
            send_dead_letters(self.producer, s.ingest_dlq_topic, letters, attempts=s.ingest_dlq_attempts)
        self.dead_lettered += len(letters)
        if good:
            history.append(s.data_dir, "labels", pd.DataFrame(good), tag="stream")
        self.written += len(good)
        return len(good)

    def run(self, max_batches: int | None = None) -> None:
        batches = 0
        idle_since = time.monotonic()
        while not self.stopping:
            records = self.poll_batch()
            if not records:
                idle = self.settings.ingest_idle_exit_seconds
                if not self.consumer.assignment():  # still joining the group: not idle yet
                    idle_since = time.monotonic()
                elif idle and time.monotonic() - idle_since > idle:
                    break
                continue
            idle_since = time.monotonic()
            n = self.process(records)
            self.commit(records)
            log.info("labels: %d written, %d consumed", n, len(records))
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stopping = True

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush()
        self.producer.close()


def build(settings: IngestSettings) -> LabelIngestor:
    """The composition root of the label consumer."""
    wait_for_broker(settings.kafka_bootstrap_servers, settings.kafka_wait_seconds)
    ensure_topics(settings.kafka_bootstrap_servers, [settings.ingest_labels_topic, settings.ingest_dlq_topic])
    consumer = make_consumer(
        settings.kafka_bootstrap_servers, settings.ingest_labels_group_id, settings.ingest_labels_topic
    )
    return LabelIngestor(settings, consumer, make_producer(settings.kafka_bootstrap_servers))


def main(settings: IngestSettings) -> None:
    service = build(settings)
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    try:
        service.run()
    except DeadLetterError as exc:
        log.critical("label ingest stopped: %s", exc)
        raise SystemExit(2) from exc
    finally:
        service.close()
