"""The scoring API's request and response bodies (a request is a `fraud.contracts.Transaction`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fraud.contracts import Transaction
from services.scorer.core import Scored

Decision = Literal["approve", "review", "decline"]


def _on_chain(types: dict[str, Any], address: str) -> dict[str, Any]:
    """JSON Schema: when the properties match `types`, `address` is required and not null."""
    return {
        "if": {"properties": {k: {"const": v} for k, v in types.items()}, "required": list(types)},
        "then": {"required": [address], "properties": {address: {"type": "string"}}},
    }


def _as_validated(schema: dict[str, Any]) -> None:
    """Say in the JSON Schema what `Transaction`'s validators check in code (the OpenAPI as strict as the API).

    The IP address is an IPv4 or IPv6 address (`ipaddress.ip_address`); the event time converts to UTC
    within the calendar; an on-chain transfer names its counterparty address (`Transaction._addresses`)."""
    ip = schema["properties"]["ip_address"]
    ip.update(minLength=2, anyOf=[{"format": "ipv4"}, {"format": "ipv6"}])
    # a time must convert to UTC within the calendar (`Transaction._utc`): years 0002-9998 always do
    years = r"(000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    schema["properties"]["event_time"]["pattern"] = f"^{years}-"
    schema["allOf"] = [
        _on_chain({"type": "send"}, "destination_address"),
        _on_chain({"type": "withdrawal", "payment_method": "crypto"}, "destination_address"),
        _on_chain({"type": "receive"}, "source_address"),
        _on_chain({"type": "deposit", "payment_method": "crypto"}, "source_address"),
    ]


class TransactionRequest(Transaction):
    """A transaction to score: the `Transaction` contract, validated by it, with a JSON Schema that says all of it."""

    model_config = ConfigDict(json_schema_extra=_as_validated)


class ReasonCode(BaseModel):
    """A feature that pushed the fraud score up, in plain words, with its value and contribution."""

    code: str = Field(description="the model feature")
    description: str = Field(description="the feature in plain words")
    value: float | None = Field(description="the feature's value for this transaction (null: missing)")
    contribution: float = Field(description="its contribution to the raw score (log-odds units)")


class FeatureFreshness(BaseModel):
    as_of: datetime = Field(description="event time of the online row the features came from")
    age_seconds: float = Field(description="how old that row was at the transaction's event time")


class ScoreResponse(BaseModel):
    """The verdict on one transaction."""

    model_config = ConfigDict(protected_namespaces=())

    transaction_id: str
    score: float = Field(ge=0.0, le=1.0, description="calibrated fraud probability")
    decision: Decision
    reason_codes: list[ReasonCode] = Field(
        description="the features that raised the score most, largest first; given for every review and "
        "decline, and for approvals when asked (?explain=true, or FRAUD_SCORER_EXPLAIN=all)"
    )
    explained: bool = Field(description="whether reason codes, base_value and other_contribution were computed")
    model_version: str
    raw_score: float = Field(description="the model's raw score (log-odds) before calibration")
    base_value: float | None = Field(description="the raw score of an average transaction (null: not explained)")
    other_contribution: float | None = Field(
        description="what the other features add: base_value + reason contributions + this = raw_score"
    )
    degraded: bool = Field(description="true when the online store was unreachable: request features only")
    missing_features: list[str] = Field(description="feature groups with no online row for this transaction")
    feature_freshness: dict[str, FeatureFreshness]

    @classmethod
    def of(cls, s: Scored) -> ScoreResponse:
        """The response body for a core result."""
        return cls(
            transaction_id=s.transaction.transaction_id,
            score=s.score,
            decision=s.decision,
            reason_codes=[ReasonCode(**vars(r)) for r in s.reasons],
            explained=s.explained,
            model_version=s.model_version,
            raw_score=s.raw_score,
            base_value=s.base_value,
            other_contribution=s.other_contribution,
            degraded=s.degraded,
            missing_features=s.missing,
            feature_freshness={
                k: FeatureFreshness(as_of=f.as_of, age_seconds=f.age_seconds) for k, f in s.freshness.items()
            },
        )


class BatchRequest(BaseModel):
    """Several transactions scored in one call (at most FRAUD_SCORER_BATCH_MAX)."""

    model_config = ConfigDict(extra="forbid")

    transactions: list[TransactionRequest] = Field(min_length=1)


class BatchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    results: list[ScoreResponse]


class ModelInfo(BaseModel):
    """The model serving traffic."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    alias: str
    version: str
    run_id: str | None
    loaded_at: datetime
    thresholds: dict[str, float]
    feature_count: int


class Status(BaseModel):
    status: str
    detail: str | None = None
    model_version: str | None = None


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error: a short message, the offending fields for 422, never a stack trace."""

    error: str
    fields: list[ErrorField] = Field(default_factory=list)
    request_id: str | None = None
