"""Faults of `fraud ingest`, each ending in an accounting check (issue 22, item 6).

- `kill -9` at seeded random moments, three times in one run, bad events mixed in;
- a full disk on the offline path (a small tmpfs made by the test): the ingest stops with a clear
  error naming the path and ENOSPC, commits no offset past what it wrote, leaves no partial part
  visible, and resumes exactly once space is freed;
- Redis (the compose online store) stopped mid-stream and started again: the writer waits it out.

The accounting: produced = in the history (processed) + dead-lettered + quarantined; the offline
history holds each good event once; offline and online rows equal those of an uninterrupted run, or
of a backfill of the same events. (The broker restart is `test_ingest.py`'s.)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from fraud import atomic, history
from fraud import store as S
from fraud.settings import IngestSettings
from services.ingest import build
from tests.factories import history as make_history
from tests.integration.test_ingest import (
    ROOT,
    _bad_payloads,
    _good_payloads,
    _produce,
    _settings,
    _spawn_ingest,
    _wait_parts,
)
from tests.online_check import assert_serves_the_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EMULATION = ROOT / "infra" / "compose_emulation.sh"
# small batches and offline commits every 0.3 s: a fault finds batches written online, not yet offline
SMALL = {"ingest_batch_max_events": 200, "ingest_batch_max_seconds": 0.3, "ingest_offline_commit_seconds": 0.3}


# -- accounting helpers ---------------------------------------------------------------------------
def _read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning to its current end (no consumer group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str) -> dict[int, int]:
    """The offsets a consumer group has committed, by partition."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
        return {tp.partition: meta.offset for tp, meta in offsets.items()}
    finally:
        admin.close()


def _history_rows(data_dir: Path) -> pd.DataFrame:
    """The raw offline history, every part as written (no deduplication: a twice-written event shows)."""
    parts = history.parts(data_dir, "transactions")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()


def _quarantined(data_dir: Path) -> int:
    return sum(len(pd.read_parquet(p)) for p in (data_dir / "quarantine").glob("*.parquet"))


def _account(
    settings: IngestSettings, bootstrap: str, good_ids: set[str], produced: int, bad_offsets: set[tuple[int, int]]
) -> None:
    """produced = processed + dead-lettered + quarantined, and each good event exactly once offline."""
    hist = _history_rows(settings.data_dir)
    assert hist.transaction_id.is_unique, "an event is in the offline history twice"
    assert set(hist.transaction_id) == good_ids
    letters = [json.loads(r.value) for r in _read_topic(bootstrap, settings.ingest_dlq_topic)]
    # the DLQ is at-least-once (a batch's letters go out before its offsets are committed): a letter
    # is identified by its source offset
    sources = {(int(x["source_partition"]), int(x["source_offset"])) for x in letters}
    assert sources == bad_offsets
    assert produced == len(hist) + len(sources) + _quarantined(settings.data_dir)
    folder = history.folder(settings.data_dir, "transactions")  # nothing staged is left, every part is whole
    assert not list(atomic.staging_folder(folder).glob("*"))
    pq.read_table(folder)


def _assert_equals_backfill(settings: IngestSettings, events: pd.DataFrame) -> None:
    """The online store serves what training computes over the same events (`tests.online_check`)."""
    assert_serves_the_history(settings, events)


def _interleave(good: list[tuple[bytes, bytes]], bad: list[tuple[bytes, bytes]], seed: int) -> list[Any]:
    """Bad events anywhere in the stream; good events keep their order."""
    rng = np.random.default_rng(seed)
    mixed = good + bad
    order = np.argsort(np.r_[np.arange(len(good)), rng.integers(0, len(good), len(bad))], kind="stable")
    return [mixed[i] for i in order]


def _bad_offsets(bootstrap: str, topic: str, good_ids: set[str]) -> set[tuple[int, int]]:
    """(partition, offset) of every produced record that is not a good event."""
    out = set()
    for rec in _read_topic(bootstrap, topic):
        try:
            txn_id = json.loads(rec.value).get("transaction_id")
        except ValueError:
            txn_id = None
        if txn_id not in good_ids:
            out.add((rec.partition, rec.offset))
    return out


