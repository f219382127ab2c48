"""`fraud ingest`: transactions from Kafka to Feast (online and offline), validated, nothing lost.

The loop: poll a micro-batch (bounded by size and time) -> validate each event against the contract
(bad ones to the DLQ with their original bytes) -> check the batch with Great Expectations, in a
side process, while the feature state computes the new online rows of the entities the batch touches
(the rows a failing check blames are quarantined, see `services.quarantine`, and the rest goes on) ->
hand them to the writer, a second side process, and go on with the next batch. The writer takes the
batches in order: each one online at once; offline, once a second, the raw events of the batches
written since, in one atomic step (training evaluates features over that history). Fraud labels
committed by `fraud ingest-labels` are taken on every turn of the loop, events or not: the rows of the
counterparties they touch go online at once. The Kafka offsets of a batch are committed once it is written both ways,
so durability keeps one order: online, offline, offsets. A crash anywhere replays at most the
batches whose offsets were not committed: replayed events that already reached the history are
skipped, so the offline store holds each event once, and the others are computed again from the
rebuilt state, so the online rows written again are the same.

Faults (tests/integration/test_ingest_faults.py): the broker away is waited for (`kafka_wait_seconds`
for commits); the online store away (Redis down) is retried with backoff, a warning each time, for up
to `ingest_store_wait_seconds`; a failed offline write (a full disk) and an online store away past
that stop the service with one line naming the store or path and the reason (exit 3), committing
nothing past the last batch written both ways, so a restart resumes exactly there."""

from __future__ import annotations

import collections
import errno
import gc
import logging
import signal
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from data_quality.batch_check import BatchCheck
from fraud import atomic, history
from fraud import features as F
from fraud import store as S
from fraud.contracts import Transaction, transaction_record
from fraud.dlq import DeadLetterError, dead_letter, error_text, send_dead_letters
from fraud.event_time import EventTimePolicy
from fraud.feature_state import VIEW_OF_KIND, Change, FeatureState, rows_frame
from fraud.kafka import commit_offsets, make_consumer, make_producer, poll_batch, wait_for_broker
from fraud.settings import IngestSettings
from fraud.worker import SideProcess
from services import quarantine

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 2  # batches handed to the writer and not yet written


class IngestMetrics:
    """Prometheus metrics of one ingest process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("ingest_events_total", "events consumed", registry=r)
        self.processed = Counter("ingest_events_processed_total", "events written to the stores", registry=r)
        self.duplicates = Counter("ingest_events_duplicate_total", "replayed events skipped", registry=r)
        self.dlq = Counter("ingest_events_dlq_total", "events sent to the dead-letter topic", registry=r)
        self.quarantined = Counter(
            "ingest_events_quarantined_total", "events isolated by a failed batch check", registry=r
        )
        self.event_time_rejected = Counter(
            "ingest_events_time_rejected_total",
            "events dead-lettered by the event-time policy",
            ["bound"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "ingest_batch_seconds",
            "micro-batch processing time",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.lag = Gauge("ingest_consumer_lag", "messages behind the end of the topic", registry=r)
        self.freshness = Histogram(
            "ingest_event_to_online_seconds",
            "event time to online feature write",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 30, 300),
            registry=r,
        )
        self.label_freshness = Histogram(
            "ingest_label_to_online_seconds",
            "label time to the online write of the risk features it changes",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 30, 300),
            registry=r,
        )


@dataclass
class BatchResult:
    consumed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    to_write: int = 0  # new events handed to the writers
    processed: int = 0  # of those, written (once the batch is: see `Ingestor.finish`)
    freshness_s: list[float] = field(default_factory=list)  # filled in once the batch is written
    written_at: float | None = None  # wall-clock time its online write was done


@dataclass
class InFlight:
    """A batch handed to the writer: its write under way, the offsets that its being written commits."""

    frame: pd.DataFrame
    written: Future[tuple[float, bool]]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    result: BatchResult


class BatchWriter:
    """The writes of the ingest, in a side process (`fraud.worker`) with its own store handle.

    Building Feast's value protos and upserting them (one row per feature) is the biggest part of a
    batch at live rates, all of it under the interpreter lock. Here it runs beside the ingest, which
    goes on with the next batch. Batches are written one at a time, in the order submitted: each one
    online at once; offline, the raw events of the batches written since the last commit, in one
    atomic commit every `ingest_offline_commit_seconds` (a Parquet file per batch would cost more
    than the rows in it). `submit` returns a future of the time the batch's
    online rows were written and whether it (with every batch before it) is also committed offline.
    """

    def __init__(self, settings: IngestSettings) -> None:
        self.process = SideProcess(_open_store, settings)

    def submit(self, frame: pd.DataFrame, change: Change) -> Future[tuple[float, bool]]:
        online = {VIEW_OF_KIND[kind]: rows_frame(kind, rows) for kind, rows in change.rows.items() if rows}
        return self.process.submit(_write, frame, online)

    def commit_offline(self) -> Future[None]:
        """Commit the batches written online since the last offline commit."""
        return self.process.submit(_commit_offline)


class StoreWriteError(RuntimeError):
    """A store did not take a batch: the offline path failed (a full disk), or the online store stayed
    unreachable past `ingest_store_wait_seconds`. The ingest stops (exit 3) with nothing committed past
    the last batch written both ways, Kafka offsets included, so a restart resumes exactly there."""


def _unreachable() -> tuple[type[BaseException], ...]:
    """Errors meaning the online store is away (retried), not that the write is wrong."""
    import redis.exceptions

    # BusyLoadingError (Redis reading its append-only file after a restart) is a ConnectionError
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, TimeoutError)


def _os_reason(exc: OSError) -> str:
    """An OSError as an operator reads it: its message and its errno name (ENOSPC for a full disk)."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device (ENOSPC)"
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


