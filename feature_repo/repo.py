"""Feast definitions. Feature names come from `fraud.features`, the one place that computes them.

Streaming views (user, address, device, ip) are fed by PushSources whose batch sources are folders
of Parquet part files (one appended per micro-batch or backfill run: a cheap offline write).
Reference views (account, address_list) read batch files written by `fraud backfill`.

Packed fields: the numbers of each streaming view (a user's windowed counts, sums and distincts,
balances and running totals; a counterparty's counts and risk) are stored as one `Array(Float64)`
field whose `members` tag names them in order. Feast's online stores keep one record per field, and
writing or reading one record costs about the same whatever its size: 116 features in 16 fields
instead of 116 cut the SQLite write per event and the read per request several times (measured by
`benchmarks/features.py` and `benchmarks/ingest.py`). Every feature keeps its name: `fraud.store`
packs on write and unpacks on read, so training, serving and the tests see the same named columns.

Times (`last_event_time`, `<kind>_first_seen`, `signup_time`) are `Int64` fields of microseconds since
the epoch (UTC), each its own field as before: Feast's `UnixTimestamp` value holds whole seconds
online while the offline Parquet keeps microseconds, so `seconds_since_prev_txn` and the ages would
differ between training and serving. `fraud.store` turns them back into UTC timestamps on read.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, FeastType, Float64, Int64, String

from fraud import features as F

SERVICE_NAME = "fraud_detection_v1"
TTL = timedelta(days=3650)  # rows stay valid until replaced; windows are part of the values

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="exchange account")
address = Entity(
    name="address", join_keys=["destination_address"], value_type=ValueType.STRING, description="on-chain address"
)
device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.STRING, description="device fingerprint")
ip = Entity(name="ip", join_keys=["ip_address"], value_type=ValueType.STRING, description="client IP address")

STREAMING_VIEWS: dict[str, tuple[Entity, list[str]]] = {
    "user_activity": (user, F.user_feature_names()),
    "address_activity": (address, F.counterparty_feature_names("address")),
    "device_activity": (device, F.counterparty_feature_names("device")),
    "ip_activity": (ip, F.counterparty_feature_names("ip")),
}
REFERENCE_VIEWS: dict[str, tuple[Entity, list[str]]] = {
    "account": (user, F.ACCOUNT_FEATURES),
    "address_list": (address, F.ADDRESS_LIST_FEATURES),
}
ALL_VIEWS = {**STREAMING_VIEWS, **REFERENCE_VIEWS}


def is_time(feature: str) -> bool:
    """A timestamp feature (stored as Int64 microseconds since the epoch, read back as a UTC time)."""
    return feature.endswith(("_time", "_first_seen"))


def feast_type(feature: str) -> FeastType:
    """The Feast type of a feature, from its name (a time: Int64 microseconds, see the module doc)."""
    if is_time(feature):
        return Int64
    if feature.startswith("known_"):
        return String
    if "_count_" in feature or feature.startswith(("distinct_", "on_")) or feature in ("kyc_tier", "txn_count_total"):
        return Int64
    if "_distinct_users_" in feature:
        return Int64
    return Float64


def _pack_of(view: str, feature: str) -> str | None:
    """The packed field that holds a numeric feature of a view (None: stored as its own field)."""
    if view in STREAMING_VIEWS:
        return f"{view.removesuffix('_activity')}_stats"
    return None  # reference views have two fields each: nothing to gain


def _fields(view: str) -> dict[str, list[str]]:
    """A view's Feast fields in order, each with the features it holds (one, or a pack's members)."""
    out: dict[str, list[str]] = {}
    for feature in ALL_VIEWS[view][1]:
        numeric = feast_type(feature) in (Int64, Float64) and not is_time(feature)  # times: a field each
        pack = _pack_of(view, feature) if numeric else None
        out.setdefault(pack or feature, []).append(feature)
    return out


# view -> Feast field -> the features it holds, in order. A field named like its only feature is unpacked.
FIELDS: dict[str, dict[str, list[str]]] = {view: _fields(view) for view in ALL_VIEWS}
PACKS: dict[str, dict[str, list[str]]] = {
    view: {field: members for field, members in fields.items() if [field] != members} for view, fields in FIELDS.items()
}


def field_type(view: str, field: str) -> FeastType:
    """The Feast type of a field: a pack is an array of float64, a single feature keeps its own type."""
    return Array(Float64) if field in PACKS[view] else feast_type(field)


def view_path(offline_dir: Path, view: str) -> Path:
    """The folder of Parquet part files that holds one view's offline rows."""
    return offline_dir / view


def definitions(offline_dir: Path) -> list[Any]:
    """Every Feast object of the repository, with offline sources under `offline_dir`."""
    objects: list[Any] = [user, address, device, ip]
    views: list[Any] = []
    for name, (entity, _) in ALL_VIEWS.items():
        batch = FileSource(
            name=f"{name}_offline",
            path=str(view_path(offline_dir, name).resolve()),
            timestamp_field="event_timestamp",
        )
        source: FileSource | PushSource = batch
        if name in STREAMING_VIEWS:
            source = PushSource(name=f"{name}_push", batch_source=batch)
            objects.append(source)
        view = FeatureView(
            name=name,
            entities=[entity],
            ttl=TTL,
            schema=[
                Field(
                    name=field,
                    dtype=field_type(name, field),
                    tags={"members": ",".join(members)} if field in PACKS[name] else {},
                )
                for field, members in FIELDS[name].items()
            ],
            source=source,
            online=True,
        )
        views.append(view)
    objects += views
    objects.append(FeatureService(name=SERVICE_NAME, features=views))
    return objects
