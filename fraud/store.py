"""The Feast edge: build the store from settings, apply the repository, write and read features."""

from __future__ import annotations

import functools
import logging
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig
from feast.data_source import DataSource
from feast.infra.provider import Provider, get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete

from feature_repo.repo import ALL_VIEWS, REPO_DIR, SERVICE_NAME, definitions, feast_type, is_array, is_time, view_path
from fraud.atomic import AtomicBatch, write_part
from fraud.settings import FeatureStoreSettings

log = logging.getLogger(__name__)


FEATURE_STORE_YAML = REPO_DIR / "feature_store.yaml"


def repo_config(settings: FeatureStoreSettings) -> RepoConfig:
    """The repository's `feature_store.yaml` (what `feast -c feature_repo` reads), with its locations
    taken from `settings`: the registry and SQLite files under the data folder, or Redis in compose mode."""
    settings.registry_path.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = yaml.safe_load(FEATURE_STORE_YAML.read_text())
    raw["project"] = settings.feast_project
    raw["registry"]["path"] = str(settings.registry_path.resolve())
    if settings.feast_mode == "compose":
        raw["online_store"] = {"type": "redis", "connection_string": settings.feast_redis_url}
    else:
        settings.online_path.parent.mkdir(parents=True, exist_ok=True)
        raw["online_store"]["path"] = str(settings.online_path.resolve())
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    return config


def enable_sqlite_wal(path: Path) -> None:
    """WAL lets the scorer read while ingest writes (the setting persists in the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=30) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"could not enable WAL on {path} (journal_mode={mode})")


def open_store(settings: FeatureStoreSettings) -> FeatureStore:
    """A FeatureStore for `settings`, without applying anything."""
    return FeatureStore(config=repo_config(settings))


def apply(settings: FeatureStoreSettings) -> FeatureStore:
    """`feast apply` for the chosen configuration: register every object, create online tables, and
    delete what the definitions no longer hold (Feast's own plan of keeps, updates and deletions)."""
    for name in ALL_VIEWS:
        view_path(settings.offline_dir, name).mkdir(parents=True, exist_ok=True)
    ensure_offline_seed(settings.offline_dir)
    store = open_store(settings)
    repo = repo_contents(definitions(settings.offline_dir))
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, repo)
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    if to_delete:
        log.info("deleted from the registry: %s", ", ".join(sorted(o.name for o in to_delete)))
    if settings.feast_mode == "embedded":
        enable_sqlite_wal(settings.online_path)
    log.info("applied feature repository %s (%s mode)", settings.feast_project, settings.feast_mode)
    return store


def repo_contents(objects: list[Any]) -> RepoContents:
    """Feast objects as the `RepoContents` that `feast apply` plans from."""
    sources: list[DataSource] = []
    for obj in objects:  # every source once: the top-level ones and those the views hold
        held = [obj] if isinstance(obj, DataSource) else []
        if isinstance(obj, FeatureView):
            held = [s for s in (obj.batch_source, obj.stream_source) if s is not None]
        sources += [s for s in held if all(s.name != known.name for known in sources)]
    return RepoContents(
        projects=[],
        data_sources=sources,
        feature_views=[o for o in objects if isinstance(o, FeatureView)],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[o for o in objects if isinstance(o, Entity)],
        feature_services=[o for o in objects if isinstance(o, FeatureService)],
        permissions=[],
    )


@functools.cache
def offline_schema(view: str) -> pa.Schema:
    """The Arrow schema of a view's offline Parquet files: entity key, event time, its Feast fields."""
    from feast.types import Float64, Int64

    arrow: dict[Any, pa.DataType] = {Float64: pa.float64(), Int64: pa.int64()}
    entity, fields = ALL_VIEWS[view]
    columns = [(entity.join_key, pa.string()), ("event_timestamp", pa.timestamp("us", "UTC"))]
    for field in fields:
        columns.append((field, pa.list_(pa.float64()) if is_array(field) else arrow[feast_type(field)]))
    return pa.schema(columns)


def time_micros(values: pd.Series) -> pd.Series:
    """A time feature as stored: Int64 microseconds since the epoch (nullable; see `feature_repo.repo`)."""
    times = pd.to_datetime(values, utc=True).dt.as_unit("us")
    return pd.Series(pd.DatetimeIndex(times).asi8, index=values.index, dtype="Int64").mask(times.isna())


