"""Hostile input on the real broker: no message may stop `fraud ingest` or `fraud ingest-labels`.

Every message ends in the features or in the DLQ with a reason; a DLQ record stays under the
producer's request size whatever the message's size (a prefix, its length and SHA-256 when the whole
does not fit); events dated outside the event-time policy are dead-lettered, not quarantined with
their whole batch.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from fraud import history
from fraud.contracts import FraudLabel, transaction_messages
from fraud.kafka import make_producer
from fraud.settings import IngestSettings
from services import ingest_labels
from services.ingest import build
from tests.factories import history as make_history
from tests.online_check import assert_serves_the_history

pytestmark = pytest.mark.integration
BIG = 900 * 1024  # under the broker's 1 MiB message limit; its DLQ record (text + base64) is not


def _payloads(events: pd.DataFrame) -> list[bytes]:
    return [value for _, value in transaction_messages(events)]


def _hostile(template: bytes) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(key, value, headers) of every kind of bad message the issue names."""
    e = json.loads(template)
    amount = f'"amount":{json.dumps(e["amount"])}'
    now = datetime.now(UTC)
    return [
        (b"big", json.dumps(e | {"transaction_id": "big", "pad": "x" * BIG}).encode(), []),
        (b"bin", bytes(range(256)) * (BIG // 256), []),  # big and not UTF-8: its text form is larger still
        (b"null", None, []),
        (None, b"no key at all", []),
        (b"hdr", b"{}", [("\u00e9weird", b"\xff\x00"), ("", b"")]),
        (b"utf8", b'{"transaction_id": "\xff\xfe"}', []),
        (b"deep", b"[" * 100_000 + b"]" * 100_000, []),
        (b"nan", template.replace(amount.encode(), b'"amount":NaN'), []),
        (b"inf", template.replace(amount.encode(), b'"amount":Infinity'), []),
        (b"huge", template.replace(amount.encode(), b'"amount":1e400'), []),
        (b"usd", json.dumps(e | {"transaction_id": "usd", "amount_usd": 1e308}).encode(), []),
        (b"bool", json.dumps(e | {"transaction_id": "bool", "amount": True}).encode(), []),
        (b"fut", json.dumps(e | {"transaction_id": "fut-50y", "event_time": "2076-12-07T00:00:00Z"}).encode(), []),
        (
            b"fut",
            json.dumps(e | {"transaction_id": "fut-2d", "event_time": (now + timedelta(days=2)).isoformat()}).encode(),
            [],
        ),
    ]


def _settings(tmp: Path, bootstrap: str, topic: str, **kw: object) -> IngestSettings:
    """One stage's settings on throwaway topics: `topic` in, `<topic>.dlq` out, its own group."""
    values: dict[str, object] = {
        "data_dir": tmp,
        "kafka_bootstrap_servers": bootstrap,
        "ingest_topic": topic,
        "ingest_labels_topic": topic,
        "ingest_dlq_topic": f"{topic}.dlq",
        "ingest_group_id": f"g-{topic}",
        "ingest_labels_group_id": f"g-{topic}",
        "ingest_batch_max_seconds": 0.5,
        "ingest_idle_exit_seconds": 4.0,
    }
    return IngestSettings(**(values | kw))  # type: ignore[arg-type]


def _letters(bootstrap: str, topic: str, expected: int) -> list[dict[str, object]]:
    from fraud.kafka import make_consumer

    consumer = make_consumer(bootstrap, f"dlq-reader-{topic}", topic)
    letters: list[dict[str, object]] = []
    for _ in range(60):
        for batch in consumer.poll(timeout_ms=500).values():
            letters.extend(json.loads(r.value) for r in batch)
        if len(letters) >= expected:
            break
    consumer.close()
    return letters


def test_no_message_stops_ingest_and_each_bad_one_is_dead_lettered_with_a_reason(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=600, users=20, seed=5)
    good = _payloads(events)
    bad = _hostile(good[0])
    topic = topic_factory("hostile", partitions=1)
    producer = make_producer(kafka_bootstrap, max_request_size=2 * 1024 * 1024)
    for payload in good[:300]:
        producer.send(topic, key=b"u", value=payload)
    for key, value, headers in bad:  # in the middle of the stream: what follows must still be processed
        producer.send(topic, key=key, value=value, headers=headers)
    for payload in good[300:]:
        producer.send(topic, key=b"u", value=payload)
    producer.flush()
    producer.close()

    settings = _settings(tmp_path, kafka_bootstrap, topic, ingest_validate_batches=True)
    ingestor = build(settings)
    ingestor.run()
    ingestor.close()

    totals = ingestor.totals
    assert totals["quarantined"] == 0  # the future-dated events no longer take their batch with them
    assert totals["processed"] == 600 and totals["dlq"] == len(bad)
    stored = history.read(tmp_path, "transactions")
    assert len(stored) == 600 and set(stored.transaction_id) == set(events.transaction_id)

    letters = _letters(kafka_bootstrap, f"{topic}.dlq", len(bad))
    assert len(letters) == len(bad)
    by_offset = {int(str(x["source_offset"])): x for x in letters}
    assert sorted(by_offset) == list(range(300, 300 + len(bad)))
    for offset, (_, sent, _) in zip(range(300, 300 + len(bad)), bad, strict=True):
        letter = by_offset[offset]
        assert letter["error"], f"offset {offset} has no reason"
        raw = sent or b""
        assert letter["original_length"] == len(raw)
        assert letter["original_sha256"] == hashlib.sha256(raw).hexdigest()
        kept = base64.b64decode(str(letter["original_b64"]))
        if letter["truncated"]:
            assert len(raw) > 100_000 and raw.startswith(kept) and len(kept) < len(raw)
        else:
            assert kept == raw
    assert by_offset[300]["truncated"] and by_offset[301]["truncated"]  # the two big ones
    reasons = {str(x["error"]) for x in letters}
    assert any("ahead of the clock" in r for r in reasons), reasons
    # the events dated ahead moved no one's state: the online store serves what training computes
    # over the good events alone
    assert len(history.read(settings.data_dir, "transactions")) == 600
    assert_serves_the_history(settings, events)


def test_label_ingest_survives_hostile_labels(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("hostile-labels", partitions=1)
    now = datetime.now(UTC)
    good = [
        FraudLabel(transaction_id=f"t{i}", is_fraud=False, label_time=now - timedelta(hours=1))
        .model_dump_json()
        .encode()
        for i in range(5)
    ]
    bad: list[bytes | None] = [
        json.dumps(
            {"transaction_id": "big", "is_fraud": False, "label_time": now.isoformat(), "p": "x" * BIG}
        ).encode(),
        None,
        b"\xff\xfe\xfd",
        b"[" * 100_000,
        json.dumps({"transaction_id": "b", "is_fraud": 1, "label_time": now.isoformat()}).encode(),
    ]
    producer = make_producer(kafka_bootstrap, max_request_size=2 * 1024 * 1024)
    for value in good[:2] + bad + good[2:]:
        producer.send(topic, key=b"k", value=value)
    producer.flush()
    producer.close()
    settings = _settings(tmp_path, kafka_bootstrap, topic)
    service = ingest_labels.build(settings)
    service.run()
    service.close()
    assert service.written == 5 and service.dead_lettered == len(bad)
    assert len(history.read(tmp_path, "labels")) == 5
    letters = _letters(kafka_bootstrap, f"{topic}.dlq", len(bad))
    assert len(letters) == len(bad) and all(x["error"] for x in letters)


def test_a_dlq_that_refuses_stops_ingest_without_committing_past_the_message(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    from fraud.dlq import DeadLetterError

    events = make_history(n=100, users=5, seed=9)
    good = _payloads(events)
    topic = topic_factory("dlq-refuses", partitions=1)
    dlq = f"{topic}.dlq"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    # a DLQ topic that refuses every dead letter (each is larger than this)
    admin.create_topics([NewTopic(dlq, 1, 1, topic_configs={"max.message.bytes": "200"})])
    producer = make_producer(kafka_bootstrap)
    for value in [*good[:50], b"not json", *good[50:]]:
        producer.send(topic, key=b"u", value=value)
    producer.flush()
    producer.close()
    # the bad message (offset 50) is in the third batch
    settings = _settings(tmp_path, kafka_bootstrap, topic, ingest_batch_max_events=20, ingest_dlq_attempts=2)
    ingestor = build(settings)
    with pytest.raises(DeadLetterError, match="without committing past them"):
        ingestor.run()
    ingestor.close()
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic}", enable_auto_commit=False)
    committed = reader.committed(TopicPartition(topic, 0))
    reader.close()
    assert committed is None or committed <= 50  # never past the message that could not be dead-lettered

    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "1048588"})])
    admin.close()
    again = build(settings)  # the restart reads the message again, and this time dead-letters it
    again.run()
    again.close()
    stored = history.read(tmp_path, "transactions")
    assert len(stored) == 100 and stored.transaction_id.is_unique
    letters = _letters(kafka_bootstrap, dlq, 1)
    assert [x["source_offset"] for x in letters] == [50]
