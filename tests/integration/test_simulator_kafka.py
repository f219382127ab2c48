"""`fraud simulate --to kafka` into throwaway topics, consumed back with kafka-python."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from fraud.contracts import FraudLabel, Transaction
from fraud.settings import SimulatorSettings
from pipelines.simulate import run

pytestmark = pytest.mark.integration


def consume_all(servers: str, topic: str, expected: int) -> list[tuple[int, bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=servers, consumer_timeout_ms=5000, auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        out = []
        for message in consumer:
            out.append((message.partition, message.key, message.value))
            if len(out) >= expected:
                break
        return out
    finally:
        consumer.close()


def test_simulate_to_kafka_round_trip(kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path) -> None:
    tx_topic, label_topic = topic_factory("sim-tx"), topic_factory("sim-labels")
    settings = SimulatorSettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        sim_users=150,
        sim_days=7,
        sim_seed=5,
        sim_transactions_topic=tx_topic,
        sim_labels_topic=label_topic,
    )
    report = run(settings, "kafka")
    assert report.transactions > 300
    transactions = consume_all(kafka_bootstrap, tx_topic, report.transactions)
    labels = consume_all(kafka_bootstrap, label_topic, report.transactions)
    assert len(transactions) == report.transactions
    assert len(labels) == report.transactions

    parsed = [(p, k, Transaction.model_validate_json(v)) for p, k, v in transactions]
    assert all(k == t.user_id.encode() for _, k, t in parsed)
    assert len({t.transaction_id for _, _, t in parsed}) == report.transactions
    # Per-user order holds: one user's events live in one partition, in event-time order.
    last: dict[str, tuple[int, object]] = {}
    for partition, _, txn in parsed:
        if txn.user_id in last:
            prev_partition, prev_time = last[txn.user_id]
            assert prev_partition == partition
            assert prev_time <= txn.event_time  # type: ignore[operator]
        last[txn.user_id] = (partition, txn.event_time)

    verdicts = [FraudLabel.model_validate_json(v) for _, _, v in labels]
    assert all(k == json.loads(v)["transaction_id"].encode() for _, k, v in labels)
    event_time = {t.transaction_id: t.event_time for _, _, t in parsed}
    assert all(v.label_time >= event_time[v.transaction_id] for v in verdicts)
    assert sum(v.is_fraud for v in verdicts) == report.fraud