def micros_time(values: Any) -> pd.Series:
    """Stored microseconds (int, or float/None/NaN where no row) back to UTC times (NaT where missing).

    Exact: the microseconds go straight to datetime64[us], never through float nanoseconds."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":  # already times
        return pd.to_datetime(series, utc=True)
    numbers = pd.to_numeric(series, errors="coerce").astype("Int64")  # floats hold < 2**53 us exactly
    missing = numbers.isna().to_numpy()
    us = numbers.to_numpy(dtype=np.int64, na_value=0).astype("datetime64[us]")
    us[missing] = np.datetime64("NaT")
    return pd.Series(pd.DatetimeIndex(us).tz_localize("UTC"), index=series.index)


def to_table(view: str, rows: pd.DataFrame) -> pa.Table:
    """Feature rows (a reference view's features) as the view's offline Parquet table."""
    schema = offline_schema(view)
    arrays = []
    for name in schema.names:
        column = time_micros(rows[name]) if is_time(name) else rows[name]
        arrays.append(pa.Array.from_pandas(column, type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def to_feast_frame(view: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows as the DataFrame `write_to_online_store` takes: one column per Feast field (times as micros)."""
    entity, fields = ALL_VIEWS[view]
    out: dict[str, Any] = {entity.join_key: rows[entity.join_key], "event_timestamp": rows["event_timestamp"]}
    for field in fields:
        out[field] = time_micros(rows[field]) if is_time(field) else rows[field]
    return pd.DataFrame(out, index=rows.index)


def times_back(view: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Stored time fields (microseconds) of a view back to UTC timestamps."""
    out = frame.copy()
    for field in ALL_VIEWS[view][1]:
        if is_time(field) and field in frame:
            out[field] = micros_time(frame[field])
    return out


def read_offline(settings: FeatureStoreSettings, view: str) -> pd.DataFrame:
    """A reference view's committed offline rows (what its Parquet folder holds, times as UTC timestamps)."""
    table = pq.read_table(view_path(settings.offline_dir, view), schema=offline_schema(view))
    return times_back(view, table.to_pandas())


def ensure_offline_seed(offline_dir: Path) -> None:
    """Each view folder needs one Parquet file with its schema before Feast can read it."""
    for name in ALL_VIEWS:
        folder = view_path(offline_dir, name)
        folder.mkdir(parents=True, exist_ok=True)
        if any(folder.glob("part-*.parquet")):
            continue
        pq.write_table(offline_schema(name).empty_table(), folder / "part-00000000-seed.parquet")


def write_offline(
    settings: FeatureStoreSettings,
    view: str,
    rows: pd.DataFrame,
    run_id: str | None = None,
    batch: AtomicBatch | None = None,
) -> Path:
    """Append one Parquet part file of `rows` to a view's offline folder (atomic rename, or staged in `batch`)."""
    table = to_table(view, rows)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    final = view_path(settings.offline_dir, view) / f"part-{stamp}-{run_id or uuid.uuid4().hex[:8]}.parquet"
    return write_part(final, table, batch)


def latest_per_entity(view: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The last row of each entity: what the online store must hold."""
    key = ALL_VIEWS[view][0].join_key
    return rows.sort_values("event_timestamp", kind="stable").drop_duplicates(key, keep="last")


def entity_key(join_key: str, value: str) -> EntityKeyProto:
    """The Feast entity key of one string-keyed entity (what the online stores index rows by)."""
    return EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)])


def online_rows(
    view: str, rows: pd.DataFrame
) -> list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]:
    """Rows as the records Feast's online stores write: entity key, field values, event time.

    What `write_to_online_store` builds from a DataFrame (a test checks the stored bytes are equal),
    without its per-value round trip through Arrow: an array field goes straight into a `DoubleList`
    proto, the other fields through Feast's own `python_values_to_proto_values`.
    """
    from feast.protos.feast.types.Value_pb2 import DoubleList
    from feast.type_map import python_values_to_proto_values

    entity, fields = ALL_VIEWS[view]
    keys = [entity_key(entity.join_key, k) for k in rows[entity.join_key].tolist()]
    columns: dict[str, list[ValueProto]] = {}
    for field in fields:
        if is_array(field):
            columns[field] = [ValueProto(double_list_val=DoubleList(val=np.asarray(v).tolist())) for v in rows[field]]
        else:
            column = time_micros(rows[field]) if is_time(field) else rows[field]
            values = column.astype(object).where(column.notna(), None).tolist()
            columns[field] = python_values_to_proto_values(values, feast_type(field).to_value_type())
    features = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    stamps = pd.DatetimeIndex(pd.to_datetime(rows["event_timestamp"], utc=True)).to_pydatetime().tolist()
    return list(zip(keys, features, stamps, [None] * len(keys), strict=True))


@functools.lru_cache(maxsize=16)
def provider_of(store: FeatureStore) -> Provider:
    """Feast's provider for a store (`feast.infra.provider.get_provider`), built once per store: the
    per-view online read and write that `get_online_features` and `write_to_online_store` end in."""
    return get_provider(store.config)


def write_online(
    store: FeatureStore, view: str, rows: pd.DataFrame, batch_rows: int = 5000, feature_view: FeatureView | None = None
) -> int:
    """Write the latest row per entity to the online store.

    Through Feast's provider (`online_write_batch`, the call `write_to_online_store` ends in, for
    SQLite and Redis alike) with records built by `online_rows`; straight to the view, not through its
    push source, which re-reads the registry on every push. The online store ends up the same. A
    caller writing often passes the `feature_view` it looked up once (a lookup costs ~6 ms).
    """
    latest = latest_per_entity(view, rows)
    feature_view = feature_view or store.get_feature_view(view, allow_registry_cache=True)
    provider = provider_of(store)
    for start in range(0, len(latest), batch_rows):
        records = online_rows(view, latest.iloc[start : start + batch_rows])
        provider.online_write_batch(store.config, feature_view, records, progress=None)
    return len(latest)


def online_features(store: FeatureStore, entity_rows: list[dict[str, Any]], view: str | None = None) -> pd.DataFrame:
    """Every field of the FeatureService (or of one view) for the given entity rows, through Feast's SDK."""
    if view is not None:
        refs: Any = [f"{view}:{field}" for field in ALL_VIEWS[view][1]]
    else:
        refs = store.get_feature_service(SERVICE_NAME, allow_cache=True)  # not a registry file read per call
    frame = store.get_online_features(features=refs, entity_rows=entity_rows).to_df()
    for name in [view] if view is not None else list(ALL_VIEWS):
        frame = times_back(name, frame)
    return frame
