"""The audit spool and publisher without a broker: append, claim, replay, partial failure, torn lines."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future
from prometheus_client import CollectorRegistry

from fraud.contracts import Transaction
from services.scorer import core
from services.scorer.audit import (
    AuditPublisher,
    Record,
    Spool,
    decode_line,
    encode_line,
    unpublished_gauge,
)

FEATURES = ["amount_usd_log", "new_device"]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def scored(i: int, score: float = 0.1) -> core.Scored:
    """A decision as the scorer makes it (only what the audit record reads)."""
    txn = Transaction.model_validate(
        {
            "transaction_id": f"tx-{i:05d}",
            "event_time": T0,
            "user_id": f"u{i % 7}",
            "type": "send",
            "asset": "BTC",
            "amount": 0.5,
            "amount_usd": 30_000.0 + i,
            "payment_method": "crypto",
            "destination_address": "bc1qdest",
            "device_id": "dev-A",
            "ip_address": "192.0.2.1",
            "country": "DE",
            "channel": "web",
        }
    )
    return core.Scored(
        transaction=txn,
        score=score,
        decision="decline" if score > 0.9 else "approve",
        raw_score=-2.0,
        explained=False,
        base_value=None,
        reasons=[],
        other_contribution=None,
        degraded=False,
        missing=[],
        freshness={},
        model_version="7",
        features=np.array([float(i), float("nan")]),
    )


def records(n: int, start: int = 0) -> list[Record]:
    return [
        (f"tx-{i:05d}".encode(), json.dumps({"transaction_id": f"tx-{i:05d}", "i": i}).encode())
        for i in range(start, start + n)
    ]


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def spool_lines(folder: Path) -> list[Record]:
    out: list[Record] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            rec = decode_line(line)
            assert rec is not None
            out.append(rec)
    return out


class FakeProducer:
    """A kafka-python producer stand-in: `up` acknowledges at once; down keeps records pending until a flush."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.pending: list[tuple[Record, Future]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        if len(value) > 10_000:
            raise MessageSizeTooLargeError("too large")
        future = Future()
        with self.broker.lock:
            if self.broker.accepts():
                self.broker.log.append((key, value))
                future.success(None)
            else:
                self.pending.append(((key, value), future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        with self.broker.lock:
            pending, self.pending = self.pending, []
            for rec, future in pending:
                if self.broker.accepts():
                    self.broker.log.append(rec)
                    future.success(None)
                elif self.broker.up:
                    future.failure(KafkaTimeoutError("not acknowledged"))  # the broker took some, then failed
                else:
                    self.pending.append((rec, future))
            if self.pending:
                raise KafkaTimeoutError("flush timed out")

    def close(self, timeout: float | None = None) -> None:
        with self.broker.lock:
            for _, future in self.pending:
                future.failure(KafkaTimeoutError("closed"))
            self.pending = []


class FakeBroker:
    def __init__(self) -> None:
        self.up = False
        self.budget: int | None = None  # accept this many more records, then fail each one
        self.log: list[Record] = []
        self.lock = threading.RLock()

    def accepts(self) -> bool:
        if not self.up:
            return False
        if self.budget is None:
            return True
        if self.budget <= 0:
            return False
        self.budget -= 1
        return True

    def factory(self) -> FakeProducer:
        if not self.up:
            raise KafkaTimeoutError("Unable to bootstrap")
        return FakeProducer(self)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def publishers(tmp_path: Path, broker: FakeBroker) -> Iterator[Callable[..., AuditPublisher]]:
    made: list[AuditPublisher] = []

    def make(**kw: Any) -> AuditPublisher:
        options: dict[str, Any] = {
            "interval_s": 0.01,
            "retry_max_s": 0.05,
            "stall_s": 0.2,
            "probe_timeout_s": 0.1,
            "flush_timeout_s": 0.1,
            "producer_factory": broker.factory,
        }
        options.update(kw)
        pub = AuditPublisher("fake:9092", "fraud-scores", tmp_path / "spool", **options)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=2.0)


# -- the spool file format -------------------------------------------------------------------


def test_a_line_round_trips_any_bytes_exactly() -> None:
    for key, value in [(b"tx-1", b'{"a":1.1,"b":NaN}'), ("tx-ü".encode(), b"\xff\xfe not utf-8 \n\x00")]:
        line = encode_line(key, value)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode_line(line) == (key, value)
    assert decode_line(b'{"key":"tx-1","val') is None
    assert decode_line(b'{"key":1,"value":"x"}\n') is None
    assert decode_line(b"[]\n") is None


def test_append_then_read_in_order_and_durable_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.open()
    spool.append(records(3))
    spool.append(records(2, start=3))
    spool.sync()
    assert spool.pending == 5
    (file,) = list((tmp_path / "s").glob("*.jsonl"))
    assert file.name.startswith(f"{os.getpid()}-")  # one file per process: pid and a random id
    assert spool_lines(tmp_path / "s") == records(5)
    spool.seal()
    (segment,) = spool.sealed()
    assert list(spool.records(segment)) == records(5)
    spool.append(records(1, start=5))  # a sealed file takes no more appends: a new one starts
    assert len(list((tmp_path / "s").glob("*.jsonl"))) == 2
    spool.done(segment)
    assert spool.pending == 1 and spool_lines(tmp_path / "s") == records(1, start=5)
    spool.close()


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    good = b"".join(encode_line(k, v) for k, v in records(3))
    (folder / "12345-deadbeef0000-000001.jsonl").write_bytes(good + b"not json\n" + encode_line(*records(1, 3)[0])[:-9])
    spool = Spool(folder)
    assert spool.claim_orphans() == 4  # newline-terminated lines, the garbage one included
    (segment,) = spool.sealed()
    with caplog.at_level(logging.WARNING, logger="services.scorer.audit"):
        assert list(spool.records(segment)) == records(3)
    assert "torn last line" in caplog.text and "not a record" in caplog.text
    spool.close()


# -- claiming the files of other processes ---------------------------------------------------


def test_a_live_owners_files_are_never_claimed_a_dead_ones_are_claimed_once(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    live = Spool(folder)
    live.open()
    live.append(records(4))
    live.sync()
    other, third = Spool(folder), Spool(folder)
    assert other.claim_orphans() == 0  # its owner holds the lock: a live worker
    live.close()  # the owner is gone (a crash releases the lock the same way)
    (orphan,) = list(folder.glob("*.jsonl"))
    assert other.claim_orphans() == 4
    assert third.claim_orphans() == 0  # claimed by exactly one
    assert not orphan.exists()
    (claimed,) = list(folder.glob("*.jsonl"))
    assert claimed.name.startswith(other.owner)  # renamed to its new owner, still locked by it
    assert other.pending == 4 and list(other.records(other.sealed()[0])) == records(4)
    other.close()


def test_concurrent_claimers_split_the_files_without_sharing_one(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    for n in range(20):
        dead = Spool(folder)
        dead.open()
        dead.append(records(5, start=5 * n))
        dead.close()
    claimers = [Spool(folder) for _ in range(4)]
    got = [0] * 4
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        barrier.wait()
        got[i] = claimers[i].claim_orphans()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 100
    seen = [r for c in claimers for s in c.sealed() for r in c.records(s)]
    assert sorted(seen) == sorted(records(100))
    for c in claimers:
        c.close()


def test_a_half_made_file_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    stale = folder / ".999-abc-000001.jsonl.new"
    stale.write_bytes(b"")
    spool = Spool(folder)
    assert spool.claim_orphans() == 0
    assert not stale.exists()


# -- the publisher: broker down, back, restarted ---------------------------------------------


def test_decisions_spool_while_the_broker_is_away_and_publish_when_it_returns(
    broker: FakeBroker, publishers: Callable[..., AuditPublisher], tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    gauge = unpublished_gauge(registry)
    pub = publishers(on_pending=gauge.set)
    pub.start()
    results = [scored(i) for i in range(30)]
    pub.publish(results[:10], FEATURES)
    pub.publish(results[10:], FEATURES)
    wait_for(lambda: pub.spool.pending == 30)
    wait_for(lambda: registry.get_sample_value("fraud_scorer_audit_unpublished") == 30)
    assert spool_lines(tmp_path / "spool")[0][0] == b"tx-00000"  # keyed by transaction id
    broker.up = True
    wait_for(lambda: pub.unpublished == 0)
    wait_for(lambda: registry.get_sample_value("fraud_scorer_audit_unpublished") == 0)
    assert [k for k, _ in broker.log] == [f"tx-{i:05d}".encode() for i in range(30)]
    values = [json.loads(v) for _, v in broker.log]
    assert values[3]["transaction_id"] == "tx-00003" and values[3]["features"] == {
        "amount_usd_log": 3.0,
        "new_device": None,
    }
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # deleted once all acknowledged
    pub.publish([scored(99)], FEATURES)  # live again: straight to the broker
    wait_for(lambda: len(broker.log) == 31 and pub.unpublished == 0)
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_a_broker_that_stops_acknowledging_sends_new_decisions_to_the_spool(
    broker: FakeBroker, publishers: Callable[..., AuditPublisher]
) -> None:
    broker.up = True
    pub = publishers()
    pub.start()
    pub.publish_records(records(5))
    wait_for(lambda: len(broker.log) == 5 and pub.unpublished == 0)
    broker.up = False  # the producer keeps records in flight: no error, no acknowledgement
    pub.publish_records(records(5, start=5))
    wait_for(lambda: pub.unpublished == 5 and not pub._up)
    pub.publish_records(records(5, start=10))
    wait_for(lambda: pub.spool.pending == 5)  # the stall was noticed: new decisions spooled
    broker.up = True
    wait_for(lambda: pub.unpublished == 0)
    assert sorted(set(broker.log)) == sorted(records(15))


def test_partial_replay_keeps_exactly_the_unacknowledged_records(
    broker: FakeBroker, publishers: Callable[..., AuditPublisher], tmp_path: Path
) -> None:
    pub = publishers(replay_chunk=3)
    pub.start()
    pub.publish_records(records(10))
    wait_for(lambda: pub.spool.pending == 10)
    broker.budget = 4  # the probe and one chunk of 3 go through, then every record fails
    broker.up = True
    wait_for(lambda: pub.spool.pending == 6 and len(broker.log) == 4)
    time.sleep(0.2)  # retries keep failing: nothing acknowledged is kept, nothing unacknowledged is lost
    assert pub.spool.pending == 6
    assert broker.log == records(4)
    assert spool_lines(tmp_path / "spool") == records(6, start=4)
    broker.budget = None
    wait_for(lambda: pub.unpublished == 0)
    assert broker.log == records(10)  # each once, in order
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_a_restarted_scorer_publishes_what_the_stopped_one_spooled(
    broker: FakeBroker, publishers: Callable[..., AuditPublisher], tmp_path: Path
) -> None:
    first = publishers()
    first.start()
    first.publish_records(records(8))
    wait_for(lambda: first.spool.pending == 8)
    first.close()
    assert first.unpublished == 0  # handed over to the file, released
    assert spool_lines(tmp_path / "spool") == records(8)
    broker.up = True
    second = publishers()
    second.start()
    second.publish_records(records(2, start=8))
    wait_for(lambda: second.unpublished == 0 and len(broker.log) == 10)
    assert sorted(broker.log) == records(10)
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_stop_with_records_in_flight_spools_them(broker: FakeBroker, publishers: Callable[..., AuditPublisher]) -> None:
    broker.up = True
    pub = publishers(stall_s=60.0)
    pub.start()
    wait_for(lambda: pub._up)
    broker.up = False
    pub.publish_records(records(6))
    wait_for(lambda: len(pub._inflight) == 6)
    pub.close(timeout_s=0.2)
    folder = pub.spool.folder
    assert sorted(spool_lines(folder)) == records(6)


def test_a_full_queue_spools_from_the_request_path(publishers: Callable[..., AuditPublisher]) -> None:
    pub = publishers(max_queue=1)
    pub.spool.open()  # not started: nothing drains the queue
    pub.publish_records(records(2))
    pub.publish_records(records(3, start=2))  # the queue is full: straight to the spool
    assert pub.unpublished == 5 and pub.spool.pending == 3
    pub.spool.sync()
    assert spool_lines(pub.spool.folder) == records(3, start=2)


def test_a_record_too_large_for_the_producer_is_set_aside_not_retried_forever(
    broker: FakeBroker, publishers: Callable[..., AuditPublisher]
) -> None:
    pub = publishers()
    pub.start()
    big = (b"tx-big", b"x" * 20_000)
    pub.publish_records([*records(2), big, *records(2, start=2)])
    wait_for(lambda: pub.spool.pending == 5)
    broker.up = True
    wait_for(lambda: pub.unpublished == 0)
    assert sorted(broker.log) == records(4)
    (rejected,) = list((pub.spool.folder / "rejected").glob("*.jsonl"))
    assert spool_lines(rejected.parent) == [big]
