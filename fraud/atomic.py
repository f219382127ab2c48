"""All-or-nothing writes of several Parquet files (one micro-batch's offline rows across folders).

Files are staged in a sibling folder of their target (`<folder>.staging/`: same file system, so the
final rename is atomic, and no reader of the target folder, Feast's included, ever lists them), then
a manifest is written with one atomic rename (the commit point), then the staged files are renamed
into place. `recover()` rolls a committed batch forward and removes staged files of a batch that
never committed. So a crash at any instant leaves each batch either wholly visible or not at all.
(Staged files used to sit in the target folder under `_pending-` names: Feast's reader and the
training join read them, uncommitted rows included.)
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STAGING_SUFFIX = ".staging"


def staging_folder(folder: Path) -> Path:
    """Where files bound for `folder` wait: beside it, never in it."""
    return folder.with_name(folder.name + STAGING_SUFFIX)


def _staged_path(final: Path, batch_id: str) -> Path:
    staging = staging_folder(final.parent)
    staging.mkdir(parents=True, exist_ok=True)
    return staging / f"{batch_id}-{final.name}"


def _write_parquet(table: pa.Table, path: Path) -> None:
    """LZ4 pages; dictionaries only for text (numbers rarely repeat, so trying costs time for nothing)."""
    text = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(table, path, compression="lz4", use_dictionary=text)


class AtomicBatch:
    """Stage Parquet files, then make them visible together with `commit()`."""

    def __init__(self, manifest_dir: Path) -> None:
        self.manifest_dir = manifest_dir
        self.id = uuid.uuid4().hex
        self.moves: list[tuple[str, str]] = []

    def stage(self, final: Path, table: pa.Table) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = _staged_path(final, self.id)
        _write_parquet(table, staged)
        self.moves.append((str(staged), str(final)))

    def commit(self) -> None:
        if not self.moves:
            return
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest_dir / f"{self.id}.json"
        tmp = manifest.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.moves, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(manifest)  # the commit point
        _roll_forward(manifest)


def _roll_forward(manifest: Path) -> None:
    for staged, final in json.loads(manifest.read_text()):
        if os.path.exists(staged):
            os.replace(staged, final)
    manifest.unlink()


def recover(manifest_dir: Path, folders: list[Path]) -> tuple[int, int]:
    """Finish committed batches and drop staged files of uncommitted ones; returns (finished, dropped)."""
    finished = 0
    if manifest_dir.exists():
        for tmp in manifest_dir.glob("*.tmp"):
            tmp.unlink()
        for manifest in sorted(manifest_dir.glob("*.json")):
            _roll_forward(manifest)
            finished += 1
    dropped = 0
    for folder in folders:
        staging = staging_folder(folder)
        if staging.exists():
            for staged in staging.iterdir():
                staged.unlink()
                dropped += 1
    return finished, dropped


def write_part(final: Path, table: pa.Table, batch: AtomicBatch | None = None) -> Path:
    """Write one Parquet part: staged in `batch` when given, else written aside and renamed into place."""
    if batch is not None:
        batch.stage(final, table)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staged_path(final, uuid.uuid4().hex)
    _write_parquet(table, tmp)
    os.replace(tmp, final)
    return final
