"""The contracts every stage shares: events, labels, dead letters, topic names, table schemas.

Pure definitions, no I/O. Validation rejects rather than coerces: an unknown asset, a negative or
zero amount, a naive timestamp or a stray field is an error, never a silent fix.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

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
PositiveAmount = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
UsdAmount = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", strict=True)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class Transaction(BaseModel):
    """One exchange transaction event, as produced to `transactions` and sent to the scorer."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    transaction_id: Id
    event_time: AwareDatetime
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

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)

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

    schema_version: Literal[1] = SCHEMA_VERSION
    transaction_id: Id
    is_fraud: bool
    fraud_type: FraudType | None = None
    label_time: AwareDatetime

    @field_validator("label_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _to_utc(value)

    @model_validator(mode="after")
    def _type_matches(self) -> FraudLabel:
        if self.is_fraud and self.fraud_type is None:
            raise ValueError("fraud_type is required when is_fraud is true")
        if not self.is_fraud and self.fraud_type is not None:
            raise ValueError("fraud_type must be empty when is_fraud is false")
        return self


class DeadLetter(BaseModel):
    """A rejected event on `transactions.dlq`: the original bytes, why, and where it came from."""

    model_config = ConfigDict(extra="forbid")

    original: str  # the original payload, decoded as UTF-8 with replacement (see original_b64)
    original_b64: str  # the exact original bytes, base64
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    failed_at: AwareDatetime


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
