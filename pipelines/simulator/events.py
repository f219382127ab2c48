"""Columnar event batches: the intermediate form every generator returns before the ledger runs."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipelines.simulator.config import LEGIT, MODE_LEGIT


@dataclass
class EventBatch:
    """Events as parallel arrays. `usd` is the intended size; the ledger turns it into amounts."""

    user: np.ndarray  # int64 account index
    t_us: np.ndarray  # int64 event time, microseconds since the epoch (UTC)
    type: np.ndarray  # int8 TYPES code
    asset: np.ndarray  # int8 ASSETS code
    pm: np.ndarray  # int8 PAYMENT_METHODS code
    usd: np.ndarray  # float64 intended USD size (inflows, buys, fraud outflows)
    frac: np.ndarray  # float64 share of the balance a legit outflow moves
    mode: np.ndarray  # int8 MODE_* for the ledger
    channel: np.ndarray  # int8 CHANNELS code
    device: np.ndarray  # int64 index into the device pool
    ip: np.ndarray  # int64 index into the IP pool
    country: np.ndarray  # int16 index into COUNTRIES
    address: np.ndarray  # int64 counterparty address (-1: chosen after the ledger from the user's habits)
    fraud: np.ndarray  # int8 FRAUD_TYPES code, LEGIT for legitimate
    label_us: np.ndarray  # int64 label time (0: drawn later from the legit delay distribution)

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: np.ndarray) -> EventBatch:
        """Rows at `idx` (an index or boolean mask)."""
        return EventBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        """Stack batches row-wise."""
        return EventBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(EventBatch)})

    @staticmethod
    def empty_like(n: int) -> EventBatch:
        """`n` rows of defaults: legit, no address, no label time; callers fill the rest."""
        return EventBatch(
            user=np.zeros(n, np.int64),
            t_us=np.zeros(n, np.int64),
            type=np.zeros(n, np.int8),
            asset=np.zeros(n, np.int8),
            pm=np.zeros(n, np.int8),
            usd=np.zeros(n),
            frac=np.ones(n),
            mode=np.full(n, MODE_LEGIT, np.int8),
            channel=np.zeros(n, np.int8),
            device=np.zeros(n, np.int64),
            ip=np.zeros(n, np.int64),
            country=np.zeros(n, np.int16),
            address=np.full(n, -1, np.int64),
            fraud=np.full(n, LEGIT, np.int8),
            label_us=np.zeros(n, np.int64),
        )