class _Writes:
    """The writer process's side: its store, and the batches written online but not yet offline."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.store = S.open_store(settings)
        self.views = {view: self.store.get_feature_view(view) for view in VIEW_OF_KIND.values()}
        self.frames: list[pd.DataFrame] = []
        self.committed_at = time.monotonic()
        self.failed: StoreWriteError | None = None  # once a write failed, every later call fails with it
        compose = settings.feast_mode == "compose"
        self.online_name = f"Redis at {settings.feast_redis_url}" if compose else f"SQLite {settings.online_path}"

    def fail(self, message: str) -> StoreWriteError:
        self.failed = StoreWriteError(message)
        return self.failed

    def write_online(self, view: str, rows: pd.DataFrame) -> None:
        """One view's online rows, retried with backoff while the online store is unreachable.

        As for the broker, an outage is waited out (a warning per retry); past the wait the ingest
        stops. Retrying is safe: the rows are upserts of the same values, and Redis skips a row whose
        event time it already holds."""
        wait = self.settings.ingest_store_wait_seconds
        started = time.monotonic()
        delay, retries = 0.5, 0
        while True:
            try:
                S.write_online(self.store, view, rows, feature_view=self.views[view])
            except _unreachable() as exc:
                waited = time.monotonic() - started
                if waited >= wait:
                    raise self.fail(
                        f"online store {self.online_name} unreachable for {waited:.0f}s "
                        f"(ingest_store_wait_seconds={wait:g}; last error: {exc}); nothing past the last batch "
                        "written is committed, Kafka offsets included: restart once it is back"
                    ) from None
                retries += 1
                pause = min(delay, wait - waited)
                log.warning(
                    "online store %s unreachable (%s): retry %d of the %s write in %.1fs (gives up after %.0fs)",
                    self.online_name,
                    exc,
                    retries,
                    view,
                    pause,
                    wait,
                )
                time.sleep(pause)
                delay = min(delay * 2, 5.0)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc):
                    raise
                raise self.fail(
                    f"online write to {self.online_name} failed: {exc}; nothing past the last batch written "
                    "is committed, Kafka offsets included: free space there and restart"
                ) from None
            else:
                if retries:
                    log.warning(
                        "online store %s is back: %s written after %d retries (%.1fs)",
                        self.online_name,
                        view,
                        retries,
                        time.monotonic() - started,
                    )
                return

    def drop_staged(self, batch: atomic.AtomicBatch) -> None:
        """After a failed offline commit: remove the batch's staged files (a full disk gets their space
        back), unless its manifest made it, in which case recovery rolls it forward."""
        if (manifest_dir(self.settings) / f"{batch.id}.json").exists():
            return
        folder = history.folder(self.settings.data_dir, "transactions")
        for staged in atomic.staging_folder(folder).glob(f"{batch.id}-*"):
            staged.unlink(missing_ok=True)

    def write(self, frame: pd.DataFrame, online: dict[str, pd.DataFrame]) -> tuple[float, bool]:
        # Online first: that is what scoring waits for. Safe after a crash: neither the events nor
        # the offsets are committed before it is done, so the batch is replayed from the rebuilt
        # state and writes the same rows again.
        if self.failed is not None:
            raise self.failed
        for view, view_rows in online.items():
            if not view_rows.empty:
                self.write_online(view, view_rows)
        written_at = time.time()
        if not frame.empty:
            self.frames.append(frame)
        due = time.monotonic() - self.committed_at >= self.settings.ingest_offline_commit_seconds
        if due:
            self.commit()
        return written_at, due

    def commit(self) -> None:
        """The batches written online since the last commit, offline in one atomic step.

        A failure of the file system (a full disk: ENOSPC) stops the ingest with the path and the
        reason: a full disk needs an operator, and waiting would hide it behind a live process. Nothing
        of the batch is visible (its staged files are removed), its offsets are not committed, so a
        restart once space is freed replays it exactly."""
        if self.failed is not None:
            raise self.failed
        if self.frames:
            batch = atomic.AtomicBatch(manifest_dir(self.settings))
            frame = pd.concat(self.frames, ignore_index=True)
            target = history.folder(self.settings.data_dir, "transactions")
            try:
                history.append(self.settings.data_dir, "transactions", frame, tag="ingest", batch=batch)
                target = manifest_dir(self.settings)
                batch.commit()
            except OSError as exc:
                self.drop_staged(batch)
                raise self.fail(
                    f"offline write to {target} failed: {_os_reason(exc)}; nothing of the last "
                    f"{len(frame)} events is committed, Kafka offsets included: free space on that file "
                    "system and restart, the ingest resumes from there"
                ) from None
            self.frames = []
        self.committed_at = time.monotonic()


_WRITES: _Writes | None = None


def _open_store(settings: IngestSettings) -> None:
    global _WRITES
    _WRITES = _Writes(settings)


def _writes() -> _Writes:
    if _WRITES is None:
        raise RuntimeError("the writer process did not start")
    return _WRITES


def _write(frame: pd.DataFrame, online: dict[str, pd.DataFrame]) -> tuple[float, bool]:
    return _writes().write(frame, online)


def _commit_offline() -> None:
    _writes().commit()


def manifest_dir(settings: IngestSettings) -> Path:
    return settings.data_dir / "ingest" / "manifests"


def parse(raw: bytes | None) -> Transaction:
    """One event, validated against the contract (raises ValueError with the field at fault)."""
    if raw is None:
        raise ValueError("empty message (tombstone)")
    return Transaction.model_validate_json(raw)


class Ingestor:
    """The transactions ingest service; built once by `build()` (its composition root)."""

    def __init__(
        self,
        settings: IngestSettings,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        writer: BatchWriter,
        metrics: IngestMetrics | None = None,
        batch_check: BatchCheck | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.writer = writer
        self.in_flight: collections.deque[InFlight] = collections.deque()
        self.online_only: dict[TopicPartition, OffsetAndMetadata] | None = None  # written, not yet offline
        self.committable: dict[TopicPartition, OffsetAndMetadata] = {}
        self.committed: dict[TopicPartition, OffsetAndMetadata] = {}
        self.metrics = metrics or IngestMetrics()
        self.batch_check = batch_check
        self.state = FeatureState()
        self.seen_label_parts: set[Path] = set()
        self.stopping = False
        self.pending: list[tuple[int, int, int, TopicPartition, dict[str, Any]]] = []
        self.consumed_upto: dict[TopicPartition, int] = {}
        self.partition_time: dict[TopicPartition, int] = {}
        self.policy = EventTimePolicy.of_seconds(
            settings.ingest_max_future_skew_seconds,
            settings.ingest_allowed_lateness_seconds,
            settings.ingest_max_event_skew_hours * 3600,
        )
        self.watermark_us: int | None = None  # the latest event time the state has taken in
        # plain totals beside the Prometheus metrics (Feast switches prometheus_client to its
        # multi-process mode, where counters are shared by every instance in the process)
        self.totals: collections.Counter[str] = collections.Counter()
        self.label_lags: collections.deque[float] = collections.deque(maxlen=100_000)  # label time -> online, s
        self.label_writes: list[Future[tuple[float, bool]]] = []  # label-only online writes under way

    # -- start-up ---------------------------------------------------------------------------------
    def folders(self) -> list[Path]:
        data = self.settings.data_dir
        return [history.folder(data, "transactions")]

    def recover(self) -> None:
        """Finish or drop a batch cut short by a crash, then rebuild the state from the history."""
        finished, dropped = atomic.recover(manifest_dir(self.settings), self.folders())
        if finished or dropped:
            log.warning("recovered after a crash: %d batches completed, %d staged files dropped", finished, dropped)
        events = history.read(self.settings.data_dir, "transactions")
        # labels known to be online go into the rebuilt state; the others (committed by ingest-labels
        # just before a crash, before their rows were written) are taken again by `refresh_labels`
        online = history.labels_online(self.settings.data_dir)
        parts = [p for p in history.parts(self.settings.data_dir, "labels") if p.name in online]
        labels = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else None
        self.seen_label_parts.update(parts)
        self.state = FeatureState.from_history(events, labels)
        self.watermark_us = self.state.watermark_us
        held = sum(len(rows) for rows in self.state.rows.values())
        log.info("state rebuilt: %d entity rows, watermark %s", held, self.state.watermark)

    def refresh_labels(self) -> int:
        """Take label parts committed since the last look (by `fraud ingest-labels` or a backfill): the
        rows of the counterparties each fraud label touches go online at once. Returns the labels taken."""
        new = [p for p in history.parts(self.settings.data_dir, "labels") if p not in self.seen_label_parts]
        if not new:
            return 0
        labels = pd.concat([pd.read_parquet(p) for p in new], ignore_index=True)
        self.seen_label_parts.update(new)
        frauds = labels[labels["is_fraud"].astype(bool)]
        if frauds.empty:
            history.mark_labels_online(self.settings.data_dir, new)
            return 0
        attached = F.attach_entities(frauds, self.state.entities(frauds["transaction_id"]))
        missing = frauds[~frauds["transaction_id"].isin(attached["transaction_id"])]
        if not missing.empty:  # labels of transactions the state let go: look them up in the history
            old = history.read(self.settings.data_dir, "transactions")
            attached = pd.concat([attached, F.attach_entities(missing, old)], ignore_index=True)
        change = self.state.add_labels(attached)
        self.state.apply(change)
        if change.empty:
            history.mark_labels_online(self.settings.data_dir, new)
        else:
            written = self.writer.submit(pd.DataFrame(), change)
            times = F.to_micros(frauds["label_time"]) / 1e6
            written.add_done_callback(lambda f: self._label_written(f, times, new))
            self.label_writes = [w for w in self.label_writes if not w.done()] + [written]
        return len(frauds)

    def _label_written(self, written: Future[tuple[float, bool]], label_times: Any, parts: list[Path]) -> None:
        if written.exception() is None:
            history.mark_labels_online(self.settings.data_dir, parts)
            at = written.result()[0]
            for value in at - label_times:
                self.metrics.label_freshness.observe(max(float(value), 0.0))
                self.label_lags.append(float(value))

    # -- the loop ---------------------------------------------------------------------------------
    def poll_batch(self) -> list[Any]:
        s = self.settings
        return poll_batch(
            self.consumer,
            s.ingest_batch_max_events,
            s.ingest_batch_max_seconds,
            lambda: self.stopping,
            s.ingest_batch_linger_seconds,
        )

    def process(self, records: list[Any]) -> BatchResult:
        """Validate a poll's records, then hand the events the watermark releases to the writers.

        Each partition is in event-time order, but a backlog is read from the partitions at uneven
        speeds. Events wait in `pending` until every partition that still has unread messages has
        reached their time, so the state sees all events in event-time order, as the backfill does.
        The batch is written in the background (see the module's docstring); its result's freshness
        and `processed` count are filled in once it is. The caller commits offsets afterwards
        (`commit`): only those of batches wholly written.
        """
        result = BatchResult(consumed=len(records))
        self.metrics.events_in.inc(len(records))
        self.totals["events_in"] += len(records)
        letters: list[tuple[bytes | None, bytes]] = []
        now_us = time.time_ns() // 1000
        replayed = 0
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            self.consumed_upto[tp] = max(self.consumed_upto.get(tp, 0), rec.offset + 1)
            try:
                row = transaction_record(parse(rec.value))
                t_us = int(row["event_time"].timestamp() * 1_000_000)
                refused = self.policy.violation(t_us, now_us, self.watermark_us)
                if refused is not None:
                    # After a crash the batches written offline but not yet committed in Kafka are read
                    # again: behind the rebuilt watermark, and already in the history. A duplicate,
                    # not a late event: dead-lettering it would count it twice. (Recognised within the
                    # state's retention, 31 days of event time: far more than a crash leaves to replay.)
                    if row["transaction_id"] in self.state.txns:
                        replayed += 1
                        continue
                    self.metrics.event_time_rejected.labels(refused.bound).inc()
                    self.totals[f"time_{refused.bound}"] += 1
                    raise ValueError(refused.reason)
            except Exception as exc:  # whatever one message does, it is that message's fault
                max_bytes = self.settings.ingest_dlq_max_bytes
                letters.append(
                    (rec.key, dead_letter(rec.value, error_text(exc), rec.topic, rec.partition, rec.offset, max_bytes))
                )
                continue
            self.partition_time[tp] = max(self.partition_time.get(tp, t_us), t_us)
            self.pending.append((t_us, rec.partition, rec.offset, tp, row))
        if letters:  # raises DeadLetterError after its retries: then nothing past them is committed
            send_dead_letters(
                self.producer, self.settings.ingest_dlq_topic, letters, attempts=self.settings.ingest_dlq_attempts
            )
        result.dead_lettered = len(letters)
        self.metrics.dlq.inc(len(letters))
        self.totals["dlq"] += len(letters)
        result.duplicates = replayed
        released = self.release()
        if released:
            latest = released[-1][0]
            self.watermark_us = latest if self.watermark_us is None else max(self.watermark_us, latest)
        frame = pd.DataFrame([item[4] for item in released])
        if not frame.empty:
            fresh = ~self.state.seen(frame["transaction_id"]) & ~frame["transaction_id"].duplicated().to_numpy()
            result.duplicates += int((~fresh).sum())
            frame = frame[fresh].reset_index(drop=True)
        self.metrics.duplicates.inc(result.duplicates)
        self.totals["duplicates"] += result.duplicates
        if frame.empty:
            self.mark_done()
            return result
        # The batch check runs in its own process while the features are computed; nothing is
        # written, and the state is left as it was, until it has passed.
        check = self.batch_check.submit(frame) if self.batch_check is not None else None
        self.refresh_labels()
        change = self.state.compute(frame)
        if check is not None:
            verdict = check.result()
            if not verdict.passed:
                # the rows the failed expectations blame are isolated and the rest goes on; a failure
                # about the batch as a whole (no row to blame) isolates the batch
                blamed = frame.index if verdict.offending is None else pd.Index(verdict.offending)
                entry = quarantine.put(self.settings.data_dir, frame.loc[blamed], verdict.report, len(frame))
                log.error("quarantined %d of %d events (%s): %s", len(blamed), len(frame), entry, verdict.report)
                result.quarantined = len(blamed)
                self.metrics.quarantined.inc(len(blamed))
                self.totals["quarantined"] += len(blamed)
                frame = frame.drop(index=blamed).reset_index(drop=True)
                if frame.empty:
                    self.mark_done()
                    return result
                change = self.state.compute(frame)
        self.state.apply(change)
        result.to_write = len(frame)
        written = self.writer.submit(frame, change)
        self.in_flight.append(InFlight(frame, written, self.offsets_to_commit(), result))
        while len(self.in_flight) > MAX_IN_FLIGHT:  # the writer is behind: wait for it
            self.finish()
        return result

    def mark_done(self) -> None:
        """A batch that wrote nothing: its offsets are committable once the batches before it are."""
        if not self.in_flight and self.online_only is None:
            self.committable = self.offsets_to_commit()

    def finish(self) -> None:
        """Wait for the oldest batch in flight to be written; once offline too, its offsets are committable."""
        flight = self.in_flight.popleft()
        written_at, offline = flight.written.result()  # raises if the write failed: nothing is committed
        if offline:
            self.committable, self.online_only = flight.offsets, None
        else:
            self.online_only = flight.offsets
        result = flight.result
        result.written_at = written_at
        times = pd.to_datetime(flight.frame["event_time"], utc=True).astype("int64") / 1e9
        result.freshness_s = list(written_at - times)
        for value in result.freshness_s:
            self.metrics.freshness.observe(max(value, 0.0))
        result.processed = len(flight.frame)
        self.metrics.processed.inc(len(flight.frame))
        self.totals["processed"] += len(flight.frame)

    def horizon(self) -> float:
        """The event time up to which every partition with unread messages has been read."""
        assigned = self.consumer.assignment()
        if not assigned:
            return float("inf")
        try:
            ends = self.consumer.end_offsets(list(assigned))
        except KafkaError:
            return -float("inf")  # unknown: release nothing now, retry next batch
        blocking = [tp for tp in assigned if self.consumed_upto.get(tp, self.consumer.position(tp) or 0) < ends[tp]]
        if not blocking:
            return float("inf")
        return float(min(self.partition_time.get(tp, -(2**62)) for tp in blocking))

    def release(self) -> list[tuple[int, int, int, TopicPartition, dict[str, Any]]]:
        """Pending events at or before the horizon, in event-time order."""
        if not self.pending:
            return []
        limit = self.horizon()
        self.pending.sort(key=lambda item: (item[0], item[4]["transaction_id"]))
        cut = 0
        while cut < len(self.pending) and self.pending[cut][0] <= limit:
            cut += 1
        released, self.pending = self.pending[:cut], self.pending[cut:]
        if len(self.pending) > 20 * self.settings.ingest_batch_max_events:
            log.warning("%d events wait for a lagging partition (event-time alignment)", len(self.pending))
        return released

    def offsets_to_commit(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Per partition: the first offset not yet written (the oldest pending one, or all consumed)."""
        first_pending: dict[TopicPartition, int] = {}
        for _, _, offset, tp, _ in self.pending:
            first_pending[tp] = min(first_pending.get(tp, offset), offset)
        return {tp: OffsetAndMetadata(first_pending.get(tp, upto), "", -1) for tp, upto in self.consumed_upto.items()}

    def commit(self, flush: bool = False) -> None:
        """Commit the offsets of every batch wholly written; with `flush`, first finish writing them all."""
        while self.in_flight and (flush or self.in_flight[0].written.done()):
            self.finish()
        if flush:
            for written in self.label_writes:  # raises if a label's write failed
                written.result()
            self.label_writes = []
        if flush and self.online_only is not None:
            self.writer.commit_offline().result()
            self.committable, self.online_only = self.online_only, None
        if flush:
            self.mark_done()
        if self.committable and self.committable != self.committed:
            commit_offsets(self.consumer, self.committable, self.settings.kafka_wait_seconds)
            self.committed = self.committable

    def broker_reachable(self) -> bool:
        try:
            self.consumer.end_offsets(list(self.consumer.assignment()), timeout_ms=5000)
            return True
        except KafkaError:
            log.warning("the broker is unreachable: waiting for it")
            return False

    def update_lag(self) -> None:
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return
            ends = self.consumer.end_offsets(list(assigned))
            lag = sum(max(ends[tp] - (self.consumer.position(tp) or 0), 0) for tp in assigned)
            self.metrics.lag.set(lag)
        except KafkaError:
            pass

    def run(self, max_batches: int | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT), idle for the configured time, or `max_batches`."""
        idle_since = time.monotonic()
        lag_at = 0.0
        batches = 0
        while not self.stopping:
            records = self.poll_batch()
            self.refresh_labels()  # labels go online as they come, events or not
            if not records and not self.pending:
                self.commit(flush=True)  # nothing new: no reason to keep a batch in flight
                idle = self.settings.ingest_idle_exit_seconds
                if not idle:
                    continue
                # Still joining the group, or the broker away: not idle, and the clock starts again
                # once it is back (an outage is no reason to stop).
                if not self.consumer.assignment() or not self.broker_reachable():
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > idle:
                    log.info("no events for %.0fs: stopping", idle)
                    break
                continue
            if records:
                idle_since = time.monotonic()
            started = time.perf_counter()
            result = self.process(records)
            self.commit()
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            if time.monotonic() - lag_at > 1.0:  # an offsets request to the broker: once a second is enough
                self.update_lag()
                lag_at = time.monotonic()
            log.info(
                "batch: %d consumed, %d to write, %d duplicates, %d DLQ, %d quarantined in %.3fs; %d pending",
                result.consumed,
                result.to_write,
                result.duplicates,
                result.dead_lettered,
                result.quarantined,
                time.perf_counter() - started,
                len(self.pending),
            )
            batches += 1
            if max_batches is not None and batches >= max_batches:
                break
        self.commit(flush=True)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Finish the current batch, commit, close (wired to SIGTERM and SIGINT)."""
        log.info("stop requested (signal %s): finishing the current batch", signum)
        self.stopping = True

    def close(self) -> None:
        # after a failure, writes queued behind the failed one would only fail again: dropped
        self.writer.process.close(cancel_pending=True)
        if self.batch_check is not None:
            self.batch_check.process.close(cancel_pending=True)
        self.consumer.close()
        self.producer.flush()
        self.producer.close()


def build(settings: IngestSettings) -> Ingestor:
    """The composition root: broker, consumer, DLQ producer, Feast store, batch check."""
    wait_for_broker(settings.kafka_bootstrap_servers, settings.kafka_wait_seconds)
    from fraud.kafka import ensure_topics

    ensure_topics(settings.kafka_bootstrap_servers, [settings.ingest_topic, settings.ingest_dlq_topic])
    consumer = make_consumer(
        settings.kafka_bootstrap_servers,
        settings.ingest_group_id,
        settings.ingest_topic,
        max_poll_records=settings.ingest_batch_max_events,
        max_poll_interval_ms=600_000,
        session_timeout_ms=int(settings.ingest_session_timeout_seconds * 1000),
        heartbeat_interval_ms=int(min(3.0, settings.ingest_session_timeout_seconds / 3) * 1000),
        fetch_min_bytes=16384,
        fetch_max_wait_ms=25,
    )
    producer = make_producer(settings.kafka_bootstrap_servers)
    S.apply(settings)
    check = BatchCheck(settings) if settings.ingest_validate_batches else None
    ingestor = Ingestor(settings, consumer, producer, BatchWriter(settings), batch_check=check)
    ingestor.recover()  # while the side processes start
    for side in [ingestor.writer.process] + ([check.process] if check is not None else []):
        side.wait_started()
    # What start-up loaded (Feast, pandas, the rebuilt state) stays: keep the garbage collector's
    # full passes from walking it on every batch (they took 0.1-0.3 s each).
    gc.collect()
    gc.freeze()
    return ingestor


def main(settings: IngestSettings, max_batches: int | None = None) -> None:
    """Run the service until SIGTERM/SIGINT."""
    ingestor = build(settings)
    if settings.ingest_metrics_port:
        from prometheus_client import start_http_server

        # all interfaces only when asked (containers: Prometheus scrapes it), loopback otherwise
        addr = "0.0.0.0" if settings.ingest_metrics_public else "127.0.0.1"  # noqa: S104
        start_http_server(settings.ingest_metrics_port, addr=addr, registry=ingestor.metrics.registry)
    signal.signal(signal.SIGTERM, ingestor.stop)
    signal.signal(signal.SIGINT, ingestor.stop)
    try:
        ingestor.run(max_batches=max_batches)
    except DeadLetterError as exc:
        log.critical("ingest stopped: %s", exc)
        raise SystemExit(2) from exc
    except StoreWriteError as exc:  # raised in the writer process: its message is the whole story
        log.critical("ingest stopped: %s", exc)
        raise SystemExit(3) from None
    finally:
        ingestor.close()
    log.info("ingest stopped cleanly")
