"""Feast definitions. Feature names come from `fraud.features`, the one place that computes them.

Streaming views (user, address, device, ip) hold each entity's state, not finished features: its
recent events, the fraud label times of its transactions and a carry of older totals, each an
`Array(Float64)` field (`fraud.feature_state`). The scorer reads that row and finishes every window
at the request's instant (`fraud.aggregates`); training evaluates the same functions over the event
history at each transaction's time, so these views hold nothing offline (their batch sources are an
empty Parquet folder Feast requires). They are written straight to the online store by the ingest
service and the backfill. Reference views (account, address_list) are point-in-time rows read
offline by Feast's join and served online as they are.

Times (`signup_time`) are `Int64` fields of microseconds since the epoch (UTC): Feast's
`UnixTimestamp` value holds whole seconds online while the offline Parquet keeps microseconds.
`fraud.store` turns them back into UTC timestamps on read.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, FeastType, Float64, Int64

from fraud import features as F

SERVICE_NAME = "fraud_detection_v1"
TTL = timedelta(days=3650)  # rows stay valid until replaced (windows are finished at request time)

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="exchange account")
address = Entity(
    name="address", join_keys=["destination_address"], value_type=ValueType.STRING, description="on-chain address"
)
device = Entity(name="device", join_keys=["device_id"], value_type=ValueType.STRING, description="device fingerprint")
ip = Entity(name="ip", join_keys=["ip_address"], value_type=ValueType.STRING, description="client IP address")


def state_fields(kind: str) -> list[str]:
    """The array fields of an entity kind's streaming view: its events, carry (and fraud label times)."""
    prefix = "user" if kind == "user" else kind
    return [f"{prefix}_events", f"{prefix}_carry"] + ([] if kind == "user" else [f"{prefix}_labels"])


STREAMING_VIEWS: dict[str, tuple[Entity, list[str]]] = {
    "user_activity": (user, state_fields("user")),
    "address_activity": (address, state_fields("address")),
    "device_activity": (device, state_fields("device")),
    "ip_activity": (ip, state_fields("ip")),
}
KIND_OF_VIEW = {view: view.removesuffix("_activity") for view in STREAMING_VIEWS}
REFERENCE_VIEWS: dict[str, tuple[Entity, list[str]]] = {
    "account": (user, F.ACCOUNT_FEATURES),
    "address_list": (address, F.ADDRESS_LIST_FEATURES),
}
ALL_VIEWS = {**STREAMING_VIEWS, **REFERENCE_VIEWS}


def is_time(feature: str) -> bool:
    """A timestamp feature (stored as Int64 microseconds since the epoch, read back as a UTC time)."""
    return feature.endswith("_time")


def is_array(feature: str) -> bool:
    """A streaming view's state field (an array of float64)."""
    return feature.endswith(("_events", "_carry", "_labels"))


def feast_type(feature: str) -> FeastType:
    """The Feast type of a field, from its name."""
    if is_array(feature):
        return Array(Float64)
    if is_time(feature) or feature.startswith("on_") or feature == "kyc_tier":
        return Int64
    return Float64


REPO_DIR = Path(__file__).resolve().parent


def cli_offline_dir() -> Path:
    """The offline folder `feast -c feature_repo` works on: FRAUD_DATA_DIR's (relative: to the project
    root, where the services run), by default data/ (what `make demo` writes)."""
    data = Path(os.environ.get("FRAUD_DATA_DIR", "data"))
    return (data if data.is_absolute() else REPO_DIR.parent / data) / "offline"


def view_path(offline_dir: Path, view: str) -> Path:
    """The folder of Parquet part files that holds one view's offline rows."""
    return offline_dir / view


def definitions(offline_dir: Path) -> list[Any]:
    """Every Feast object of the repository, with offline sources under `offline_dir` (relative to this
    folder, as Feast resolves them: the same definitions whether `feast` or the services apply them)."""
    objects: list[Any] = [user, address, device, ip]
    views: list[Any] = []
    for name, (entity, _) in ALL_VIEWS.items():
        batch = FileSource(
            name=f"{name}_offline",
            path=os.path.relpath(view_path(offline_dir, name).resolve(), REPO_DIR),
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
            schema=[Field(name=field, dtype=feast_type(field)) for field in ALL_VIEWS[name][1]],
            source=source,
            online=True,
        )
        views.append(view)
    objects += views
    objects.append(FeatureService(name=SERVICE_NAME, features=views))
    return objects


# `feast -c feature_repo plan | apply | ui` collect this module's Feast objects: the definitions above,
# over the data folder (`cli_offline_dir`).
_DEFAULT = {obj.name: obj for obj in definitions(cli_offline_dir())}
user_activity, address_activity = _DEFAULT["user_activity"], _DEFAULT["address_activity"]
device_activity, ip_activity = _DEFAULT["device_activity"], _DEFAULT["ip_activity"]
account, address_list = _DEFAULT["account"], _DEFAULT["address_list"]
user_activity_push, address_activity_push = _DEFAULT["user_activity_push"], _DEFAULT["address_activity_push"]
device_activity_push, ip_activity_push = _DEFAULT["device_activity_push"], _DEFAULT["ip_activity_push"]
fraud_detection_v1 = _DEFAULT[SERVICE_NAME]
