"""The local broker really carries the project's delivery guarantees (kafka-python against Kafka 4.x)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from fraud.kafka import ensure_topics, make_consumer, make_producer, topic_partitions

pytestmark = pytest.mark.integration


def _drain(consumer: KafkaConsumer, want: int, timeout_s: float = 30.0) -> list[Any]:
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_topic_created_with_several_partitions(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("parts", partitions=4)
    assert topic_partitions(kafka_bootstrap, topic) == 4
    # creating it again is harmless and creates nothing
    assert ensure_topics(kafka_bootstrap, [topic], partitions=4) == []


def test_idempotent_producer_then_group_consumer_resumes_from_committed_offset(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("resume", partitions=3)
    producer = make_producer(kafka_bootstrap)
    assert producer.config["acks"] == -1  # acks=all
    assert producer.config["enable_idempotence"] is True
    for i in range(300):
        producer.send(topic, key=f"user-{i % 17}".encode(), value=json.dumps({"n": i}).encode())
    producer.flush()
    producer.close()

    group = f"g-{topic}"
    first = make_consumer(kafka_bootstrap, group, topic)
    assert first.config["enable_auto_commit"] is False
    got = _drain(first, 300)
    assert len(got) == 300
    assert {r.partition for r in got} == {0, 1, 2}
    # process only the first 100 per partition order, commit exactly what was processed, then "crash"
    processed: dict[TopicPartition, int] = {}
    seen_first: set[int] = set()
    for r in got[:120]:
        tp = TopicPartition(r.topic, r.partition)
        processed[tp] = r.offset + 1
        seen_first.add(json.loads(r.value)["n"])
    first.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in processed.items()})
    first.close()

    # a restarted member of the same group resumes after the committed offsets: no loss, no repeat
    second = make_consumer(kafka_bootstrap, group, topic)
    rest = _drain(second, 300 - len(seen_first), timeout_s=30)
    second.close()
    seen_rest = {json.loads(r.value)["n"] for r in rest}
    assert not seen_first & seen_rest
    assert seen_first | seen_rest == set(range(300))


def test_keyed_messages_keep_per_key_order(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("order", partitions=3)
    producer = make_producer(kafka_bootstrap)
    for i in range(200):
        producer.send(topic, key=f"k{i % 5}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()
    consumer = make_consumer(kafka_bootstrap, f"g-{topic}", topic)
    records = _drain(consumer, 200)
    consumer.close()
    by_key: dict[bytes, list[int]] = {}
    for r in records:
        by_key.setdefault(r.key, []).append(int(r.value))
    assert len(by_key) == 5
    for values in by_key.values():
        assert values == sorted(values)
