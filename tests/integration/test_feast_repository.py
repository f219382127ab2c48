"""The feature repository as Feast users drive it: `feature_store.yaml`, the `feast` CLI, and an apply
that deletes what the definitions no longer hold. Real Feast, real registry and SQLite files."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from feature_repo.repo import ALL_VIEWS, REPO_DIR, SERVICE_NAME
from fraud import store as S
from fraud.settings import FeatureStoreSettings

pytestmark = pytest.mark.integration
FEAST = str(Path(sys.executable).with_name("feast"))


def _cli_yaml(settings: FeatureStoreSettings, tmp: Path) -> Path:
    """The repository's feature_store.yaml with this store's registry and online paths (what `-f` takes)."""
    raw = yaml.safe_load(S.FEATURE_STORE_YAML.read_text())
    raw["registry"]["path"] = str(settings.registry_path.resolve())
    raw["online_store"]["path"] = str(settings.online_path.resolve())
    path = tmp / "feature_store.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _feast(settings: FeatureStoreSettings, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"FRAUD_DATA_DIR": str(settings.data_dir.resolve())}
    cmd = [FEAST, "-c", str(REPO_DIR), "-f", str(_cli_yaml(settings, tmp)), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_services_read_the_repositorys_feature_store_yaml(tmp_path: Path) -> None:
    """The services' configuration is the file's, but for the locations their settings give."""
    raw = yaml.safe_load(S.FEATURE_STORE_YAML.read_text())
    config = S.repo_config(FeatureStoreSettings(data_dir=tmp_path))
    assert (config.project, config.provider) == (raw["project"], raw["provider"])
    assert config.entity_key_serialization_version == raw["entity_key_serialization_version"]
    assert config.registry.registry_type == raw["registry"]["registry_type"]
    assert config.online_store.type == raw["online_store"]["type"]
    assert Path(config.online_store.path) == (tmp_path / "feast" / "online.db").resolve()


def test_the_feast_cli_sees_the_store_the_services_applied(tmp_path: Path) -> None:
    """`feast plan` on the repository after the services' apply: no change to the registry (same
    definitions, same relative source paths); `feast feature-views list` names every view. (Its infra
    plan lists the online tables: the SDK's apply, unlike the CLI's, records no infra in the registry.)"""
    settings = FeatureStoreSettings(data_dir=tmp_path / "data")
    S.apply(settings)
    plan = _feast(settings, tmp_path, "plan")
    assert plan.returncode == 0, plan.stderr[-2000:]
    listed = _feast(settings, tmp_path, "feature-views", "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    for view in ALL_VIEWS:
        assert view in listed.stdout
    assert "No changes to registry" in plan.stdout, plan.stdout[-2000:]


def test_apply_deletes_what_the_definitions_no_longer_hold(tmp_path: Path) -> None:
    settings = FeatureStoreSettings(data_dir=tmp_path)
    store = S.apply(settings)
    retired = FeatureView(
        name="retired_view",
        entities=[Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)],
        ttl=timedelta(days=1),
        schema=[Field(name="old_feature", dtype=Float64)],
        source=FileSource(name="retired_source", path=str(tmp_path / "retired"), timestamp_field="event_timestamp"),
    )
    store.apply([retired])
    assert "retired_view" in {v.name for v in S.open_store(settings).list_feature_views()}
    S.apply(settings)
    store = S.open_store(settings)
    assert {v.name for v in store.list_feature_views()} == set(ALL_VIEWS)
    assert "retired_source" not in {s.name for s in store.list_data_sources()}
    assert [s.name for s in store.list_feature_services()] == [SERVICE_NAME]


def test_offline_sources_resolve_against_the_repository_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source paths are relative to feature_repo/ (as Feast resolves them); code that reads a view's
    source folder itself must resolve it the same way, whatever the working directory (a fresh clone
    under /tmp, running from its root, read `../../pytest-of-root/...` as `/pytest-of-root/...`)."""
    from pipelines.training_set import _offline_parts

    settings = FeatureStoreSettings(data_dir=tmp_path / "data")
    store = S.apply(settings)
    elsewhere = tmp_path / "a" / "b" / "c" / "d"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    for view in ALL_VIEWS:
        (folder,) = {p.parent for p in _offline_parts(store, view)} or {settings.offline_dir / view}
        assert folder.resolve() == (settings.offline_dir / view).resolve(), view
