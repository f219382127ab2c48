"""The MLflow model registry for `crypto-fraud-detector`: versions, aliases, the promotion gate, rollback.

Every new version gets the alias `challenger`. It becomes `champion` only through the gate (its
training data passed the `training_set` suite and its test average precision beats the current
champion's on the same test period) or an explicit `promote`. The registered model keeps the list of
past champions in its `champion_history` tag, so `rollback` returns to the one before.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.bundle import MODEL_NAME

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "champion_history"
GATE_TAG = "gate"
DQ_TAG = "data_quality"


def client(tracking_uri: str) -> MlflowClient:
    """A registry client on the tracking store (embedded SQLite or the compose server)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(mc: MlflowClient, alias: str, name: str = MODEL_NAME) -> str | None:
    """The version an alias points at (None when the model or alias does not exist)."""
    try:
        return str(mc.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _history(mc: MlflowClient, name: str) -> list[str]:
    tags = mc.get_registered_model(name).tags
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def _set_champion(mc: MlflowClient, version: str, name: str, record: bool = True) -> None:
    previous = alias_version(mc, CHAMPION, name)
    if previous == version:
        return
    if record and previous is not None:
        mc.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*_history(mc, name), previous]))
    mc.set_registered_model_alias(name, CHAMPION, version)
    log.info("%s@champion: v%s -> v%s", name, previous, version)


@dataclass(frozen=True)
class GateDecision:
    """Whether a new version may serve, and why."""

    promote: bool
    reason: str
    challenger_ap: float
    champion_ap: float | None
    champion_version: str | None


def gate(data_ok: bool, challenger_ap: float, champion_ap: float | None, champion_version: str | None) -> GateDecision:
    """The promotion rule: data gates passed, and strictly better test AP than the champion (if any)."""
    if not data_ok:
        return GateDecision(False, "training data failed its suite", challenger_ap, champion_ap, champion_version)
    if champion_ap is None:
        return GateDecision(True, "no champion yet", challenger_ap, None, champion_version)
    if challenger_ap > champion_ap:
        reason = f"test AP {challenger_ap:.4f} > champion v{champion_version} {champion_ap:.4f}"
        return GateDecision(True, reason, challenger_ap, champion_ap, champion_version)
    reason = f"test AP {challenger_ap:.4f} <= champion v{champion_version} {champion_ap:.4f} on the same test period"
    return GateDecision(False, reason, challenger_ap, champion_ap, champion_version)


def register(
    mc: MlflowClient, model_uri: str, run_id: str, data_ok: bool, name: str = MODEL_NAME, model_id: str | None = None
) -> str:
    """Create a version from a logged model, tag it, and point `challenger` at it."""
    try:
        mc.get_registered_model(name)
    except MlflowException:
        mc.create_registered_model(name, description="LightGBM fraud classifier for crypto exchange transactions")
    mv = mc.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
    version = str(mv.version)
    mc.set_model_version_tag(name, version, DQ_TAG, "passed" if data_ok else "failed")
    mc.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s v%s (challenger)", name, version)
    return version


def apply_gate(mc: MlflowClient, version: str, decision: GateDecision, name: str = MODEL_NAME) -> None:
    """Record the gate's verdict on the version; promote it when the gate says so."""
    mc.set_model_version_tag(name, version, GATE_TAG, "passed" if decision.promote else "refused")
    mc.set_model_version_tag(name, version, "gate_reason", decision.reason)
    if decision.promote:
        _set_champion(mc, version, name)


def promote(mc: MlflowClient, version: str, name: str = MODEL_NAME, force: bool = False) -> str | None:
    """Make `version` the champion (explicit decision); refuses a version whose data failed its suite."""
    mv = mc.get_model_version(name, version)
    if mv.tags.get(DQ_TAG) == "failed" and not force:
        raise ValueError(f"v{version} was trained on data that failed its quality suite; refusing (force to override)")
    previous = alias_version(mc, CHAMPION, name)
    _set_champion(mc, str(version), name)
    mc.set_model_version_tag(name, str(version), "promoted_by", "manual")
    return previous


def rollback(mc: MlflowClient, name: str = MODEL_NAME) -> tuple[str | None, str]:
    """Point `champion` back at the previous champion; returns (from, to)."""
    history = _history(mc, name)
    if not history:
        raise ValueError(f"{name} has no previous champion to roll back to")
    current = alias_version(mc, CHAMPION, name)
    target = history.pop()
    mc.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    _set_champion(mc, target, name, record=False)
    log.info("rolled back %s@champion: v%s -> v%s", name, current, target)
    return current, target


def list_versions(mc: MlflowClient, name: str = MODEL_NAME) -> list[dict[str, Any]]:
    """Every version, newest first, with its aliases, gate verdict and test metrics."""
    try:
        registered = mc.get_registered_model(name)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in mc.search_model_versions(f"name='{name}'"):
        metrics = mc.get_run(mv.run_id).data.metrics if mv.run_id else {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "created": mv.creation_timestamp,
                "run_id": mv.run_id,
                "gate": mv.tags.get(GATE_TAG, ""),
                "data_quality": mv.tags.get(DQ_TAG, ""),
                "test_ap": metrics.get("test_model_average_precision"),
                "test_roc_auc": metrics.get("test_model_roc_auc"),
                "test_recall_at_1pct_fpr": metrics.get("test_model_recall_at_1pct_fpr"),
                "test_start": mc.get_run(mv.run_id).data.params.get("test_start") if mv.run_id else None,
            }
        )
    return sorted(rows, key=lambda r: -int(r["version"]))
