"""The scorer's Feast edge: the online rows of a micro-batch, with a timeout and a breaker.

A network store (Redis) is read view by view through Feast's provider (`online_read`, the call
`FeatureStore.get_online_features` makes per view); the embedded SQLite store in one query for all
views (below). Either way the values go straight from their protos into numpy columns, one pass per
view. That skips the SDK's response assembly (entity checks, typed response protos, per-value
conversion), which cost about two thirds of a read here. A test checks both paths return the values
the SDK returns, and the one-query path the event times the provider returns.

A network store (Redis) is read on a helper thread so a hung connection costs at most the timeout.
The embedded SQLite store is a local file in WAL mode (readers never wait for the writer), so it is
read on the caller's thread: the hop to a helper thread and back cost about 0.3 ms a read here.
And it is read in one query for all six views (`_SqliteViews`): Feast's SQLite store keeps a table
per view, and the Python around each of its per-view queries cost more than the query (six reads
of one key: ~0.43 ms through the provider, ~0.2 ms as one query). The query uses Feast's table names
(`compute_table_id`), key serialisation and row layout, on its own read connection to the same file;
the same test checks it against `get_online_features`. Only Feast's public names are used
(`tests/unit/test_feast_usage.py`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.repo import ALL_VIEWS, SERVICE_NAME, is_array, is_time
from fraud.contracts import Transaction
from fraud.store import entity_key, provider_of
from services.scorer.core import VIEW_KEYS, OnlineRows

log = logging.getLogger(__name__)

ENTITY_KEYS = ("user_id", "device_id", "ip_address", "destination_address")
# "" marks an absent entity (ids have min_length=1, so it is never a real key): its views are not read.
ABSENT = ""
NAT = np.iinfo(np.int64).min  # datetime64's NaT as an integer


def _scalar(v: Any) -> Any:
    """A Feast ValueProto's Python value (None when absent or null)."""
    if v is None:
        return None
    kind = v.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(v, kind)


def _numbers(found: list[dict[str, Any] | None], names: list[str]) -> np.ndarray:
    """Numeric features of one view as an (n, len(names)) float64 block, NaN where absent."""
    block = np.full((len(found), len(names)), np.nan)
    for i, feats in enumerate(found):
        if feats is not None:
            block[i] = [np.nan if (x := _scalar(feats.get(n))) is None else x for n in names]
    return block


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at `pos`: its value and the position after it."""
    value, shift = 0, 0
    while True:
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _doubles(value: ValueProto) -> np.ndarray:
    """A `double_list_val` as float64, read from its protobuf wire form without a Python float per
    element: field 15 (length-delimited) holding a DoubleList whose field 1 is the packed doubles."""
    raw = value.SerializeToString()
    size, pos = _varint(raw, 1)  # after the one-byte tag of field 15
    if size == 0:
        return np.zeros(0)
    count, pos = _varint(raw, pos + 1)  # after the one-byte tag of field 1
    return np.frombuffer(raw, dtype="<f8", count=count // 8, offset=pos)


def _arrays(found: list[dict[str, Any] | None], field: str) -> list[np.ndarray | None]:
    """An array field (a streaming view's state) per row: float64 values, None where absent."""
    out: list[np.ndarray | None] = []
    for feats in found:
        value = None if feats is None else feats.get(field)
        if value is None or value.WhichOneof("val") != "double_list_val":
            out.append(None)
        else:
            out.append(_doubles(value))
    return out


def _times(found: list[dict[str, Any] | None], name: str) -> np.ndarray:
    """A time feature (Int64 microseconds since the epoch, `feature_repo.repo`) as datetime64[us], NaT where absent."""
    micros = [NAT if feats is None or (x := _scalar(feats.get(name))) is None else x for feats in found]
    return np.array(micros, dtype=np.int64).astype("datetime64[us]")


def _quote(identifier: str) -> str:
    """A SQL identifier, quoted (embedded double quotes doubled): Feast's SQLite table names."""
    return '"' + identifier.replace('"', '""') + '"'


def _utc(ts: datetime) -> datetime:
    """Feast's row timestamp as an aware UTC datetime (its stores return naive UTC or aware values)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class _ViewPlan:
    """One view to read: its Feast definition and its served fields, split by how they convert."""

    def __init__(self, view: str, feature_view: Any, names: list[str]) -> None:
        self.feature_view = feature_view
        self.names = names
        self.arrays = [n for n in names if is_array(n)]
        self.times = [n for n in names if is_time(n)]
        self.numeric = [n for n in names if not is_array(n) and not is_time(n)]


Found = list[tuple[datetime | None, dict[str, Any] | None]]  # per key: (event time, feature -> ValueProto)


class _SqliteViews:
    """Feast's SQLite online tables, every view read in one UNION ALL query (see the module doc)."""

    def __init__(self, store: FeatureStore, plans: dict[str, _ViewPlan]) -> None:
        config = store.config
        versioned = config.registry.enable_online_feature_view_versioning
        self._tables = {
            view: _quote(compute_table_id(config.project, plan.feature_view, versioned)) for view, plan in plans.items()
        }
        self._version = config.entity_key_serialization_version
        # The same file Feast writes (WAL: this reader never waits for the writer); it only reads.
        path = Path(config.online_store.path)
        path = path if path.is_absolute() else Path(config.repo_path or ".") / path
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)

    def read(self, keys: dict[str, list[EntityKeyProto]]) -> dict[str, Found]:
        parts: list[str] = []
        args: list[bytes] = []
        blobs: dict[str, list[bytes]] = {}
        for i, (view, table) in enumerate(self._tables.items()):
            if keys.get(view):
                blobs[view] = [
                    serialize_entity_key(k, entity_key_serialization_version=self._version) for k in keys[view]
                ]
                marks = ",".join("?" * len(blobs[view]))
                # event_ts holds epoch seconds; cast, it skips the sqlite3 converter (converted below as Feast does).
                # `table` is Feast's own quoted table name and the keys are bound parameters: nothing from a request.
                parts.append(
                    f"SELECT {i}, entity_key, feature_name, value, CAST(event_ts AS INTEGER) FROM {table} "  # noqa: S608
                    f"WHERE entity_key IN ({marks})"
                )
                args += blobs[view]
        if not parts:
            return {}
        views = list(self._tables)
        rows: dict[tuple[str, bytes], tuple[datetime, dict[str, Any]]] = {}
        for i, key, name, value_bin, ts in self._conn.execute(" UNION ALL ".join(parts), args).fetchall():
            value = ValueProto()
            value.ParseFromString(value_bin)
            entry = rows.get((views[i], key))
            if entry is None:
                # Feast reads the naive local time sqlite stored and labels it UTC: the same here.
                entry = rows[(views[i], key)] = (datetime.fromtimestamp(ts).replace(tzinfo=UTC), {})
            entry[1][name] = value
        return {view: [rows.get((view, b), (None, None)) for b in view_blobs] for view, view_blobs in blobs.items()}


