"""`fraud backfill`: features for a whole history, into the offline store and the online store.

Reads transactions and labels (and optionally the accounts table and address lists) in the
canonical schema, Parquet or CSV. Bad rows are reported with their reason in a rejects file, never
dropped silently. Features come from `fraud.features`, the same code the streaming ingest runs.
A second backfill replaces the first one's files, so running it twice changes nothing.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraud import features as F
from fraud import history
from fraud import store as S
from fraud.contracts import validate_labels_frame, validate_transactions_frame
from fraud.settings import BackfillSettings

log = logging.getLogger(__name__)
TAG = "backfill"
VIEW_OF_KIND = {"address": "address_activity", "device": "device_activity", "ip": "ip_activity"}


@dataclass
class BackfillReport:
    transactions_in: int = 0
    transactions_rejected: int = 0
    labels_in: int = 0
    labels_rejected: int = 0
    offline_rows: dict[str, int] = field(default_factory=dict)
    online_rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rejects_path: Path | None = None

    @property
    def rows_per_s(self) -> float:
        """Transactions through feature computation and the offline write (overlapped), per second."""
        busy = self.seconds.get("features_offline", 0.0)
        return self.transactions_in / busy if busy else 0.0


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet or CSV file (or a folder of Parquet parts) as a DataFrame."""
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir() or path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=True)
    raise ValueError(f"{path}: expected a .parquet or .csv file")


def _write_rejects(settings: BackfillSettings, kind: str, rejected: pd.DataFrame) -> Path | None:
    if rejected.empty:
        return None
    out = settings.data_dir / "backfill" / f"rejected_{kind}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rejected.to_csv(out, index=False)
    reasons = rejected["error"].value_counts().head(10)
    log.warning("%d %s rejected (see %s): %s", len(rejected), kind, out, reasons.to_dict())
    return out


