"""Shared fixtures: the real local Kafka broker and throwaway topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from fraud.kafka import ensure_topics, wait_for_broker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The local broker started by `make test` (infra/kafka/broker.sh); fails clearly if it is down."""
    servers = os.environ.get("FRAUD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    wait_for_broker(servers, timeout_s=30)
    return servers


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[object]:
    """Create uniquely named topics for one test; deleted afterwards."""
    from kafka import KafkaAdminClient

    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 3) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        ensure_topics(kafka_bootstrap, [name], partitions=partitions)
        created.append(name)
        return name

    yield make
    if created:
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics(created)
        except Exception:  # best effort: a leftover test topic is harmless
            pass
        finally:
            admin.close()
