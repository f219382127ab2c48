"""Feast definitions. Feature names come from `fraud.features`, the one place that computes them.

Streaming views (user, address, device, ip) are fed by PushSources whose batch sources are folders
of Parquet part files (one appended per micro-batch or backfill run: a cheap offline write).
Reference views (account, address_list) read batch files written by `fraud backfill`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import FeastType, Float64, Int64, String, UnixTimestamp

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


def feast_type(feature: str) -> FeastType:
    """The Feast type of a feature, from its name."""
    if feature.endswith(("_time", "_first_seen")):
        return UnixTimestamp
    if feature.startswith("known_"):
        return String
    if "_count_" in feature or feature.startswith(("distinct_", "on_")) or feature in ("kyc_tier", "txn_count_total"):
        return Int64
    if "_distinct_users_" in feature:
        return Int64
    return Float64


def view_path(offline_dir: Path, view: str) -> Path:
    """The folder of Parquet part files that holds one view's offline rows."""
    return offline_dir / view


def definitions(offline_dir: Path) -> list[Any]:
    """Every Feast object of the repository, with offline sources under `offline_dir`."""
    objects: list[Any] = [user, address, device, ip]
    views: list[Any] = []
    for name, (entity, names) in ALL_VIEWS.items():
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
            schema=[Field(name=f, dtype=feast_type(f)) for f in names],
            source=source,
            online=True,
        )
        views.append(view)
    objects += views
    objects.append(FeatureService(name=SERVICE_NAME, features=views))
    return objects
