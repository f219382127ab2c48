"""The local broker really carries the project's delivery guarantees (kafka-python against Kafka 4.x)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from fraud.kafka import ensure_topics, make_consumer, make_producer, poll_batch, topic_partitions

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


def test_micro_batch_fills_up_on_a_backlog_and_closes_early_on_live_traffic(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("batches", partitions=3)
    producer = make_producer(kafka_bootstrap)

    def produce(first: int, count: int) -> None:
        for i in range(first, first + count):
            producer.send(topic, key=f"user-{i % 7}".encode(), value=json.dumps({"n": i}).encode())
        producer.flush()

    produce(0, 3000)
    consumer = make_consumer(kafka_bootstrap, f"g-{topic}", topic)
    never = lambda: False  # noqa: E731
    # a backlog: batches fill up to the size bound, nothing is skipped or read twice
    sizes: list[int] = []
    seen: list[int] = []
    while len(seen) < 3000:
        batch = poll_batch(consumer, 1000, 60.0, never, linger_seconds=0.5)
        assert 0 < len(batch) <= 1000
        sizes.append(len(batch))
        seen += [json.loads(r.value)["n"] for r in batch]
    assert sizes[0] == 1000
    assert sorted(seen) == list(range(3000))
    # live traffic: a few new events are returned as soon as they are there, not after the time bound
    produce(3000, 5)
    started = time.monotonic()
    batch = poll_batch(consumer, 1000, 60.0, never, linger_seconds=0.5)
    assert sorted(json.loads(r.value)["n"] for r in batch) == [3000, 3001, 3002, 3003, 3004]
    assert time.monotonic() - started < 30.0  # far below the 60 s bound it would otherwise wait for
    # without a linger the batch waits for its time bound (here short) and still gets everything
    produce(3005, 5)
    batch = poll_batch(consumer, 1000, 2.0, never)
    assert sorted(json.loads(r.value)["n"] for r in batch) == [3005, 3006, 3007, 3008, 3009]
    consumer.close()
    producer.close()
