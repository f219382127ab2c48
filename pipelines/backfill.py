"""`fraud backfill`: a whole history into the stores: event history, reference views, online rows.

Reads transactions and labels (and optionally the accounts table and address lists) in the
canonical schema, Parquet or CSV. Bad rows are reported with their reason in a rejects file, never
dropped silently. The events and labels become the committed history training evaluates features
over (`fraud.aggregates`); the accounts and lists become the reference views' offline rows; and every
entity's online row is the state the streaming ingest would hold after the same history
(`FeatureState.from_history`). A second backfill replaces the first one's files, so running it twice
changes nothing.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fraud import features as F
from fraud import history
from fraud import store as S
from fraud.contracts import validate_labels_frame, validate_transactions_frame
from fraud.feature_state import KINDS, VIEW_OF_KIND, FeatureState
from fraud.settings import BackfillSettings

log = logging.getLogger(__name__)
TAG = "backfill"


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
        """Transactions through the state build and the offline writes, per second."""
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


def online_view_rows(
    txns: pd.DataFrame,
    labels: pd.DataFrame | None,
    accounts: pd.DataFrame | None = None,
    address_lists: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every view's online rows after a history: each entity's state, and the latest reference rows."""
    state = FeatureState.from_history(txns, labels)
    out = {VIEW_OF_KIND[kind]: state.online_rows(kind) for kind in KINDS}
    if accounts is not None:
        out["account"] = S.latest_per_entity("account", F.account_rows(accounts))
    if address_lists is not None:
        out["address_list"] = S.latest_per_entity("address_list", F.address_list_rows(address_lists))
    return out


def _write_offline(
    settings: BackfillSettings,
    txns: pd.DataFrame,
    labs: pd.DataFrame,
    acc: pd.DataFrame | None,
    lists: pd.DataFrame | None,
) -> tuple[dict[str, int], dict[str, pd.DataFrame]]:
    """Replace the previous backfill's history and reference parts; returns the rows written offline and
    every view's online rows. The history is written on a helper thread (Parquet encoding releases the
    GIL) while the state is built."""
    for kind in ("transactions", "labels"):
        history.remove_parts(settings.data_dir, kind, TAG)
    for view in S.ALL_VIEWS:
        for old in S.view_path(settings.offline_dir, view).glob(f"part-*-{TAG}*.parquet"):
            old.unlink()
    counts: dict[str, int] = {"transactions": len(txns), "labels": len(labs)}
    with ThreadPoolExecutor(max_workers=1) as writer:
        writes = [
            writer.submit(history.append, settings.data_dir, kind, frame, TAG)
            for kind, frame in (("transactions", txns), ("labels", labs))
        ]
        for view, frame in (
            ("account", F.account_rows(acc) if acc is not None else None),
            ("address_list", F.address_list_rows(lists) if lists is not None else None),
        ):
            if frame is not None:
                writes.append(writer.submit(S.write_offline, settings, view, frame, TAG))
                counts[view] = len(frame)
        online = online_view_rows(txns, labs, acc, lists)
        for write in writes:
            write.result()
    return counts, online


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

        report.offline_rows, rows = _write_offline(settings, txns, labs, acc, lists)
        t0 = step("features_offline", t0)

        for view, frame in rows.items():
            report.online_rows[view] = S.write_online(store, view, frame, settings.backfill_online_batch_rows)
        # every label's effect is in the rows just written: the ingest service need not apply them again
        mine = [p for p in history.parts(settings.data_dir, "labels") if f"-{TAG}-" in p.name]
        history.mark_labels_online(settings.data_dir, mine)
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
