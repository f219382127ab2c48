"""The audit trail: every decision to `fraud-scores`, off the request path.

Each micro-batch serializes its decisions (~0.15 ms each) and hands them to a bounded in-memory
queue (never blocks); one thread wakes every `interval_s`, drains the queue and gives the records to
the Kafka producer, which batches and sends in the background. Waking on a timer rather than per
record keeps the publisher from contending with the request path for the interpreter lock (a
wake-up per request measurably raised the scorer's latency under load).
The broker being slow or away never slows a response: the queue absorbs it, and if it overflows the
records dropped are counted and logged, never silently lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fraud.kafka import json_bytes, make_producer
from services.scorer.core import Scored, audit_record

log = logging.getLogger(__name__)

_STOP = object()


class AuditPublisher:
    """Publishes decisions to a Kafka topic from a background thread."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        interval_s: float = 0.05,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._on_drop = on_drop
        self._on_error = on_error
        self._interval_s = interval_s
        self._producer: Any = None
        self._thread = threading.Thread(target=self._run, name="audit-publisher", daemon=True)
        self.published = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the publishing thread."""
        self._thread.start()

    def publish(self, results: Sequence[Scored], feature_names: Sequence[str]) -> None:
        """Serialize a batch of decisions and queue them; never blocks (a full queue drops and counts them)."""
        scored_at = datetime.now(UTC)
        records = [
            (s.transaction.transaction_id.encode(), json_bytes(audit_record(s, feature_names, scored_at)))
            for s in results
        ]
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            self.dropped += len(results)
            if self._on_drop is not None:
                self._on_drop(len(results))
            log.error("audit queue full: dropped %d decisions (broker down?)", len(results))

    def _connect(self) -> Any:
        delay = 1.0
        while True:
            try:
                return make_producer(self._bootstrap, linger_ms=100, max_block_ms=10_000)
            except Exception as exc:
                log.warning("audit producer cannot reach %s (%s); retrying in %.0fs", self._bootstrap, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _errback(self, exc: BaseException) -> None:
        log.error("audit record not delivered: %r", exc)
        if self._on_error is not None:
            self._on_error()

    def _run(self) -> None:
        self._producer = self._connect()
        while True:
            time.sleep(self._interval_s)
            batches = []
            while True:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for records in batches:
                if records is _STOP:
                    return
                for key, value in records:
                    try:
                        future = self._producer.send(self._topic, key=key, value=value)
                        future.add_errback(self._errback)
                        self.published += 1
                    except Exception as exc:
                        self._errback(exc)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to `timeout_s`), then stop."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.error("audit queue still full at shutdown: %d decisions not published", self._queue.qsize())
            return
        self._thread.join(timeout=timeout_s)
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)
            self._producer.close(timeout=timeout_s)