def view_rows(
    txns: pd.DataFrame,
    labels: pd.DataFrame | None,
    accounts: pd.DataFrame | None = None,
    address_lists: pd.DataFrame | None = None,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Every view's feature rows for a history (the batch path), one view at a time."""
    yield "user_activity", F.user_features(txns)
    attached = F.attach_entities(labels, txns) if labels is not None else None
    for kind, view in VIEW_OF_KIND.items():
        yield view, F.counterparty_features(txns, kind, attached)
    if accounts is not None:
        yield "account", F.account_rows(accounts)
    if address_lists is not None:
        yield "address_list", F.address_list_rows(address_lists)


def compute_view_rows(
    txns: pd.DataFrame,
    labels: pd.DataFrame | None,
    accounts: pd.DataFrame | None = None,
    address_lists: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every view's feature rows for a history, by view name."""
    return dict(view_rows(txns, labels, accounts, address_lists))


# The history the worker processes compute from: set before they are forked, so they inherit it
# (copy-on-write) instead of receiving a million rows through a pipe.
_SHARED: dict[str, Any] = {}


def _compute_and_write(
    settings: BackfillSettings, kind: str, shard: int, attached: pd.DataFrame | None
) -> tuple[str, int, pd.DataFrame]:
    """In a worker process: the rows of one view ("user": one shard of users; else a counterparty kind),
    written offline; returns the view, its row count and its latest row per entity."""
    txns: pd.DataFrame = _SHARED["txns"]
    if kind == "user":
        view = "user_activity"
        frame = F.user_features(txns[_SHARED["user_shard"] == shard].reset_index(drop=True))
    else:
        view = VIEW_OF_KIND[kind]
        frame = F.counterparty_features(txns, kind, attached)
    S.write_offline(settings, view, frame, f"{TAG}-{shard}")
    return view, len(frame), S.latest_per_entity(view, frame)


def _write_offline(
    settings: BackfillSettings,
    txns: pd.DataFrame,
    labs: pd.DataFrame,
    acc: pd.DataFrame | None,
    lists: pd.DataFrame | None,
    workers: int,
) -> tuple[dict[str, int], dict[str, pd.DataFrame]]:
    """Replace the previous backfill's history and offline parts; returns rows written and the latest rows per view.

    The views are computed and written in `workers` forked processes: each user feature depends only
    on that user's own events, so the users are split into `workers` shards; each counterparty view is
    one task. The parent writes the history (Parquet encoding releases the GIL) and the reference views.
    The caller runs no other thread while the workers are forked (the progress display does not
    refresh on its own), so no lock can be copied held into them.
    """
    for kind in ("transactions", "labels"):
        history.remove_parts(settings.data_dir, kind, TAG)
    for view in S.ALL_VIEWS:
        for old in S.view_path(settings.offline_dir, view).glob(f"part-*-{TAG}*.parquet"):
            old.unlink()
    codes = pd.util.hash_pandas_object(txns["user_id"], index=False).to_numpy()
    shards = (codes % np.uint64(workers)).astype(np.int64)
    _SHARED.update(txns=txns, user_shard=shards)
    counts: dict[str, int] = {}
    latest: dict[str, list[pd.DataFrame]] = {}
    try:
        with (
            ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool,
            ThreadPoolExecutor(max_workers=1) as writer,
        ):
            users = [int(i) for i in np.unique(shards)]  # a shard with no user gets no task
            tasks = [pool.submit(_compute_and_write, settings, "user", i, None) for i in users]
            attached = F.attach_entities(labs, txns)
            tasks += [pool.submit(_compute_and_write, settings, kind, 0, attached) for kind in VIEW_OF_KIND]
            writes: list[Future[Path | None]] = [
                writer.submit(history.append, settings.data_dir, kind, frame, TAG)
                for kind, frame in (("transactions", txns), ("labels", labs))
            ]
            reference = []
            if acc is not None:
                reference.append(("account", F.account_rows(acc)))
            if lists is not None:
                reference.append(("address_list", F.address_list_rows(lists)))
            for view, frame in reference:
                writes.append(writer.submit(S.write_offline, settings, view, frame, TAG))
                counts[view] = len(frame)
                latest[view] = [frame]
            for task in tasks:
                view, n, last = task.result()
                counts[view] = counts.get(view, 0) + n
                latest.setdefault(view, []).append(last)
            for write in writes:
                write.result()
    finally:
        _SHARED.clear()
    return counts, {view: pd.concat(parts, ignore_index=True) for view, parts in latest.items()}


def backfill(
    settings: BackfillSettings,
    transactions: Path,
    labels: Path,
    accounts: Path | None = None,
    address_lists: Path | None = None,
    show_progress: bool = True,
) -> BackfillReport:
    """Validate, compute, write offline, materialize online. Returns what it did and how long each step took."""
    report = BackfillReport()
    steps = ["read", "validate", "apply", "features_offline", "online"]
    with Progress(
        TextColumn("[bold]backfill[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not show_progress,
        auto_refresh=False,  # no refresh thread: the view workers are forked (see _write_offline)
    ) as progress:
        task = progress.add_task("read", total=len(steps))
        progress.refresh()

        def step(name: str, started: float) -> float:
            report.seconds[name] = time.perf_counter() - started
            progress.update(
                task, advance=1, description=steps[min(steps.index(name) + 1, len(steps) - 1)], refresh=True
            )
            return time.perf_counter()

        t0 = time.perf_counter()
        raw_txns = read_table(transactions)
        raw_labels = read_table(labels)
        acc = read_table(accounts) if accounts else None
        lists = read_table(address_lists) if address_lists else None
        t0 = step("read", t0)

        txns, bad_txns = validate_transactions_frame(raw_txns)
        labs, bad_labs = validate_labels_frame(raw_labels)
        orphan = ~labs["transaction_id"].isin(txns["transaction_id"])
        if orphan.any():
            extra = labs[orphan].assign(error="transaction_id: no such valid transaction")
            bad_labs = pd.concat([bad_labs, extra], ignore_index=True)
            labs = labs[~orphan].reset_index(drop=True)
        report.transactions_in, report.transactions_rejected = len(txns), len(bad_txns)
        report.labels_in, report.labels_rejected = len(labs), len(bad_labs)
        report.rejects_path = _write_rejects(settings, "transactions", bad_txns)
        _write_rejects(settings, "labels", bad_labs)
        if txns.empty:
            raise ValueError(f"{transactions}: no valid transactions (see the rejects file)")
        t0 = step("validate", t0)

        store = S.apply(settings)
        t0 = step("apply", t0)

        report.offline_rows, rows = _write_offline(settings, txns, labs, acc, lists, settings.backfill_workers)
        t0 = step("features_offline", t0)

        for view, frame in rows.items():
            report.online_rows[view] = S.write_online(store, view, frame, settings.backfill_online_batch_rows)
        step("online", t0)
    log.info(
        "backfill: %d transactions (%d rejected), %d labels (%d rejected); %.0f rows/s features+offline",
        report.transactions_in,
        report.transactions_rejected,
        report.labels_in,
        report.labels_rejected,
        report.rows_per_s,
    )
    return report
