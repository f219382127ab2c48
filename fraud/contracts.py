"""The contracts every stage shares: events, labels, dead letters, topic names, table schemas.

Pure definitions, no I/O. Validation rejects rather than coerces: an unknown asset, a negative or
zero amount, a naive timestamp or a stray field is an error, never a silent fix.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1

# Kafka topics.
TOPIC_TRANSACTIONS = "transactions"
TOPIC_DLQ = "transactions.dlq"
TOPIC_LABELS = "fraud-labels"
TOPIC_SCORES = "fraud-scores"
ALL_TOPICS = (TOPIC_TRANSACTIONS, TOPIC_DLQ, TOPIC_LABELS, TOPIC_SCORES)


class TransactionType(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    BUY = "buy"
    SELL = "sell"
    SEND = "send"
    RECEIVE = "receive"


class Asset(StrEnum):
    BTC = "BTC"
    ETH = "ETH"
    SOL = "SOL"
    USDC = "USDC"
    USDT = "USDT"


class PaymentMethod(StrEnum):
    CARD = "card"
    BANK_TRANSFER = "bank_transfer"
    CRYPTO = "crypto"
    BALANCE = "balance"


class Channel(StrEnum):
    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    API = "api"


class FraudType(StrEnum):
    ACCOUNT_TAKEOVER = "account_takeover"
    STOLEN_CARD = "stolen_card"
    CARD_TESTING = "card_testing"
    MONEY_MULE = "money_mule"
    STRUCTURING = "structuring"
    SANCTIONED_EXPOSURE = "sanctioned_exposure"
    BUST_OUT = "bust_out"
    IMPOSSIBLE_TRAVEL = "impossible_travel"


Id = Annotated[str, Field(min_length=1, max_length=128, strict=True)]
# Upper bounds far past any real transfer: they keep a sum of squares of a month's amounts finite.
MAX_AMOUNT = 1e15
MAX_AMOUNT_USD = 1e12
PositiveAmount = Annotated[float, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=True)]
UsdAmount = Annotated[float, Field(ge=0, le=MAX_AMOUNT_USD, allow_inf_nan=False, strict=True)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", strict=True)]


# The start of an ISO 8601 date-time. Anything else is refused before pydantic reads it: pydantic would
# take a number, or a numeric string, as Unix seconds or milliseconds (guessing which by its size).
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_or_datetime(value: Any) -> Any:
    """Let through only a datetime or ISO 8601 text (the time zone is checked by `AwareDatetime`)."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE_TIME.match(value)):
        return value
    raise ValueError("expected an ISO 8601 date-time with a time zone, e.g. 2026-01-01T12:00:00Z")


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+14:00: a ValueError makes it a validation error
        raise ValueError("date-time out of range once converted to UTC (years 1 to 9999)") from exc


def _not_a_bool(value: Any) -> Any:
    """`Literal[1]` accepts `true` (True == 1): a version must be the number."""
    if isinstance(value, bool):
        raise ValueError("schema_version must be the integer 1")
    return value


# An event or label time: ISO 8601 text (or a datetime) with a time zone, converted to UTC.
UtcTime = Annotated[AwareDatetime, BeforeValidator(_iso_or_datetime), AfterValidator(_to_utc)]
# The schema version: the number 1, not `true`.
Version = Annotated[Literal[1], BeforeValidator(_not_a_bool)]


