"""The streaming state behind the online store: per entity, its recent events, fraud labels and carry.

Each user, address, device and IP owns one `EntityRow`: the entity's events of the last 31 days (at
most `aggregates.MAX_EVENTS`, the most recent), encoded as `fraud.aggregates` evaluates them, the
times of the fraud labels on its transactions, and a carry of the totals of the events it let go.
That row is what the online store holds for the entity; the scorer finishes every window from it at
the request's instant (`fraud.aggregates`), and training evaluates the same functions over the whole
history, so both see the same values.

A micro-batch touches only the rows of the entities its events name: each is re-sorted with its new
events and trimmed, at a cost that grows with the batch and those entities, never with the rest of
the state (`benchmarks/features.py` measures it at 1, 7 and 30 days retained). A fraud label touches
the rows of its transaction's counterparties: their risk changes at once, no further event needed.
Nothing here needs an entity's events other than its own (plus the label's entity keys, attached by
the caller), so the state can be split by entity across processes.

Pure: no I/O. `compute` says what a batch would change without changing anything (the ingest service
applies it once the batch check has passed); `from_history` builds the state of a whole history in
one vectorised pass (the backfill, and the ingest service after a restart).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_repo.repo import KIND_OF_VIEW, state_fields
from fraud import aggregates as A
from fraud import features as F

RETENTION_US = max(F.WINDOWS.values()) + 86400 * F.US  # the longest window, plus a day of lateness
KINDS: dict[str, str] = {"user": "user_id", **F.COUNTERPARTIES}
VIEW_OF_KIND = {kind: view for view, kind in KIND_OF_VIEW.items()}
SWEEP_US = 86400 * F.US  # every entity is trimmed each time the watermark moves on by a day


def _columns(kind: str) -> int:
    return len(A.USER_COLUMNS) if kind == "user" else len(A.COUNTERPARTY_COLUMNS)


def _empty_carry(kind: str) -> np.ndarray:
    carry = np.zeros(len(A.USER_CARRY) if kind == "user" else len(A.COUNTERPARTY_CARRY))
    carry[1] = np.nan  # last event (user) / first sighting (counterparty): none yet
    return carry


def _fold(kind: str, carry: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """The carry with the totals of events `gone` added (they leave the row)."""
    if not len(gone):
        return carry
    out = carry.copy()
    out[0] += len(gone)
    t = gone[:, 0]
    if kind == "user":
        out[A.UC["last_t"]] = np.fmax(out[A.UC["last_t"]], t.max())
        out[A.UC[f"balance_{F.ASSETS[0]}"] :] += gone[:, A.U[f"post_{F.ASSETS[0]}"] :].sum(axis=0)
    else:
        out[A.CC["first_t"]] = np.fmin(out[A.CC["first_t"]], t.min())
    return out


@dataclass(frozen=True)
class EntityRow:
    """One entity's online state: recent events (sorted by time), fraud label times, carry, and the
    row's time (the latest event or label it includes; strictly increasing, as online stores that
    keep the newest row, such as Redis, require)."""

    events: np.ndarray
    labels: np.ndarray
    carry: np.ndarray
    stamp: int

    def trimmed(self, kind: str, horizon: int) -> EntityRow:
        """Events older than `horizon` or beyond the MAX_EVENTS most recent folded into the carry."""
        keep = int(np.searchsorted(self.events[:, 0], horizon, "left"))
        keep = max(keep, len(self.events) - A.MAX_EVENTS)
        labels = self.labels[self.labels >= horizon][-A.MAX_EVENTS :]
        if keep == 0 and len(labels) == len(self.labels):
            return self
        carry = _fold(kind, self.carry, self.events[:keep])
        return EntityRow(self.events[keep:], labels, carry, self.stamp)


@dataclass
class Change:
    """What a batch (or a set of labels) changes: the new rows of the entities it touches, by kind,
    and the transactions it adds."""

    rows: dict[str, dict[str, EntityRow]] = field(default_factory=dict)
    txns: dict[str, tuple[int, Any, Any, Any]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    watermark_us: int | None = None

    @property
    def empty(self) -> bool:
        return not any(self.rows.values())


@dataclass
class FeatureState:
    """Every entity's online row, plus the retained transactions (for replays and labels)."""

    rows: dict[str, dict[str, EntityRow]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    # transaction id -> (event time, device, ip, destination): replays are recognised, labels attached
    txns: dict[str, tuple[int, Any, Any, Any]] = field(default_factory=dict)
    first_label: dict[str, int] = field(default_factory=dict)  # transaction id -> earliest fraud label time
    watermark_us: int | None = None
    swept_us: int | None = None

    # -- reading -----------------------------------------------------------------------------------
    @property
    def watermark(self) -> pd.Timestamp | None:
        """The latest event time taken in."""
        return None if self.watermark_us is None else pd.Timestamp(self.watermark_us, unit="us", tz="UTC")

    def seen(self, transaction_ids: pd.Series) -> np.ndarray:
        """Which of these transactions the state already holds (a replay changes nothing)."""
        return np.fromiter((t in self.txns for t in transaction_ids), dtype=bool, count=len(transaction_ids))

    def entities(self, transaction_ids: pd.Series) -> pd.DataFrame:
        """The counterparties of retained transactions (what a fraud label on them touches)."""
        found = [(t, *self.txns[t][1:]) for t in transaction_ids if t in self.txns]
        return pd.DataFrame(found, columns=["transaction_id", "device_id", "ip_address", "destination_address"])

    def online_rows(self, kind: str, keys: Any = None) -> pd.DataFrame:
        """Rows of a view as the online store takes them (`fraud.store.write_online`): every entity of
        the kind, or those in `keys`."""
        held = self.rows[kind]
        return rows_frame(kind, {k: held[k] for k in (held if keys is None else keys) if k in held})

    # -- changing ----------------------------------------------------------------------------------
    def update(self, batch: pd.DataFrame) -> Change:
        """Take in a batch of events; returns what changed."""
        change = self.compute(batch)
        self.apply(change)
        return change

    def compute(self, batch: pd.DataFrame) -> Change:
        """What `update` would change, without changing anything."""
        batch = batch[~self.seen(batch["transaction_id"])].drop_duplicates("transaction_id")
        if batch.empty:
            return Change()
        batch = batch.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
        t = F.to_micros(batch["event_time"])
        watermark = int(t.max()) if self.watermark_us is None else max(self.watermark_us, int(t.max()))
        horizon = watermark - RETENTION_US
        known = batch["transaction_id"].map(self.first_label).to_numpy(dtype=np.float64)
        matrices = {
            "user": A.user_events(batch),
            "counterparty": A.counterparty_events(batch, np.where(np.isnan(known), np.inf, known)),
        }
        change = Change(watermark_us=watermark)
        for kind, col in KINDS.items():
            m = matrices["user" if kind == "user" else "counterparty"]
            held = self.rows[kind]
            out: dict[str, EntityRow] = {}
            for key, at in batch.groupby(col, sort=False).indices.items():
                key = str(key)
                old = held.get(key) or EntityRow(np.zeros((0, _columns(kind))), np.zeros(0), _empty_carry(kind), 0)
                new = m[at]
                events = np.concatenate([old.events, new])
                if len(old.events) and new[0, 0] < old.events[-1, 0]:  # a late event: put it in its place
                    events = events[np.argsort(events[:, 0], kind="stable")]
                stamp = max(int(events[-1, 0]), old.stamp + 1)
                out[key] = EntityRow(events, old.labels, old.carry, stamp).trimmed(kind, horizon)
            change.rows[kind] = out
        cols = batch[["transaction_id", "device_id", "ip_address", "destination_address"]].to_numpy(dtype=object)
        change.txns = {row[0]: _held(ti, row) for row, ti in zip(cols, t, strict=True)}
        return change

    def add_labels(self, labels: pd.DataFrame) -> Change:
        """Take in labels (with their transaction's `device_id`, `ip_address`, `destination_address`
        attached): each fraud label's counterparties get its time at once. A transaction counts once,
        from its earliest fraud label."""
        frauds = labels[labels["is_fraud"].astype(bool)]
        change = Change(watermark_us=self.watermark_us)
        if frauds.empty:
            return change
        lt = F.to_micros(frauds["label_time"])
        earliest = pd.Series(lt, index=frauds["transaction_id"].to_numpy()).groupby(level=0).min()
        ids = frauds["transaction_id"].to_numpy()
        first = frauds.assign(_lt=lt)[~pd.Index(ids).duplicated()]
        horizon = None if self.watermark_us is None else self.watermark_us - RETENTION_US
        for row in first.itertuples(index=False):
            txn = row.transaction_id
            when = int(earliest[txn])
            before = self.first_label.get(txn)
            if before is not None and before <= when:
                continue
            change.labels[txn] = when
            txn_hash = A.key_hash(np.array([txn], dtype=object))[0]
            for kind, col in F.COUNTERPARTIES.items():
                key = getattr(row, col)
                if not isinstance(key, str):
                    continue
                pending = change.rows.setdefault(kind, {})
                old = pending.get(key) or self.rows[kind].get(key)
                if old is None:
                    continue
                times = old.labels
                if before is not None:  # an earlier label for a transaction already counted: it moves
                    times = np.delete(times, np.flatnonzero(times == before)[:1])
                times = np.sort(np.r_[times, float(when)])
                events = old.events
                mine = events[:, A.C["txn"]] == txn_hash
                if mine.any():
                    events = events.copy()
                    events[mine, A.C["confirmed_at"]] = float(when)
                new = EntityRow(events, times, old.carry, max(when, old.stamp + 1))
                pending[key] = new if horizon is None else new.trimmed(kind, horizon)
        return change

    def apply(self, change: Change) -> None:
        """Install a computed change (no other change may have been applied since it was computed)."""
        for kind, rows in change.rows.items():
            self.rows[kind].update(rows)
        self.txns.update(change.txns)
        self.first_label.update(change.labels)
        if change.watermark_us is not None:
            self.watermark_us = change.watermark_us
            if self.swept_us is None or self.watermark_us - self.swept_us >= SWEEP_US:
                self.sweep()

    def sweep(self) -> None:
        """Trim every row and let go of transactions past the retention (once per day of event time)."""
        if self.watermark_us is None:
            return
        horizon = self.watermark_us - RETENTION_US
        for kind, rows in self.rows.items():
            for key, row in list(rows.items()):
                rows[key] = row.trimmed(kind, horizon)
        self.txns = {k: v for k, v in self.txns.items() if v[0] >= horizon}
        self.first_label = {k: v for k, v in self.first_label.items() if k in self.txns}
        self.swept_us = self.watermark_us

    # -- a whole history at once -------------------------------------------------------------------
    @classmethod
    def from_history(cls, events: pd.DataFrame, labels: pd.DataFrame | None = None) -> FeatureState:
        """The state after a whole history (and its labels) has streamed through, in one vectorised pass."""
        state = cls()
        if events.empty:
            return state
        ordered = events.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
        t = F.to_micros(ordered["event_time"])
        state.watermark_us = int(t.max())
        state.swept_us = state.watermark_us
        horizon = state.watermark_us - RETENTION_US
        first = A.first_fraud_label(labels)
        first = first[first.index.isin(ordered["transaction_id"])]
        confirmed = ordered["transaction_id"].map(first).to_numpy(dtype=np.float64)
        matrices = {
            "user": A.user_events(ordered),
            "counterparty": A.counterparty_events(ordered, np.where(np.isnan(confirmed), np.inf, confirmed)),
        }
        label_keys = (
            F.attach_entities(pd.DataFrame({"transaction_id": first.index, "label_time": first.to_numpy()}), ordered)
            if len(first)
            else None
        )
        for kind, col in KINDS.items():
            m = matrices["user" if kind == "user" else "counterparty"]
            lab = None
            if kind != "user" and label_keys is not None:
                has = label_keys[col].notna().to_numpy()
                lab = (label_keys[col][has].reset_index(drop=True), label_keys["label_time"].to_numpy()[has])
            ent, index = A.entities_of(ordered[col], m, len(_empty_carry(kind)), lab)
            state.rows[kind] = _rows_of(kind, ent, index, horizon)
        recent = t >= horizon
        cols = ordered.loc[recent, ["transaction_id", "device_id", "ip_address", "destination_address"]]
        state.txns = {row[0]: _held(ti, row) for row, ti in zip(cols.to_numpy(dtype=object), t[recent], strict=True)}
        state.first_label = {k: int(v) for k, v in first.items() if k in state.txns}
        return state


def _held(t: Any, row: Any) -> tuple[int, Any, Any, Any]:
    """What the state keeps of a transaction: its time and counterparties, their names interned (a
    device, IP or address repeats across events: one string each, not one per event)."""
    device, ip, address = (sys.intern(v) if isinstance(v, str) else None for v in row[1:4])
    return (int(t), device, ip, address)


def _rows_of(kind: str, ent: A.Entities, index: pd.Index, horizon: int) -> dict[str, EntityRow]:
    """Each entity's row of a whole history: events past the horizon or the cap folded into the carry."""
    m, bounds, lbounds = ent.events, ent.bounds, ent.label_bounds
    empty = _empty_carry(kind)
    out: dict[str, EntityRow] = {}
    for i, key in enumerate(index):
        events = m[bounds[i] : bounds[i + 1]]
        labels = ent.label_time[lbounds[i] : lbounds[i + 1]].astype(np.float64)
        stamp = int(events[-1, 0])
        if len(labels):
            stamp = max(stamp, int(labels[-1]))
        out[key] = EntityRow(events, labels, empty, stamp).trimmed(kind, horizon)
    return out


def rows_frame(kind: str, rows: dict[str, EntityRow]) -> pd.DataFrame:
    """Entity rows as the online view's frame: key, event_timestamp and the row's array fields."""
    frame: dict[str, Any] = {
        KINDS[kind]: list(rows),
        "event_timestamp": pd.to_datetime([r.stamp for r in rows.values()], unit="us", utc=True),
    }
    for name in state_fields(kind):  # <prefix>_events, _carry (, _labels): the row's attribute of that name
        part = name.rsplit("_", 1)[1]
        frame[name] = [getattr(r, part).ravel() for r in rows.values()]
    return pd.DataFrame(frame)
