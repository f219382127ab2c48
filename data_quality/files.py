"""`fraud validate STAGE --data PATH`: run a stage's suite on a file (Parquet, CSV, or JSON lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from data_quality.runner import ValidationSummary, validate
from data_quality.suites import SUITES
from fraud import features as F

# Stages besides the suite names: `features` picks the view's suite from the file's columns.
FEATURE_STAGES = {f"{kind}_features": kind for kind in F.COUNTERPARTIES}
TIME_COLUMNS = ("event_time", "label_time", "event_timestamp", "scored_at", "signup_time", "listed_time")


def stages() -> list[str]:
    """Every accepted STAGE."""
    return sorted({*SUITES, *FEATURE_STAGES, "features"} - {"counterparty_features"})


def read_data(path: Path, stage: str) -> pd.DataFrame:
    """A Parquet file (or folder of part files), a CSV file, or `fraud-scores` records as JSON lines."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if stage != "scoring_traffic":
            return pd.DataFrame(records)
        from data_quality.traffic import traffic_frame

        return traffic_frame(records)
    if suffix == ".csv":
        frame = pd.read_csv(path)
        for col in frame.columns:
            if col in TIME_COLUMNS or col.endswith(("_first_seen", "last_event_time")):
                frame[col] = pd.to_datetime(frame[col], utc=True, errors="coerce", format="ISO8601")
        return frame
    return pd.read_parquet(path)


def resolve(stage: str, frame: pd.DataFrame) -> tuple[str, dict[str, Any]]:
    """The suite (and builder parameters) for a stage; `features` is told apart by the file's columns."""
    if stage == "features":
        if "txn_count_1h" in frame.columns:
            return "user_features", {}
        for kind in F.COUNTERPARTIES:
            if f"{kind}_txn_count_24h" in frame.columns:
                return "counterparty_features", {"kind": kind}
        raise ValueError("cannot tell which feature view the file holds (no user or counterparty feature columns)")
    if stage in FEATURE_STAGES:
        return "counterparty_features", {"kind": FEATURE_STAGES[stage]}
    if stage not in SUITES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(stages())}")
    return stage, {}


def validate_file(
    stage: str,
    path: Path,
    docs_dir: Path | None = None,
    params: dict[str, Any] | None = None,
    transactions: Path | None = None,
) -> ValidationSummary:
    """Validate a file with its stage's suite (labels get `event_time` from `transactions` if given)."""
    frame = read_data(path, stage)
    if stage == "raw_labels" and "event_time" not in frame.columns and transactions is not None:
        txns = read_data(transactions, "raw_transactions")[["transaction_id", "event_time"]]
        frame = frame.merge(txns, on="transaction_id", how="left")
    suite, suite_params = resolve(stage, frame)
    suite_params.update(params or {})
    return validate(frame, suite, docs_dir=docs_dir, docs_run="cli", docs_batch=path.name, **suite_params)


def parse_params(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (numbers, booleans), else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
