"""The audit trail: every decision to `fraud-scores`, off the request path, none lost.

Each micro-batch serializes its decisions (~0.15 ms each) and hands them to a bounded in-memory
queue (never blocks); one thread wakes every `interval_s`, drains the queue and gives the records to
the Kafka producer, which batches and sends in the background. Waking on a timer rather than per
record keeps the publisher from contending with the request path for the interpreter lock (a
wake-up per request measurably raised the scorer's latency under load).

When Kafka does not take a record, the record goes to a local spool instead of being dropped: the
broker is unreachable (no producer yet), `send` raises, the broker rejects a record after its
retries, acknowledgements stall for `stall_s` (then every new decision is spooled until the broker
is back), the in-memory queue is full (the request path appends to the spool itself), or the scorer
stops with records unacknowledged. The spool (`Spool`) is a folder of append-only JSON-lines files,
one line per record (`{"key": ..., "value": ...}`: the Kafka key and value bytes, exactly as
produced), fsync'd once per wake-up. Each process writes its own files, named after its pid and a
random id, and holds an exclusive `flock` on every file it owns, so several uvicorn workers never
interleave nor publish the same file. The same thread replays the spool with exponential backoff
(up to `retry_max_s`) once the broker answers, and at start-up it claims the files of any earlier
process, crashed ones included (a free lock means a dead owner), by an atomic rename. A file is
deleted only after every record in it is acknowledged (acks=all); a partly published file is
replaced by one holding only the unacknowledged records. A torn last line (a crash mid-write) is
skipped with a warning. A record the producer can never send (larger than `max_request_size`) is
moved to `rejected/` beside the spool for an operator, with an error in the log.

Delivery is at-least-once with an idempotent key: the Kafka key is the transaction id, and a
record published twice (a crash between the broker's acknowledgement and the spool's delete, or an
acknowledgement lost on the wire) is byte-identical, value and `scored_at` included. Consumers of
`fraud-scores` dedupe by `transaction_id` (the same transaction scored twice by the scorer, a
client retry, is two decisions with different `scored_at`: dedupe on both to keep each).
Replayed records come after the live ones of the same moment: order across the outage is not kept.
A `kill -9` loses what was in memory and not yet acknowledged (at most the last wake-up's records
and those in flight); a graceful stop spools it. `unpublished` (queue + in flight + spool) is
reported through `on_pending` on every wake-up: the scorer's `fraud_scorer_audit_unpublished` gauge.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, count, islice
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from fraud.kafka import json_bytes, make_producer
from services.scorer.core import Scored, audit_record

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes]  # (Kafka key, Kafka value)
SUFFIX = ".jsonl"
NEW_SUFFIX = ".new"  # a file being created: never claimed, removed when its creator is gone
REJECTED = "rejected"


def unpublished_gauge(registry: CollectorRegistry) -> Gauge:
    """The gauge of decisions not yet acknowledged by the broker (summed over live workers)."""
    return Gauge(
        "fraud_scorer_audit_unpublished",
        "Decisions not yet acknowledged by the broker (in memory, in flight or spooled to disk)",
        registry=registry,
        multiprocess_mode="livesum",
    )


def encode_line(key: bytes, value: bytes) -> bytes:
    """One spool line: the key and value bytes, exactly (any bytes survive the round trip)."""
    doc = {"key": key.decode("utf-8", "surrogateescape"), "value": value.decode("utf-8", "surrogateescape")}
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def decode_line(line: bytes) -> Record | None:
    """The record of one spool line, or None when the line is torn or not a record."""
    try:
        doc = json.loads(line)
        key, value = doc["key"], doc["value"]
        if not isinstance(key, str) or not isinstance(value, str):
            return None
        return key.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape")
    except (ValueError, KeyError, TypeError):
        return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


@dataclass(eq=False)
class Segment:
    """One spool file this process owns (its lock held through `fd`) and its record count."""

    path: Path
    fd: int
    count: int
    sealed: bool


class Spool:
    """Append-only JSON-lines spool files of one process, under `folder`; thread-safe appends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # oldest first; the last may be the active (unsealed) one
        self._seq = count(1)  # `next` on it is atomic: request path and publisher thread both make files
        self._dirty = False

    def open(self) -> None:
        """Create the folder (not at import: at start)."""
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def pending(self) -> int:
        """Records in the files this process owns (not yet acknowledged)."""
        with self._lock:
            return sum(s.count for s in self._segments)

    def _next_path(self) -> Path:
        return self.folder / f"{self.owner}-{next(self._seq):06d}{SUFFIX}"

    def _create(self) -> tuple[Path, int]:
        """A new locked file: created under a name claimers ignore, locked, then renamed into place."""
        final = self._next_path()
        tmp = final.with_name("." + final.name + NEW_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, final)
        _fsync_dir(self.folder)
        return final, fd

    def append(self, records: Sequence[Record]) -> None:
        """Append records to the active file (made on first use); durable at the next `sync`."""
        if not records:
            return
        data = b"".join(encode_line(k, v) for k, v in records)
        with self._lock:
            active = self._segments[-1] if self._segments and not self._segments[-1].sealed else None
            if active is None:
                path, fd = self._create()
                active = Segment(path, fd, 0, sealed=False)
                self._segments.append(active)
            _write_all(active.fd, data)
            active.count += len(records)
            self._dirty = True

    def sync(self) -> None:
        """fsync the active file if anything was appended since the last call."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            fds = [s.fd for s in self._segments if not s.sealed]
        for fd in fds:
            os.fsync(fd)

    def seal(self) -> None:
        """Close the active file to appends (the next append starts a new one); it can now be replayed."""
        with self._lock:  # no append can slip in between the last fsync and the seal
            active = self._segments[-1] if self._segments and not self._segments[-1].sealed else None
            if active is not None:
                active.sealed = True
        if active is not None:
            os.fsync(active.fd)

    def sealed(self) -> list[Segment]:
        """The files ready to replay, oldest first."""
        with self._lock:
            return [s for s in self._segments if s.sealed]

    def oldest(self) -> Segment | None:
        """The oldest file, sealed or active."""
        with self._lock:
            return self._segments[0] if self._segments else None

    def first(self, segment: Segment) -> Record | None:
        """The first readable record of a file."""
        with closing(self.records(segment)) as it:
            return next(it, None)

    def records(self, segment: Segment) -> Generator[Record, None, None]:
        """The records of a file, in order; torn or corrupt lines are skipped with a warning."""
        with open(segment.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                record = decode_line(line)
                if record is None:
                    torn = not line.endswith(b"\n")
                    log.warning(
                        "audit spool %s line %d skipped: %s (%d bytes)",
                        segment.path.name,
                        number,
                        "torn last line (a crash mid-write?)" if torn else "not a record",
                        len(line),
                    )
                    continue
                yield record

    def done(self, segment: Segment) -> None:
        """Every record of `segment` is acknowledged: delete the file, then release its lock."""
        segment.path.unlink(missing_ok=True)
        os.close(segment.fd)
        with self._lock:
            self._segments.remove(segment)

    def keep(self, segment: Segment, remaining: Iterable[Record]) -> None:
        """Replace `segment` by a file of only `remaining` (written and fsync'd before the old one goes)."""
        path, fd = self._create()
        kept = 0
        chunk: list[bytes] = []
        for key, value in remaining:
            chunk.append(encode_line(key, value))
            kept += 1
            if len(chunk) >= 1000:
                _write_all(fd, b"".join(chunk))
                chunk = []
        _write_all(fd, b"".join(chunk))
        os.fsync(fd)
        replacement = Segment(path, fd, kept, sealed=True)
        with self._lock:
            self._segments[self._segments.index(segment)] = replacement
        segment.path.unlink(missing_ok=True)
        os.close(segment.fd)
        _fsync_dir(self.folder)
        if kept == 0:
            self.done(replacement)

    def claim_orphans(self) -> int:
        """Take over the files of processes that are gone (their lock is free); returns records claimed."""
        with self._lock:
            mine = {s.path for s in self._segments}
        claimed = 0
        names = sorted(self.folder.iterdir()) if self.folder.is_dir() else []
        for path in names:
            if path.name.endswith(NEW_SUFFIX):
                self._remove_stale_new(path)
                continue
            if not path.name.endswith(SUFFIX) or path in mine:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # claimed or published by another worker meanwhile
            if not _try_lock(fd):
                os.close(fd)  # a live process owns it
                continue
            target = self._next_path()
            try:
                os.rename(path, target)  # atomic: exactly one claimer wins
            except FileNotFoundError:
                os.close(fd)  # another worker claimed it between our open and our lock
                continue
            with open(target, "rb") as fh:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            with self._lock:
                self._segments.insert(sum(1 for s in self._segments if s.sealed), Segment(target, fd, lines, True))
            claimed += lines
            log.info("audit spool: claimed %s (%d records) as %s", path.name, lines, target.name)
        if claimed:
            _fsync_dir(self.folder)
        return claimed

    def _remove_stale_new(self, path: Path) -> None:
        """A half-made file of a dead process: either empty, or a copy whose original still exists."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            if _try_lock(fd):
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def reject(self, record: Record, reason: str) -> None:
        """Keep a record the broker can never take in `rejected/` for an operator (never replayed)."""
        folder = self.folder / REJECTED
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{self.owner}{SUFFIX}", "ab") as fh:
            fh.write(encode_line(*record))
            fh.flush()
            os.fsync(fh.fileno())
        log.error("audit record %r cannot be published (%s): kept in %s", record[0][:64], reason, folder)

    def close(self) -> None:
        """fsync and release every lock; the files stay for the next process to claim."""
        self.sync()
        with self._lock:
            segments, self._segments = self._segments, []
        for s in segments:
            os.close(s.fd)


class AuditPublisher:
    """Publishes decisions to a Kafka topic from a background thread, spooling what Kafka does not take."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        spool_dir: Path,
        max_queue: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
        interval_s: float = 0.05,
        *,
        on_pending: Callable[[int], None] | None = None,
        retry_max_s: float = 30.0,
        stall_s: float = 5.0,
        probe_timeout_s: float = 5.0,
        flush_timeout_s: float = 30.0,
        replay_chunk: int = 5000,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self.spool = Spool(spool_dir)
        self._queue: queue.Queue[list[Record]] = queue.Queue(maxsize=max_queue)
        self._on_drop = on_drop
        self._on_error = on_error
        self._on_pending = on_pending
        self._interval_s = interval_s
        self._retry_max_s = retry_max_s
        self._stall_s = stall_s
        self._probe_timeout_s = probe_timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._replay_chunk = replay_chunk
        self._factory = producer_factory or self._make_producer
        self._producer: Any = None
        self._lock = threading.Lock()
        self._queued = 0  # records in the queue
        self._inflight: dict[int, tuple[bytes, bytes, float]] = {}  # token -> key, value, sent at (monotonic)
        self._token = 0
        self._failed: list[Record] = []  # not accepted by the broker: spooled on the next wake-up
        self._unsaved: list[Record] = []  # the spool could not be written (disk full?): retried
        self._up = False  # live records go to Kafka (else to the spool)
        self._retry_at = 0.0
        self._delay = min(1.0, retry_max_s)
        self._scan_at = 0.0
        self._closing = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-publisher", daemon=True)
        self.published = 0  # acknowledged by the broker (live and replayed)
        self.dropped = 0  # definitively lost (the spool could not be written at shutdown)

    # -- request path --------------------------------------------------------------------------

    def start(self) -> None:
        """Create the spool folder and start the publishing thread (which first claims earlier spools)."""
        self.spool.open()
        self._thread.start()

    def publish(self, results: Sequence[Scored], feature_names: Sequence[str]) -> None:
        """Serialize a batch of decisions and queue them; never blocks on Kafka (a full queue spools them)."""
        scored_at = datetime.now(UTC)
        self.publish_records(
            [
                (s.transaction.transaction_id.encode(), json_bytes(audit_record(s, feature_names, scored_at)))
                for s in results
            ]
        )

    def publish_records(self, records: Sequence[Record]) -> None:
        """Queue serialized (key, value) records; a full queue (or a stopped publisher) spools them."""
        records = list(records)
        if not records:
            return
        if not self._closed:
            with self._lock:
                self._queued += len(records)
            try:
                self._queue.put_nowait(records)
                return
            except queue.Full:
                with self._lock:
                    self._queued -= len(records)
                log.warning("audit queue full: %d decisions spooled to disk from the request path", len(records))
        self._save(records)
        if self._closed:
            self.spool.sync()

    @property
    def unpublished(self) -> int:
        """Decisions not yet acknowledged: queued, in flight, waiting to be spooled, or spooled."""
        with self._lock:
            in_memory = self._queued + len(self._inflight) + len(self._failed) + len(self._unsaved)
        return in_memory + self.spool.pending

    # -- publishing thread ---------------------------------------------------------------------

    def _make_producer(self) -> Any:
        return make_producer(
            self._bootstrap,
            linger_ms=100,
            max_block_ms=5_000,  # `send` without metadata while the broker is away
            bootstrap_timeout_ms=3_000,  # construction while the broker is away
            request_timeout_ms=10_000,
            delivery_timeout_ms=30_000,  # then the record fails and is spooled
            reconnect_backoff_max_ms=2_000,  # notice a returning broker within seconds
        )

    def _save(self, records: Sequence[Record]) -> None:
        """Append to the spool; if the disk refuses, keep them in memory and retry (never drop)."""
        if not records:
            return
        try:
            self.spool.append(records)
        except OSError as exc:
            log.error("audit spool not writable (%s): %d decisions kept in memory", exc, len(records))
            with self._lock:
                self._unsaved.extend(records)

    def _acked(self, token: int, _metadata: Any) -> None:
        with self._lock:
            if self._inflight.pop(token, None) is not None:
                self.published += 1

    def _not_acked(self, token: int, exc: BaseException) -> None:
        with self._lock:
            entry = self._inflight.pop(token, None)
            if entry is None:
                return  # already spooled at shutdown
            self._failed.append((entry[0], entry[1]))
            was_up, self._up = self._up, False
        if was_up:
            log.error("audit record not delivered (%r): spooling decisions until the broker is back", exc)
        if self._on_error is not None:
            self._on_error()

    def _go_down(self, reason: str) -> None:
        with self._lock:
            was_up, self._up = self._up, False
        if was_up:
            log.warning(
                "audit publishing to %s paused (%s): spooling decisions to %s", self._topic, reason, self.spool.folder
            )

    def _stalled(self) -> bool:
        """The oldest record in flight has waited longer than `stall_s` for its acknowledgement."""
        with self._lock:
            oldest = next(iter(self._inflight.values()))[2] if self._inflight else None
        return oldest is not None and time.monotonic() - oldest > self._stall_s

    def _send_live(self, records: list[Record]) -> list[Record]:
        """Hand records to the producer; returns those it did not take."""
        now = time.monotonic()
        for i, (key, value) in enumerate(records):
            with self._lock:
                self._token += 1
                token = self._token
                self._inflight[token] = (key, value, now)
            try:
                future = self._producer.send(self._topic, key=key, value=value)
            except Exception as exc:
                with self._lock:
                    self._inflight.pop(token, None)
                if _never_sendable(exc):
                    self.spool.reject((key, value), repr(exc))
                    if self._on_error is not None:
                        self._on_error()
                    continue
                self._go_down(f"send failed: {exc!r}")
                return records[i:]
            future.add_callback(self._acked, token)
            future.add_errback(self._not_acked, token)
        return []

    def _pump(self) -> None:
        """Drain the queue to Kafka (or the spool when Kafka is not taking records), then fsync the spool."""
        batches: list[list[Record]] = []
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        records = [r for batch in batches for r in batch]
        with self._lock:
            failed, self._failed = self._failed, []
            unsaved, self._unsaved = self._unsaved, []
            up = self._up and self._producer is not None
        if up and self._stalled():
            self._go_down(f"no acknowledgement for {self._stall_s:.0f}s")
            up = False
        to_spool = unsaved + failed
        if records:
            to_spool += self._send_live(records) if up else records
        self._save(to_spool)
        with self._lock:
            self._queued -= len(records)
        try:
            self.spool.sync()
        except OSError as exc:
            log.error("audit spool fsync failed: %s", exc)

    def _report(self) -> None:
        if self._on_pending is not None:
            self._on_pending(self.unpublished)

    def _run(self) -> None:
        try:
            claimed = self.spool.claim_orphans()
            if claimed:
                log.info("audit: %d decisions of earlier processes to publish", claimed)
        except OSError as exc:
            log.error("audit spool: cannot claim earlier files: %s", exc)
        self._scan_at = time.monotonic() + self._retry_max_s
        while not self._closing.wait(self._interval_s):
            try:
                self._pump()
                now = time.monotonic()
                if now >= self._scan_at:
                    self._scan_at = now + self._retry_max_s
                    self.spool.claim_orphans()  # a sibling worker that died
                if (not self._up or self.spool.pending) and now >= self._retry_at:
                    self._recover()
            except Exception:  # the thread must outlive any single failure
                log.exception("audit publisher: unexpected error")
                self._backoff("unexpected error")
            self._report()
        self._shutdown()

    def _backoff(self, reason: str) -> None:
        log.warning("audit: broker %s not taking records (%s); retrying in %.1fs", self._bootstrap, reason, self._delay)
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._retry_max_s)

    def _recover(self) -> None:
        """Connect if needed, probe the broker with the oldest spooled record, then replay the spool."""
        if self._producer is None:
            try:
                self._producer = self._factory()
            except Exception as exc:
                self._backoff(f"cannot connect: {exc!r}")
                return
        first: Record | None = None
        oldest = self.spool.oldest()
        while oldest is not None and oldest.sealed:
            first = self.spool.first(oldest)
            if first is not None:
                break
            self.spool.done(oldest)  # nothing readable in it
            oldest = self.spool.oldest()
        if oldest is not None and first is None:
            first = self.spool.first(oldest)  # the active file
        if first is not None:
            if self._send_and_wait([first], self._probe_timeout_s):
                self._backoff("probe not acknowledged")
                return
        else:
            if self._stalled():
                self._backoff("records in flight not acknowledged")
                return
        with self._lock:
            self._up = True  # live decisions go to Kafka again while the spool drains
        self.spool.seal()
        for segment in self.spool.sealed():
            if self._closing.is_set():
                return
            if not self._replay(segment, skip=1 if first is not None and segment is oldest else 0):
                self._go_down("replay not acknowledged")
                self._backoff("replay not acknowledged")
                return
        if oldest is not None:
            log.info("audit: spool published to %s", self._topic)
        self._delay = min(1.0, self._retry_max_s)

    def _replay(self, segment: Segment, skip: int) -> bool:
        """Publish one spool file in chunks; delete it when all is acknowledged, else keep the rest."""
        it = self.spool.records(segment)
        acked = len(list(islice(it, skip)))
        while True:
            chunk = list(islice(it, self._replay_chunk))
            if not chunk:
                self.spool.done(segment)
                return True
            unacked = self._send_and_wait(chunk, self._flush_timeout_s)
            acked += len(chunk) - len(unacked)
            if unacked or self._closing.is_set():
                if acked:
                    self.spool.keep(segment, chain(unacked, it))
                return not unacked
            self._pump()  # live decisions keep moving between chunks

    def _send_and_wait(self, records: list[Record], timeout_s: float) -> list[Record]:
        """Send and flush; returns the records not acknowledged within `timeout_s`."""
        futures = []
        for i, (key, value) in enumerate(records):
            try:
                futures.append(((key, value), self._producer.send(self._topic, key=key, value=value)))
            except Exception as exc:
                if _never_sendable(exc):
                    self.spool.reject((key, value), repr(exc))
                    continue
                log.warning("audit replay: send failed: %r", exc)
                return [r for r, _ in futures] + records[i:]
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:
            log.warning("audit replay: flush did not complete: %r", exc)
        unacked = [r for r, f in futures if not f.succeeded()]
        with self._lock:
            self.published += len(futures) - len(unacked)
        return unacked

    def _shutdown(self) -> None:
        """Final drain: send what is queued, wait up to `flush_timeout_s`, spool what is still unacknowledged."""
        try:
            self._pump()
            if self._producer is not None:
                try:
                    self._producer.flush(timeout=self._flush_timeout_s if self._up else 1.0)
                except Exception as exc:
                    log.warning("audit: flush at shutdown did not complete: %r", exc)
        finally:
            self._spool_leftovers()
            if self._producer is not None:
                try:
                    self._producer.close(timeout=1.0)
                except Exception as exc:
                    log.warning("audit: producer close failed: %r", exc)
            self._report()

    def _spool_leftovers(self) -> None:
        """Everything not acknowledged (queue, in flight, failed) to the spool, fsync'd."""
        leftovers: list[Record] = []
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            leftovers.extend(batch)
            with self._lock:
                self._queued -= len(batch)
        with self._lock:
            leftovers += [(k, v) for k, v, _ in self._inflight.values()] + self._failed + self._unsaved
            self._inflight.clear()
            self._failed, self._unsaved = [], []
        try:
            self.spool.append(leftovers)
            self.spool.sync()
        except OSError as exc:
            self.dropped += len(leftovers)
            log.error("audit spool not writable at shutdown (%s): %d decisions LOST", exc, len(leftovers))
            if self._on_drop is not None:
                self._on_drop(len(leftovers))
        if leftovers:
            log.warning("audit: %d unacknowledged decisions spooled at shutdown", len(leftovers))

    def close(self, timeout_s: float = 10.0) -> None:
        """Publish what is queued (up to `timeout_s`), spool the rest, release the spool to the next process."""
        if not self._thread.is_alive():
            return
        self._flush_timeout_s = min(self._flush_timeout_s, timeout_s)
        self._closed = True  # from now on a late publish goes straight to the spool
        self._closing.set()
        self._thread.join(timeout=timeout_s + 5.0)
        if self._thread.is_alive():  # stuck in a blocking Kafka call: save what we can from here
            log.error("audit publisher did not stop in time: spooling what is in memory")
            self._spool_leftovers()
            return
        self.spool.close()


def _never_sendable(exc: BaseException) -> bool:
    """An error of the record itself (too large), not of the broker: retrying can never succeed."""
    from kafka.errors import MessageSizeTooLargeError

    return isinstance(exc, MessageSizeTooLargeError)
