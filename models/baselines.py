"""Two baselines scored on the same features as the model: hand-written rules and logistic regression.

The rules are what a risk team writes on day one: points for each red flag, scored in [0, 1]. Logistic
regression sees every model feature, with median imputation (plus missing-value indicators), a signed
log of heavy-tailed values, standardisation and one-hot categories; classes balanced by weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

CATEGORICAL = ["type_code", "asset_code", "payment_method_code", "channel_code"]


@dataclass(frozen=True)
class Rule:
    """One red flag: a name, its points, and the condition on the feature frame."""

    name: str
    points: float
    description: str


RULES: list[Rule] = [
    Rule("listed_counterparty", 4.0, "destination on a sanctions or mixer list"),
    Rule("new_device_new_address_large", 3.0, "new device + new destination + amount >= 3x the 30-day mean"),
    Rule("young_account_large", 2.0, "account younger than 7 days moving >= $1,000"),
    Rule("drains_balance", 1.0, "an outgoing move of >= 90% of the asset balance"),
    Rule("new_device_and_country", 1.0, "new device and new country for the user"),
    Rule("card_velocity", 2.0, ">= 4 card deposits within the hour"),
    Rule("risky_counterparty", 2.0, "device, IP or address with a confirmed fraud in 30 days"),
    Rule("near_reporting_threshold", 1.0, "a deposit of $8,500-9,999 (just under $10,000)"),
]


def _col(X: pd.DataFrame, name: str, fill: float = 0.0) -> np.ndarray:
    return X[name].fillna(fill).to_numpy(dtype=np.float64) if name in X else np.full(len(X), fill)


def rule_hits(X: pd.DataFrame) -> pd.DataFrame:
    """Which rule fires on which row (model feature frame in, boolean frame out)."""
    amount = _col(X, "amount_usd")
    to_mean = _col(X, "amount_to_mean_30d", fill=np.inf)  # no history: treat as far above the mean
    age = _col(X, "account_age_days", fill=np.inf)
    outgoing = _col(X, "is_outgoing") > 0
    card_deposits = _col(X, "deposit_count_1h")  # every deposit in the window; card ones dominate bursts
    hits = {
        "listed_counterparty": (_col(X, "on_sanctions_list") + _col(X, "on_mixer_list")) > 0,
        "new_device_new_address_large": (_col(X, "new_device") > 0)
        & (_col(X, "new_dest_address") > 0)
        & (to_mean >= 3.0),
        "young_account_large": (age < 7.0) & (amount >= 1000.0),
        "drains_balance": outgoing & (_col(X, "balance_share_leaving") >= 0.9),
        "new_device_and_country": (_col(X, "new_device") > 0) & (_col(X, "new_country") > 0),
        "card_velocity": (card_deposits >= 4) & (_col(X, "payment_method_code", -1) == 0),
        "risky_counterparty": (
            _col(X, "device_fraud_count_30d") + _col(X, "ip_fraud_count_30d") + _col(X, "address_fraud_count_30d")
        )
        > 0,
        "near_reporting_threshold": (_col(X, "type_code", -1) == 0) & (amount >= 8500.0) & (amount < 10000.0),
    }
    return pd.DataFrame(hits, index=X.index)


def rules_score(X: pd.DataFrame) -> np.ndarray:
    """Sum of the points of the rules that fire, scaled to [0, 1]; ties broken by amount (bigger first)."""
    hits = rule_hits(X)
    points = sum(hits[r.name].to_numpy(dtype=np.float64) * r.points for r in RULES)
    total = sum(r.points for r in RULES)
    tiebreak = np.log1p(_col(X, "amount_usd")) / 100.0  # < 1 point, orders rows within a score level
    return np.asarray(np.clip((points + tiebreak) / (total + 1.0), 0.0, 1.0), dtype=np.float64)


def _signed_log(X: np.ndarray) -> np.ndarray:
    return np.sign(X) * np.log1p(np.abs(X))


def logistic_regression(feature_names: list[str], seed: int = 7) -> Pipeline:
    """Imputation + signed log + scaling (numeric), one-hot (categories), balanced logistic regression."""
    numeric = [f for f in feature_names if f not in CATEGORICAL]
    categorical = [f for f in feature_names if f in CATEGORICAL]
    numeric_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("log", FunctionTransformer(_signed_log)),
            ("scale", StandardScaler()),
        ]
    )
    columns = ColumnTransformer(
        [
            ("num", numeric_steps, numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    model = LogisticRegression(C=0.5, class_weight="balanced", max_iter=500, tol=1e-3, random_state=seed)
    return Pipeline([("columns", columns), ("model", model)])


def fit_logistic(X: pd.DataFrame, y: np.ndarray, seed: int = 7, max_negatives: int = 60_000) -> Pipeline:
    """Fit the logistic baseline (negatives subsampled above `max_negatives` to bound the time)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).astype(bool)
    neg = np.flatnonzero(~y)
    if len(neg) > max_negatives:
        keep = np.sort(np.concatenate([np.flatnonzero(y), rng.choice(neg, max_negatives, replace=False)]))
        X, y = X.iloc[keep], y[keep]
    pipe = logistic_regression(list(X.columns), seed)
    pipe.fit(X, y)
    return pipe


def logistic_score(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    """Fraud probability from the logistic baseline (balanced weights: a ranking, not calibrated)."""
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)
