"""The streaming side of the one feature implementation: per-entity state kept so windows are exact.

`FeatureState` retains the events of the last 30 days (plus a margin for late events), the fraud
labels known so far, and a carry of the running totals of the events it let go (counts, balances
with both legs of each trade posted by `fraud.features.balance_postings`, first-seen times).
`update(batch)` runs `fraud.features` over the retained history of the affected entities plus the
batch and returns the rows of the new events only: the same values the batch backfill computes for
them. Pure: no I/O; the ingest service snapshots and restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraud import features as F

RETENTION = pd.Timedelta(microseconds=max(F.WINDOWS.values())) + pd.Timedelta(days=1)
USER_CARRY = ["txn_count_total", *(f"balance_{a}" for a in F.ASSETS)]
VIEW_OF_KIND = {"address": "address_activity", "device": "device_activity", "ip": "ip_activity"}


def _empty_carry(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns, dtype="float64")


def _utc(times: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; as they are when they already are (`to_datetime` samples them first)."""
    if isinstance(times.dtype, pd.DatetimeTZDtype) and str(times.dtype.tz) == "UTC":
        return times
    return pd.to_datetime(times, utc=True)


@dataclass
class Change:
    """A batch's effect on the state, per view: its feature rows (offline: every new event's row) and
    the rows the online store must take (an entity's row only where a new event is its latest: a
    late event never replaces a newer row, which SQLite's online store would do), and the retained
    events with the batch."""

    rows: dict[str, pd.DataFrame]
    events: pd.DataFrame | None
    online: dict[str, pd.DataFrame] = field(default_factory=dict)


def _split(rows: pd.DataFrame, key: str, new_ids: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The new events' rows, and the entities' latest rows that are new (rows come in (key, time) order)."""
    new = rows["transaction_id"].isin(new_ids)
    latest = ~rows[key].duplicated(keep="last") & new
    return rows[new].reset_index(drop=True), rows[latest].reset_index(drop=True)


@dataclass
class FeatureState:
    """Retained events, known fraud labels and carried totals for streaming feature updates."""

    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    labels: pd.DataFrame = field(default_factory=pd.DataFrame)
    user_carry: pd.DataFrame = field(default_factory=lambda: _empty_carry(USER_CARRY))
    first_seen_carry: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def watermark(self) -> pd.Timestamp | None:
        """The latest event time seen."""
        if self.events.empty:
            return None
        return pd.Timestamp(_utc(self.events["event_time"]).max())

    def seen(self, transaction_ids: pd.Series) -> np.ndarray:
        """Which of these transactions the state already holds (a replay changes nothing)."""
        if self.events.empty:
            return np.zeros(len(transaction_ids), dtype=bool)
        return transaction_ids.isin(self.events["transaction_id"]).to_numpy()

    def add_labels(self, labels: pd.DataFrame) -> None:
        """Record fraud labels (with their transaction's entities attached) as they become known."""
        frauds = labels[labels["is_fraud"].astype(bool)]
        if frauds.empty:
            return
        merged = pd.concat([self.labels, frauds], ignore_index=True) if not self.labels.empty else frauds.copy()
        self.labels = merged.drop_duplicates("transaction_id", keep="last").reset_index(drop=True)

    def update(self, batch: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Feature rows of the batch's new events, per streaming view; the batch joins the state."""
        change = self.compute(batch)
        self.apply(change)
        return change.rows

    def compute(self, batch: pd.DataFrame) -> Change:
        """What `update` would do, without doing it: the rows, and the events the state would hold."""
        batch = batch[~self.seen(batch["transaction_id"])].drop_duplicates("transaction_id")
        if batch.empty:
            return Change({}, None)
        combined = pd.concat([self.events, batch], ignore_index=True) if not self.events.empty else batch.copy()
        new_ids = set(batch["transaction_id"])
        out: dict[str, pd.DataFrame] = {}
        online: dict[str, pd.DataFrame] = {}
        users = combined[combined["user_id"].isin(batch["user_id"])]
        carry = self.user_carry if not self.user_carry.empty else None
        rows = F.user_features(users, carry=carry)
        out["user_activity"], online["user_activity"] = _split(rows, "user_id", new_ids)
        for kind, view in VIEW_OF_KIND.items():
            col = F.COUNTERPARTIES[kind]
            keys = batch[col].dropna()
            if keys.empty:
                continue
            part = combined[combined[col].isin(keys)]
            labels = self.labels[self.labels[col].isin(keys)] if not self.labels.empty else None
            first = self.first_seen_carry.get(kind)
            kind_carry = first.to_frame(f"{kind}_first_seen") if first is not None and len(first) else None
            rows = F.counterparty_features(part, kind, labels, carry=kind_carry)
            out[view], online[view] = _split(rows, col, new_ids)
        return Change(out, combined, online)

    def apply(self, change: Change) -> None:
        """Take in a computed batch (no other batch may have been applied since it was computed)."""
        if change.events is None:
            return
        self.events = change.events
        self.trim()

    def trim(self) -> None:
        """Let go of events older than the retention, folding them into the carried totals."""
        times = _utc(self.events["event_time"])
        horizon = times.max() - RETENTION
        old_mask = (times <= horizon).to_numpy()
        if not old_mask.any():
            return
        old = self.events[old_mask]
        postings = F.balance_postings(old)  # the same legs `user_features` posts
        amounts = pd.DataFrame({"user_id": old["user_id"].to_numpy(), "txn_count_total": 1.0})
        for j, a in enumerate(F.ASSETS):
            amounts[f"balance_{a}"] = postings[:, j]
        folded = amounts.groupby("user_id").sum()
        self.user_carry = folded.add(self.user_carry, fill_value=0.0) if not self.user_carry.empty else folded
        old_us = pd.Series(F.to_micros(old["event_time"]), index=old.index)
        for kind, col in F.COUNTERPARTIES.items():
            firsts = old_us.groupby(old[col]).min()
            prior = self.first_seen_carry.get(kind)
            self.first_seen_carry[kind] = firsts if prior is None else pd.concat([prior, firsts]).groupby(level=0).min()
        self.events = self.events[~old_mask].reset_index(drop=True)
        if not self.labels.empty:
            lt = _utc(self.labels["label_time"])
            self.labels = self.labels[lt > horizon].reset_index(drop=True)
