"""The raw history: canonical transactions and labels as folders of Parquet part files.

Backfill and the ingest services append parts; training and backtests read them. Reads drop
duplicates by transaction_id (a replayed part changes nothing). Labels keep, per transaction, the
latest verdict by `label_time`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud.atomic import AtomicBatch, write_part
from fraud.contracts import LABEL_SCHEMA, TRANSACTION_SCHEMA

SCHEMAS = {"transactions": TRANSACTION_SCHEMA, "labels": LABEL_SCHEMA}


def folder(data_dir: Path, kind: str) -> Path:
    return data_dir / "history" / kind


def append(
    data_dir: Path, kind: str, rows: pd.DataFrame, tag: str = "", batch: AtomicBatch | None = None
) -> Path | None:
    """Write `rows` as one new part file (atomic rename, or staged in `batch`); nothing for an empty frame."""
    if rows.empty:
        return None
    schema = SCHEMAS[kind]
    target = folder(data_dir, kind)
    target.mkdir(parents=True, exist_ok=True)
    frame = rows.copy()
    if "schema_version" in schema.names and "schema_version" not in frame:
        frame["schema_version"] = 1
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    final = target / f"part-{stamp}-{tag or 'x'}-{uuid.uuid4().hex[:8]}.parquet"
    return write_part(final, table, batch)


def parts(data_dir: Path, kind: str) -> list[Path]:
    return sorted(folder(data_dir, kind).glob("part-*.parquet"))


def read(data_dir: Path, kind: str) -> pd.DataFrame:
    """Every row of a history, deduplicated (empty frame with the schema when there is none)."""
    files = parts(data_dir, kind)
    schema = SCHEMAS[kind]
    if not files:
        return schema.empty_table().to_pandas()
    df = pq.ParquetDataset(files, schema=schema).read().to_pandas()
    if kind == "labels":
        df = df.sort_values("label_time", kind="stable").drop_duplicates("transaction_id", keep="last")
    else:
        df = df.drop_duplicates("transaction_id", keep="first")
    return df.reset_index(drop=True)


def remove_parts(data_dir: Path, kind: str, tag: str) -> int:
    """Delete the parts written under `tag` (a backfill replacing its previous run)."""
    removed = 0
    for path in parts(data_dir, kind):
        if f"-{tag}-" in path.name:
            path.unlink()
            removed += 1
    return removed


def _online_ledger(data_dir: Path) -> Path:
    return data_dir / "history" / "labels-online.txt"


def labels_online(data_dir: Path) -> set[str]:
    """Names of the label parts whose effect on the online features is written (by ingest or a backfill)."""
    path = _online_ledger(data_dir)
    return set(path.read_text().split()) if path.exists() else set()


def mark_labels_online(data_dir: Path, written: list[Path]) -> None:
    """Record label parts whose changes reached the online store (an append; a crash before it means
    the parts are applied again on restart, which writes the same rows)."""
    if written:
        path = _online_ledger(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write("".join(f"{p.name}\n" for p in written))