class StoreUnavailable(RuntimeError):
    """The online store did not answer (error or timeout)."""


class OnlineFeatureReader:
    """Reads a batch's online rows; after a failure it skips the store for `retry_s` (fail fast, no pile-up)."""

    def __init__(self, store: FeatureStore, timeout_s: float, retry_s: float, per_view: bool = False) -> None:
        """`per_view`: read SQLite view by view through Feast's provider too, the path other stores take."""
        self._store = store
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._down_until = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast")
        service = store.get_feature_service(SERVICE_NAME, allow_cache=True)
        served = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        self._views = {view: _ViewPlan(view, store.get_feature_view(view), served[view]) for view in ALL_VIEWS}
        self._provider = provider_of(store)  # Feast's per-view online read (see the module doc)
        self._inline = store.config.online_store.type == "sqlite"  # local file: no helper thread (module doc)
        self._sqlite = _SqliteViews(store, self._views) if self._inline and not per_view else None

    @property
    def healthy(self) -> bool:
        """False while the breaker is open after a failure."""
        return time.monotonic() >= self._down_until

    def read(self, txns: Sequence[Transaction]) -> OnlineRows:
        """Online rows for the transactions' entities; raises StoreUnavailable when the store is down."""
        if not self.healthy:
            raise StoreUnavailable("online store marked down after a recent failure")
        entity_rows = [{k: getattr(t, k) or ABSENT for k in ENTITY_KEYS} for t in txns]
        try:
            if self._inline:
                started = time.monotonic()
                rows = self._fetch(entity_rows)
                if time.monotonic() - started > self._timeout_s:  # too slow to trust: back off like a timeout
                    self._trip(f"read took longer than {self._timeout_s * 1000:.0f} ms")
                return rows
            return self._pool.submit(self._fetch, entity_rows).result(timeout=self._timeout_s)
        except FutureTimeout as exc:
            self._trip(f"timed out after {self._timeout_s * 1000:.0f} ms")
            raise StoreUnavailable("online store timed out") from exc
        except Exception as exc:
            self._trip(repr(exc))
            raise StoreUnavailable("online store failed") from exc

    def warm_up(self) -> bool:
        """One read without a timeout (the first Feast call loads the registry and opens the store)."""
        try:
            self._fetch([dict.fromkeys(ENTITY_KEYS, "warm-up")])
            return True
        except Exception as exc:
            self._trip(repr(exc))
            return False

    def _trip(self, why: str) -> None:
        if self.healthy:
            log.warning("online store unavailable (%s); skipping it for %.1fs", why, self._retry_s)
        self._down_until = time.monotonic() + self._retry_s

    def _fetch(self, entity_rows: list[dict[str, Any]]) -> OnlineRows:
        values: dict[str, Any] = {}
        as_of: dict[str, list[datetime | None]] = {}
        n = len(entity_rows)
        wanted = {
            view: [i for i, row in enumerate(entity_rows) if row[VIEW_KEYS[view]] != ABSENT] for view in self._views
        }
        keys = {
            view: [entity_key(VIEW_KEYS[view], entity_rows[i][VIEW_KEYS[view]]) for i in rows]
            for view, rows in wanted.items()
            if rows
        }
        if self._sqlite is not None:
            read = self._sqlite.read(keys)
        else:
            config = self._store.config
            read = {
                view: self._provider.online_read(
                    config, self._views[view].feature_view, view_keys, self._views[view].names
                )
                for view, view_keys in keys.items()
            }
        for view, plan in self._views.items():
            stamps: list[datetime | None] = [None] * n
            found: list[dict[str, Any] | None] = [None] * n
            for i, (ts, feats) in zip(wanted[view], read.get(view, []), strict=True):
                stamps[i] = None if ts is None else _utc(ts)
                found[i] = feats
            as_of[view] = stamps
            if plan.numeric:
                block = _numbers(found, plan.numeric)
                for j, name in enumerate(plan.numeric):
                    values[name] = block[:, j]
            for name in plan.arrays:
                values[name] = _arrays(found, name)
            for name in plan.times:
                values[name] = _times(found, name)
        return OnlineRows(values=values, as_of=as_of)

    def close(self) -> None:
        """Stop the reader thread (does not wait for a hung call)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