class Transaction(BaseModel):
    """One exchange transaction event, as produced to `transactions` and sent to the scorer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    schema_version: Version = SCHEMA_VERSION
    transaction_id: Id
    event_time: UtcTime
    user_id: Id
    type: TransactionType
    asset: Asset
    amount: PositiveAmount
    amount_usd: UsdAmount
    payment_method: PaymentMethod
    destination_address: Id | None = None
    source_address: Id | None = None
    device_id: Id
    ip_address: Annotated[str, Field(strict=True, max_length=64)]
    country: CountryCode
    channel: Channel

    @field_validator("ip_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError as exc:
            raise ValueError(f"not an IP address: {value!r}") from exc

    @model_validator(mode="after")
    def _addresses(self) -> Transaction:
        on_chain_out = self.type is TransactionType.SEND or (
            self.type is TransactionType.WITHDRAWAL and self.payment_method is PaymentMethod.CRYPTO
        )
        on_chain_in = self.type is TransactionType.RECEIVE or (
            self.type is TransactionType.DEPOSIT and self.payment_method is PaymentMethod.CRYPTO
        )
        if on_chain_out and not self.destination_address:
            raise ValueError(f"destination_address is required for an on-chain {self.type.value}")
        if on_chain_in and not self.source_address:
            raise ValueError(f"source_address is required for an on-chain {self.type.value}")
        return self


class FraudLabel(BaseModel):
    """The verdict on a transaction, known only at `label_time` (chargeback, investigation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Version = SCHEMA_VERSION
    transaction_id: Id
    is_fraud: bool
    fraud_type: FraudType | None = None
    label_time: UtcTime

    @model_validator(mode="after")
    def _type_matches(self) -> FraudLabel:
        if self.is_fraud and self.fraud_type is None:
            raise ValueError("fraud_type is required when is_fraud is true")
        if not self.is_fraud and self.fraud_type is not None:
            raise ValueError("fraud_type must be empty when is_fraud is false")
        return self


class DeadLetter(BaseModel):
    """A rejected event on `transactions.dlq`: the original bytes, why, and where it came from.

    The record's size is bounded (`fraud.dlq`): the original is kept whole when it fits, else its
    first bytes (`truncated`), always with its length and SHA-256 so it can be matched to the source.
    """

    model_config = ConfigDict(extra="forbid")

    original: str  # the kept bytes, decoded as UTF-8 with replacement (see original_b64)
    original_b64: str  # the kept bytes, exact, base64: the whole original unless `truncated`
    original_length: int  # bytes in the original message (0 for a null value)
    original_sha256: str  # of the whole original message
    truncated: bool  # only a prefix of the original is kept
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: AwareDatetime


def transaction_messages(events: pd.DataFrame) -> list[tuple[bytes, bytes]]:
    """Canonical transaction rows as `transactions` messages: (user_id key, contract JSON), validated."""
    out = []
    for row in events.to_dict("records"):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        txn = Transaction.model_validate(row)
        out.append((txn.user_id.encode(), txn.model_dump_json().encode()))
    return out


# Canonical table schemas for history files (Parquet/CSV): the simulator writes them, backfill and
# training read them, a team's own export must match them.
TRANSACTION_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int16()),
        ("transaction_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("type", pa.string()),
        ("asset", pa.string()),
        ("amount", pa.float64()),
        ("amount_usd", pa.float64()),
        ("payment_method", pa.string()),
        ("destination_address", pa.string()),
        ("source_address", pa.string()),
        ("device_id", pa.string()),
        ("ip_address", pa.string()),
        ("country", pa.string()),
        ("channel", pa.string()),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("is_fraud", pa.bool_()),
        ("fraud_type", pa.string()),
        ("label_time", pa.timestamp("us", tz="UTC")),
    ]
)

ACCOUNT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("signup_time", pa.timestamp("us", tz="UTC")),
        ("kyc_tier", pa.int8()),
        ("country_of_residence", pa.string()),
    ]
)

ADDRESS_LIST_SCHEMA = pa.schema(
    [
        ("address", pa.string()),
        ("list_name", pa.string()),  # "sanctions" or "mixer"
        ("listed_time", pa.timestamp("us", tz="UTC")),
    ]
)


def transaction_record(txn: Transaction) -> dict[str, Any]:
    """A transaction as a flat row of the canonical table (enums as their string values)."""
    return txn.model_dump(mode="python") | {
        "type": txn.type.value,
        "asset": txn.asset.value,
        "payment_method": txn.payment_method.value,
        "channel": txn.channel.value,
    }


# ---------------------------------------------------------------------------------------------
# Whole-table validation for history files (a million rows at once). The same rules as the models
# above, vectorised; tests check both agree row by row. Bad rows are returned with their reason.

_ALLOWED = {
    "type": {t.value for t in TransactionType},
    "asset": {a.value for a in Asset},
    "payment_method": {p.value for p in PaymentMethod},
    "channel": {c.value for c in Channel},
}