def _run_to_exit(settings: IngestSettings, log_path: Path) -> tuple[int, str]:
    """Run `fraud ingest` until it exits by itself (bounded); its exit code and log."""
    proc = _spawn_ingest(settings, log_path)
    try:
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, log_path.read_text(errors="replace")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


# -- 1. kill -9 at seeded random moments ----------------------------------------------------------
KILL_SEEDS = (1, 2, 3)
# batches of 100: the stream takes several seconds once going, so the kills find it mid-way
KILL_RUN = SMALL | {"ingest_batch_max_events": 100}


def test_kill_9_three_times_at_seeded_random_moments_reaches_the_uninterrupted_end_state(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    events = make_history(n=5_000, users=100, seed=61)
    good = _good_payloads(events)
    bad = _bad_payloads(good[0][1], 150)
    topic = topic_factory("ingestkill3", partitions=3)
    _produce(kafka_bootstrap, topic, _interleave(good, bad, seed=0))
    good_ids = set(events.transaction_id)
    produced = len(good) + len(bad)

    ref = _settings(
        tmp_path / "ref",
        topic,
        kafka_bootstrap,
        ingest_group_id=f"ref-{topic}",
        ingest_dlq_topic=topic_factory("ingestkill3-refdlq", partitions=1),
        **KILL_RUN,
    )
    ingestor = build(ref)
    ingestor.run()
    ingestor.close()
    assert ingestor.totals["processed"] == len(good) and ingestor.totals["dlq"] == len(bad)

    crash = _settings(
        tmp_path / "crash",
        topic,
        kafka_bootstrap,
        ingest_dlq_topic=topic_factory("ingestkill3-dlq", partitions=1),
        # a killed member holds its partitions until its session expires: the shortest the broker allows
        ingest_session_timeout_seconds=6,
        **KILL_RUN,
    )
    log_path = tmp_path / "ingest.log"
    kills: list[tuple[int, float, int]] = []  # seed, delay after this run's first offline part, events offline then
    for seed in KILL_SEEDS:
        before = len(history.parts(crash.data_dir, "transactions"))
        proc = _spawn_ingest(crash, log_path)
        try:
            deadline = time.monotonic() + 90
            # this run's first offline part (or its end, if the runs before it left nothing to do)
            while len(history.parts(crash.data_dir, "transactions")) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, f"ingest made no progress\n{_tail(log_path)}"
                time.sleep(0.05)
            delay = random.Random(seed).uniform(0.0, 1.5)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        kills.append((seed, delay, len(_history_rows(crash.data_dir))))
    assert 0 < kills[0][2] < len(good), f"the first kill did not land mid-stream: {kills}"

    proc = _spawn_ingest(crash, log_path)
    try:
        assert proc.wait(timeout=120) == 0, _tail(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()

    _account(crash, kafka_bootstrap, good_ids, produced, _bad_offsets(kafka_bootstrap, topic, good_ids))
    ref_ids = sorted(_history_rows(ref.data_dir).transaction_id)
    assert sorted(_history_rows(crash.data_dir).transaction_id) == ref_ids, f"history after kills {kills}"
    good_events = _history_rows(ref.data_dir)
    for run in (ref, crash):  # both serve what training computes over the same events
        assert_serves_the_history(run, good_events)


# -- 2. a full disk on the offline path -----------------------------------------------------------
DISK_BYTES = 16 * 1024 * 1024
ROOM_BYTES = 100 * 1024  # left free: about half of what the events take in the history (200 KB in one file)


@contextlib.contextmanager
def _small_disk(path: Path) -> Iterator[Path]:
    """A size-limited file system (tmpfs) at `path`, unmounted afterwards; skips where none can be made."""
    path.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a size-limited file system: mounting a tmpfs takes root and mount(8)")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if made.returncode != 0:
        pytest.skip(f"this machine cannot make a small tmpfs for the full-disk fault: {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False, timeout=30)


def _fill(disk: Path, leave: int) -> Path:
    """A filler file taking all but `leave` bytes of the disk's free space."""
    filler = disk / "filler.bin"
    size = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1024 * 1024)
        while size > 0:
            size -= fh.write(chunk[: min(size, len(chunk))])
    return filler


def test_full_disk_on_the_offline_path_stops_clearly_commits_nothing_past_it_then_resumes_exactly(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _small_disk(tmp_path / "disk") as disk:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (disk / "history").mkdir()
        (data_dir / "history").symlink_to(disk / "history")  # the raw history's folder, on the small disk
        offline_dir = disk / "offline"
        monkeypatch.setenv("FRAUD_FEAST_OFFLINE_DIR", str(offline_dir))  # for the spawned ingest
        events = make_history(n=5_000, users=100, seed=62)
        payloads = _good_payloads(events)
        topic = topic_factory("ingestdisk", partitions=3)
        _produce(kafka_bootstrap, topic, payloads)
        settings = _settings(data_dir, topic, kafka_bootstrap, feast_offline_dir=offline_dir, **SMALL)
        S.apply(settings)  # the views' seed parts first: the room left is for the events
        filler = _fill(disk, ROOM_BYTES)
        log_path = tmp_path / "ingest.log"

        rc, text = _run_to_exit(settings, log_path)
        # stopped (exit 3) with one clear line naming the path and ENOSPC, no traceback
        assert rc == 3, text[-4000:]
        failed = re.search(r"ingest stopped: offline write to (\S+) failed: no space left on device \(ENOSPC\)", text)
        assert failed, text[-4000:]
        folders = [history.folder(data_dir, "transactions")]
        assert failed.group(1) in {str(f) for f in folders}
        assert "Traceback" not in text, text[-4000:]

        # the offline store is not corrupt: nothing staged is left, every visible part reads whole
        for folder in folders:
            assert not list(atomic.staging_folder(folder).glob("*")), folder
            pq.read_table(folder)
        written = set(_history_rows(data_dir).get("transaction_id", pd.Series(dtype=str)))
        assert 0 < len(written) < len(payloads), "the disk filled before any batch, or never"
        # no offset committed past an event that is not written
        ids_at = {
            (r.partition, r.offset): json.loads(r.value)["transaction_id"] for r in _read_topic(kafka_bootstrap, topic)
        }
        committed = _committed(kafka_bootstrap, settings.ingest_group_id)
        behind = {ids_at[(p, o)] for (p, o) in ids_at if o < committed.get(p, 0)}
        assert behind <= written, f"{len(behind - written)} events committed in Kafka but not written offline"

        # the operator frees space; the restart resumes exactly
        filler.unlink()
        proc = _spawn_ingest(settings, log_path)
        try:
            assert proc.wait(timeout=120) == 0, _tail(log_path)
        finally:
            if proc.poll() is None:
                proc.kill()
        _account(settings, kafka_bootstrap, set(events.transaction_id), len(payloads), set())
        _assert_equals_backfill(settings, events)


# -- 3. Redis down and back -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on 127.0.0.1, persisted as compose's is (append-only file)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.home)),
                *("--appendonly", "yes", "--save", "60", "1000"),  # docker-compose.yml's redis command
                *("--logfile", str(self.home / "redis.log")),
            ],
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        """As `docker compose stop` does: SIGTERM (Redis writes its append-only file and exits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Redis from Debian's packages, installed by infra/compose_emulation.sh when missing."""
    if shutil.which("redis-server") is None:
        done = subprocess.run([str(EMULATION), "install"], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"could not install redis-server: {done.stderr[-2000:]}"
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_down_and_back_mid_stream_loses_nothing(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisServer,
) -> None:
    events = make_history(n=4_000, users=100, seed=63)
    payloads = _good_payloads(events)
    topic = topic_factory("ingestredis", partitions=3)
    _produce(kafka_bootstrap, topic, payloads[:2_000])
    # the compose online store, for the spawned ingest too
    monkeypatch.setenv("FRAUD_FEAST_MODE", "compose")
    monkeypatch.setenv("FRAUD_FEAST_REDIS_URL", redis_server.url)
    data_dir = tmp_path / "data"
    settings = _settings(
        data_dir,
        topic,
        kafka_bootstrap,
        feast_mode="compose",
        feast_redis_url=redis_server.url,
        ingest_idle_exit_seconds=0,  # runs until stopped: how long Redis is away is no matter
        ingest_store_wait_seconds=90,
        **SMALL,
    )
    log_path = tmp_path / "ingest.log"
    proc = _spawn_ingest(settings, log_path)
    try:
        _wait_parts(data_dir, 1)
        redis_server.stop()
        _produce(kafka_bootstrap, topic, payloads[2_000:])  # events arrive while Redis is away
        time.sleep(5)
        assert proc.poll() is None, f"ingest died while Redis was away\n{_tail(log_path)}"
        redis_server.start()
        deadline = time.monotonic() + 90
        while len(history.read(data_dir, "transactions")) < len(payloads):
            assert proc.poll() is None, _tail(log_path)
            assert time.monotonic() < deadline, f"ingest did not finish after Redis came back\n{_tail(log_path)}"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # finishes its batch, commits, closes
        assert proc.wait(timeout=60) == 0, _tail(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text(errors="replace")
    assert f"online store Redis at {redis_server.url} unreachable" in text, text[-4000:]
    assert f"online store Redis at {redis_server.url} is back" in text, text[-4000:]
    _account(settings, kafka_bootstrap, set(events.transaction_id), len(payloads), set())
    _assert_equals_backfill(settings, events)


def test_a_replay_behind_the_watermark_is_a_duplicate_not_a_late_event(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """What a crash leaves to replay (written offline, offsets not committed) is skipped, never dead-lettered.

    Events spread over 20 days, all replayed (a new consumer group reads them from the start) after the
    history holds them: most are days behind the rebuilt watermark, beyond the allowed lateness (1 day),
    and within the state's retention (31 days), which bounds how far back a replay is recognised."""
    events = make_history(n=2_000, users=40, seed=64)
    events = events[events.event_time > events.event_time.max() - pd.Timedelta(days=20)].reset_index(drop=True)
    topic = topic_factory("ingestreplay", partitions=3)
    _produce(kafka_bootstrap, topic, _good_payloads(events))
    dlq = topic_factory("ingestreplay-dlq", partitions=1)
    first = build(_settings(tmp_path, topic, kafka_bootstrap, ingest_dlq_topic=dlq, ingest_idle_exit_seconds=3.0))
    first.run()
    first.close()
    assert first.totals["processed"] == len(events)
    again = build(
        _settings(
            tmp_path,
            topic,
            kafka_bootstrap,
            ingest_dlq_topic=dlq,
            ingest_group_id=f"again-{topic}",
            ingest_idle_exit_seconds=3.0,
        )
    )
    again.run()
    again.close()
    assert again.totals["dlq"] == 0 and again.totals["processed"] == 0
    assert again.totals["duplicates"] == len(events)
    _account(again.settings, kafka_bootstrap, set(events.transaction_id), len(events), set())


def test_redis_away_past_the_wait_stops_clearly_committing_nothing(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = make_history(n=500, users=20, seed=65)
    topic = topic_factory("ingestnoredis", partitions=3)
    _produce(kafka_bootstrap, topic, _good_payloads(events))
    url = f"127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("FRAUD_FEAST_MODE", "compose")
    monkeypatch.setenv("FRAUD_FEAST_REDIS_URL", url)
    settings = _settings(
        tmp_path, topic, kafka_bootstrap, feast_mode="compose", feast_redis_url=url, ingest_store_wait_seconds=3
    )
    log_path = tmp_path / "ingest.log"
    rc, text = _run_to_exit(settings, log_path)
    assert rc == 3, text[-4000:]
    assert f"ingest stopped: online store Redis at {url} unreachable for" in text, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert history.parts(tmp_path, "transactions") == []
    assert all(offset <= 0 for offset in _committed(kafka_bootstrap, settings.ingest_group_id).values())
