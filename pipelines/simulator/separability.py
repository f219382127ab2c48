"""How separable is fraud by any single raw or simple feature? Best single-feature average precision.

Run: .venv/bin/python -m pipelines.simulator.separability [--users N --days D]  (prints a Markdown table)
Categorical fields are scored by their in-sample fraud rate (an upper bound for that field alone).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from pipelines.simulator.config import SimConfig
from pipelines.simulator.generate import History, generate


def simple_features(history: History) -> tuple[pd.DataFrame, np.ndarray]:
    """Raw fields plus per-user features a first model would compute, and the fraud target."""
    tx = history.transactions.to_pandas().sort_values("event_time", kind="stable")
    labels = history.labels.to_pandas().set_index("transaction_id")
    accounts = history.accounts.to_pandas().set_index("user_id")
    lists = history.address_lists.to_pandas().set_index("address")["listed_time"]
    f = pd.DataFrame(index=tx.index)
    for col in ("type", "asset", "payment_method", "channel", "country"):
        f[col] = tx[col]
    f["amount_usd"] = tx["amount_usd"]
    f["kyc_tier"] = tx["user_id"].map(accounts["kyc_tier"])
    f["account_age_days"] = (tx["event_time"] - tx["user_id"].map(accounts["signup_time"])).dt.total_seconds() / 86400
    f["country_differs_from_residence"] = tx["country"] != tx["user_id"].map(accounts["country_of_residence"])
    f["new_device_for_user"] = ~tx.duplicated(["user_id", "device_id"])
    f["new_ip_for_user"] = ~tx.duplicated(["user_id", "ip_address"])
    counterparty = tx["destination_address"].fillna(tx["source_address"])
    has_cp = counterparty.notna()
    f["new_counterparty_for_user"] = (
        has_cp & ~pd.Series(list(zip(tx["user_id"], counterparty, strict=True)), index=tx.index).duplicated()
    )
    listed_at = counterparty.map(lists)
    f["counterparty_listed_at_event"] = listed_at.notna() & (listed_at <= tx["event_time"])
    prev = tx.groupby("user_id")["event_time"].shift()
    f["seconds_since_previous_txn"] = (tx["event_time"] - prev).dt.total_seconds().fillna(1e9)
    f["local_hour_utc"] = tx["event_time"].dt.hour
    y = tx["transaction_id"].map(labels["is_fraud"]).to_numpy(dtype=bool)
    return f, y


def best_average_precision(f: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Per feature: the better AP of the value and its negation (categoricals: their fraud rate)."""
    rows = []
    for col in f.columns:
        x = f[col]
        if x.dtype == object or isinstance(x.dtype, pd.CategoricalDtype):
            score = x.map(pd.Series(y, index=f.index).groupby(x).mean()).to_numpy(dtype=float)
            ap = average_precision_score(y, score)
        else:
            v = x.to_numpy(dtype=float)
            ap = max(average_precision_score(y, v), average_precision_score(y, -v))
        rows.append({"feature": col, "average_precision": round(float(ap), 3)})
    out = pd.DataFrame(rows).sort_values("average_precision", ascending=False)
    return out.reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    history = generate(SimConfig(seed=args.seed, users=args.users, days=args.days))
    f, y = simple_features(history)
    table = best_average_precision(f, y)
    print(f"{len(y):,} transactions, fraud rate {y.mean():.4f} (AP of a random score)\n")
    print("| feature | best single-feature AP |\n|---|---|")
    for row in table.itertuples():
        print(f"| {row.feature} | {row.average_precision:.3f} |")


if __name__ == "__main__":
    main()