def _parse_utc(series: Any, name: str) -> tuple[Any, Any]:
    """Parse a time column; naive or unparsable values are errors, never assumed to be UTC."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC"), pd.Series("", index=series.index)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]"), pd.Series(
            f"{name}: naive timestamp (no time zone)", index=series.index
        )
    text = series.astype("string")
    aware = text.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True, na=False)
    parsed = pd.to_datetime(text.where(aware), utc=True, errors="coerce", format="ISO8601")
    errors = pd.Series("", index=series.index)
    errors[~aware & text.notna()] = f"{name}: naive timestamp (no time zone)"
    errors[parsed.isna() & aware] = f"{name}: not a timestamp"
    errors[text.isna()] = f"{name}: missing"
    return parsed, errors


def validate_transactions_frame(df: Any) -> tuple[Any, Any]:
    """Split a canonical transactions table into (valid rows, rejected rows with an `error` column)."""
    required = [f.name for f in TRANSACTION_SCHEMA if f.name != "schema_version"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"transactions table lacks columns {missing}; expected {required}")
    df = df.reset_index(drop=True)
    errors = pd.Series("", index=df.index, dtype="object")

    def flag(mask: Any, message: str) -> None:
        mask = pd.Series(np.asarray(mask, dtype=bool), index=df.index)
        errors[mask & (errors == "")] = message

    event_time, time_errors = _parse_utc(df["event_time"], "event_time")
    errors[(time_errors != "") & (errors == "")] = time_errors
    for col in ("transaction_id", "user_id", "device_id", "ip_address", "country"):
        flag(df[col].isna() | (df[col].astype("string").str.len() == 0), f"{col}: missing")
    for col, allowed in _ALLOWED.items():
        flag(~df[col].isin(allowed), f"{col}: not one of {sorted(allowed)}")
    amount = pd.to_numeric(df["amount"], errors="coerce")
    usd = pd.to_numeric(df["amount_usd"], errors="coerce")
    flag(~np.isfinite(amount.fillna(np.nan)) | ~(amount > 0), "amount: must be a finite number > 0")
    flag(~np.isfinite(usd.fillna(np.nan)) | ~(usd >= 0), "amount_usd: must be a finite number >= 0")
    flag(~df["country"].astype("string").str.fullmatch(r"[A-Z]{2}").fillna(False), "country: not ISO 3166 alpha-2")
    ips = df["ip_address"].astype("string")
    unique_ips = ips.dropna().unique()
    bad_ips = set()
    for value in unique_ips:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            bad_ips.add(value)
    flag(ips.isin(bad_ips), "ip_address: not an IP address")
    out_chain = (df["type"] == "send") | ((df["type"] == "withdrawal") & (df["payment_method"] == "crypto"))
    in_chain = (df["type"] == "receive") | ((df["type"] == "deposit") & (df["payment_method"] == "crypto"))
    flag(out_chain & df["destination_address"].isna(), "destination_address: required for an on-chain transfer out")
    flag(in_chain & df["source_address"].isna(), "source_address: required for an on-chain transfer in")
    dup = df["transaction_id"].duplicated(keep="first") & df["transaction_id"].notna()
    flag(dup, "transaction_id: duplicate")
    good_mask = errors == ""
    good = df[good_mask].copy()
    good["event_time"] = event_time[good_mask]
    good["amount"] = amount[good_mask].astype("float64")
    good["amount_usd"] = usd[good_mask].astype("float64")
    if "schema_version" not in good:
        good["schema_version"] = SCHEMA_VERSION
    rejected = df[~good_mask].copy()
    rejected["error"] = errors[~good_mask]
    return good.reset_index(drop=True), rejected.reset_index(drop=True)


def validate_labels_frame(df: Any) -> tuple[Any, Any]:
    """Split a labels table into (valid rows, rejected rows with an `error` column)."""
    required = [f.name for f in LABEL_SCHEMA]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"labels table lacks columns {missing}; expected {required}")
    df = df.reset_index(drop=True)
    label_time, errors = _parse_utc(df["label_time"], "label_time")
    errors = errors.astype("object")
    is_fraud = df["is_fraud"]
    ok_bool = is_fraud.isin([True, False, 0, 1])
    errors[(errors == "") & ~ok_bool] = "is_fraud: not a boolean"
    fraud = is_fraud.astype("object").isin([True, 1])
    allowed = {f.value for f in FraudType}
    errors[(errors == "") & fraud & ~df["fraud_type"].isin(allowed)] = "fraud_type: required, one of the typologies"
    errors[(errors == "") & ~fraud & df["fraud_type"].notna()] = "fraud_type: must be empty for a legitimate label"
    errors[(errors == "") & df["transaction_id"].isna()] = "transaction_id: missing"
    good_mask = errors == ""
    good = df[good_mask].copy()
    good["label_time"] = label_time[good_mask]
    good["is_fraud"] = fraud[good_mask].astype(bool)
    rejected = df[~good_mask].copy()
    rejected["error"] = errors[~good_mask]
    return good.reset_index(drop=True), rejected.reset_index(drop=True)
