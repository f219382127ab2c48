"""Small, deterministic histories for tests (the simulator makes the realistic ones)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraud import features as F


def history(n: int = 400, users: int = 12, seed: int = 3) -> pd.DataFrame:
    """Random canonical transactions with clustered sub-second times and deliberate ties."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    # clustered times with deliberate ties, spanning ~45 days
    secs = np.sort(rng.integers(0, 45 * 86400, n))
    secs[5:15] = secs[5]
    types = rng.choice(F.TYPES, n)
    src = np.where(types == "receive", rng.choice(["s1", "s2"], n), np.array(None))
    dest = np.where(np.isin(types, ["send", "withdrawal"]), rng.choice(["a1", "a2", "a3", "a4"], n), np.array(None))
    # sub-second times, as real events have (every store must keep microseconds), from a generator of
    # their own so the other columns stay what they were; ties stay ties, time order stays id order
    micros = np.sort(secs * 1_000_000 + np.random.default_rng(seed + 1).integers(0, 1_000_000, n))
    micros[5:15] = micros[5]
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in range(n)],
            "event_time": start + pd.to_timedelta(micros, unit="us"),
            "user_id": rng.choice([f"u{i}" for i in range(users)], n),
            "type": types,
            "asset": rng.choice(F.ASSETS, n),
            "amount": rng.gamma(1.5, 2.0, n) + 0.01,
            "amount_usd": rng.gamma(1.5, 300.0, n) + 1,
            "payment_method": "balance",
            "destination_address": dest,
            "source_address": src,
            "device_id": rng.choice(["d1", "d2", "d3", "d4", "d5"], n),
            "ip_address": rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"], n),
            "country": rng.choice(["DE", "FR", "US"], n),
            "channel": "web",
        }
    )


def labels_for(txns: pd.DataFrame, fraud_share: float = 0.2, seed: int = 9, max_delay_days: int = 20) -> pd.DataFrame:
    """A label per transaction, arriving 0 to `max_delay_days` days later (at a sub-second time)."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(len(txns)) < fraud_share
    delay_us = rng.integers(0, max_delay_days * 86400 * 1_000_000, len(txns))
    return pd.DataFrame(
        {
            "transaction_id": txns["transaction_id"].to_numpy(),
            "is_fraud": fraud,
            "fraud_type": np.where(fraud, "account_takeover", np.array(None)),
            "label_time": txns["event_time"] + pd.to_timedelta(delay_us, unit="us"),
        }
    )
