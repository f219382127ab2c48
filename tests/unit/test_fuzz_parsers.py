"""Property tests (Hypothesis) of what hostile input meets first: the event and label parsers, the
dead-letter path, and the request-time features.

Whatever the bytes, one message ends as a valid row or as a dead letter with a reason, never as an
exception out of the per-message path (`services.ingest.Ingestor.process` and
`services.ingest_labels.LabelIngestor.process`, mirrored step by step below). Bounded:
`MAX_EXAMPLES` cases per property, the file runs in well under 30 s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fraud import features as F
from fraud.contracts import (
    MAX_AMOUNT,
    MAX_AMOUNT_USD,
    Asset,
    Channel,
    DeadLetter,
    FraudLabel,
    FraudType,
    PaymentMethod,
    Transaction,
    TransactionType,
    transaction_record,
)
from fraud.dlq import dead_letter, error_text
from fraud.event_time import EventTimePolicy
from fraud.settings import IngestSettings
from services.ingest import parse
from services.scorer.core import TIME_FEATURES, transaction_columns

MAX_EXAMPLES = 200
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULTS = IngestSettings()
POLICY = EventTimePolicy.of_seconds(
    DEFAULTS.ingest_max_future_skew_seconds,
    DEFAULTS.ingest_allowed_lateness_seconds,
    DEFAULTS.ingest_max_event_skew_hours * 3600,
)
TOPIC, PARTITION, OFFSET = "transactions", 3, 1234
PLAIN = Transaction(
    transaction_id="t1",
    event_time=datetime(2026, 1, 1, tzinfo=UTC),
    user_id="u1",
    type=TransactionType.SELL,
    asset=Asset.BTC,
    amount=1.0,
    amount_usd=1.0,
    payment_method=PaymentMethod.BALANCE,
    device_id="d1",
    ip_address="10.0.0.1",
    country="DE",
    channel=Channel.WEB,
)


# -- the per-message paths, step by step as the services run them ---------------------------------


def ingest_event(raw: bytes | None, max_bytes: int = DEFAULTS.ingest_dlq_max_bytes) -> dict[str, Any] | bytes:
    """`Ingestor.process` for one record: the row it keeps, or the dead letter it writes."""
    now_us = time.time_ns() // 1000
    try:
        row = transaction_record(parse(raw))
        t_us = int(row["event_time"].timestamp() * 1_000_000)
        refused = POLICY.violation(t_us, now_us, None)
        if refused is not None:
            raise ValueError(refused.reason)
    except Exception as exc:  # as the service does: whatever one message does, it is that message's fault
        reason = error_text(exc)
        assert reason.strip(), f"an empty reason for {type(exc).__name__}"
        return dead_letter(raw, reason, TOPIC, PARTITION, OFFSET, max_bytes)
    return row


def ingest_label(raw: bytes | None, max_bytes: int = DEFAULTS.ingest_dlq_max_bytes) -> dict[str, Any] | bytes:
    """`LabelIngestor.process` for one record: the row it keeps, or the dead letter it writes."""
    now_us = time.time_ns() // 1000
    try:
        if raw is None:
            raise ValueError("empty message (tombstone)")
        label = FraudLabel.model_validate_json(raw)
        t_us = int(label.label_time.timestamp() * 1_000_000)
        refused = POLICY.violation(t_us, now_us, None, field="label_time")
        if refused is not None:
            raise ValueError(refused.reason)
        row = label.model_dump(exclude={"schema_version"}) | {"fraud_type": label.fraud_type and label.fraud_type.value}
    except Exception as exc:
        reason = error_text(exc)
        assert reason.strip(), f"an empty reason for {type(exc).__name__}"
        return dead_letter(raw, reason, TOPIC, PARTITION, OFFSET, max_bytes)
    return row


def check_dead_letter(letter: bytes, raw: bytes | None, max_bytes: int) -> DeadLetter:
    """A dead letter is JSON within its bound, names its source and reason, and identifies the original."""
    assert len(letter) <= max_bytes
    parsed = DeadLetter.model_validate(json.loads(letter))  # plain JSON, and the contract's shape
    original = raw or b""
    kept = base64.b64decode(parsed.original_b64, validate=True)
    assert original.startswith(kept) and parsed.truncated == (len(kept) < len(original))
    assert parsed.original_length == len(original)
    assert parsed.original_sha256 == hashlib.sha256(original).hexdigest()
    assert parsed.error.strip()
    assert (parsed.source_topic, parsed.source_partition, parsed.source_offset) == (TOPIC, PARTITION, OFFSET)
    return parsed


def check_event_outcome(raw: bytes | None, max_bytes: int = DEFAULTS.ingest_dlq_max_bytes) -> None:
    out = ingest_event(raw, max_bytes)
    if isinstance(out, bytes):
        check_dead_letter(out, raw, max_bytes)
    else:  # kept: the row is the contract's, and reads back as the same event
        assert Transaction.model_validate(out) == parse(raw)
        assert out["event_time"].tzinfo is not None


def check_label_outcome(raw: bytes | None, max_bytes: int = DEFAULTS.ingest_dlq_max_bytes) -> None:
    out = ingest_label(raw, max_bytes)
    if isinstance(out, bytes):
        check_dead_letter(out, raw, max_bytes)
    else:
        assert isinstance(out["is_fraud"], bool) and out["label_time"].tzinfo is not None
        assert (out["fraud_type"] is None) == (not out["is_fraud"])


# -- strategies -------------------------------------------------------------------------------------

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=128)
recent = st.datetimes(
    min_value=datetime.now() - timedelta(days=700),  # inside the default maximum age (3 years) ...
    max_value=datetime.now() - timedelta(minutes=1),  # ... and not ahead of the clock
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
amounts = st.floats(min_value=0.0, max_value=MAX_AMOUNT, exclude_min=True, allow_subnormal=False)
usd = st.floats(min_value=0.0, max_value=MAX_AMOUNT_USD, allow_subnormal=False)


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    """Any event the contract accepts (the on-chain ones with their counterparty address)."""
    kind = draw(st.sampled_from(TransactionType))
    method = draw(st.sampled_from(PaymentMethod))
    on_chain_out = kind is TransactionType.SEND or (
        kind is TransactionType.WITHDRAWAL and method is PaymentMethod.CRYPTO
    )
    on_chain_in = kind is TransactionType.RECEIVE or (
        kind is TransactionType.DEPOSIT and method is PaymentMethod.CRYPTO
    )
    when = draw(recent).replace(tzinfo=UTC).astimezone(draw(offsets))
    return Transaction(
        transaction_id=draw(ids),
        event_time=when,
        user_id=draw(ids),
        type=kind,
        asset=draw(st.sampled_from(Asset)),
        amount=draw(amounts),
        amount_usd=draw(usd),
        payment_method=method,
        destination_address=draw(ids) if on_chain_out else draw(st.none() | ids),
        source_address=draw(ids) if on_chain_in else draw(st.none() | ids),
        device_id=draw(ids),
        ip_address=str(draw(st.ip_addresses())),
        country=draw(st.from_regex(r"[A-Z]{2}", fullmatch=True)),
        channel=draw(st.sampled_from(Channel)),
    )


@st.composite
def labels(draw: st.DrawFn) -> FraudLabel:
    fraud = draw(st.booleans())
    return FraudLabel(
        transaction_id=draw(ids),
        is_fraud=fraud,
        fraud_type=draw(st.sampled_from(FraudType)) if fraud else None,
        label_time=draw(recent).replace(tzinfo=UTC).astimezone(draw(offsets)),
    )


# Text that is not valid Unicode: lone surrogates (JSON escapes them; as UTF-8 they cannot be encoded).
surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=4)
hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),  # past any float and int64
    st.floats(allow_nan=True, allow_infinity=True),  # written as the NaN / Infinity tokens
    st.text(max_size=40),
    surrogates,
    st.sampled_from(["", " ", "0", "1e400", "2026-01-01T00:00:00", "0001-01-01T00:00:00+14:00", "::", "BTC\n"]),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def encode(value: Any, draw: st.DrawFn) -> bytes:
    """JSON text as a producer might send it: ASCII escapes, or raw UTF-8 (surrogates as invalid bytes)."""
    if draw(st.booleans()):
        return json.dumps(value, allow_nan=True).encode()
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> bytes:
    """A valid message with fields replaced, dropped or added, or the whole text cut or nested deep."""
    record: dict[str, Any] = json.loads(draw(valid).model_dump_json())
    names = sorted(record)
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)):
        change = draw(st.sampled_from(["replace", "replace", "drop", "wrap"]))
        if change == "replace":
            record[name] = draw(hostile_values)
        elif change == "drop":
            del record[name]
        else:
            record[name] = [[[record[name]]]]
    if draw(st.booleans()):
        record[draw(st.text(max_size=10))] = draw(hostile_values)  # a stray field
    raw = encode(record, draw)
    shape = draw(st.sampled_from(["as is", "as is", "cut", "deep", "duplicate id", "array"]))
    if shape == "cut":
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    if shape == "deep":
        depth = draw(st.integers(100, 5000))
        return b"[" * depth + raw + b"]" * depth
    if shape == "duplicate id":  # the same key twice, with different content
        return raw[:-1] + b', "transaction_id": "other"}' if raw.endswith(b"}") else raw
    if shape == "array":
        return b"[" + raw + b"]"
    return raw


# -- properties -------------------------------------------------------------------------------------


@given(raw=st.binary(max_size=4096) | st.none())
@example(raw=None)
@example(raw=b"")
@example(raw=b"\xff\xfe\x00")
@example(raw=b"[" * 100_000)
@FUZZ
def test_any_bytes_end_as_an_event_or_a_dead_letter(raw: bytes | None) -> None:
    check_event_outcome(raw)
    check_label_outcome(raw)


@given(txn=transactions())
@FUZZ
def test_every_valid_event_is_kept_as_it_was_sent(txn: Transaction) -> None:
    raw = txn.model_dump_json().encode()
    row = ingest_event(raw)
    assert isinstance(row, dict), json.loads(row)["error"]
    assert Transaction.model_validate(row) == txn


@given(raw=mutated(transactions()), max_bytes=st.sampled_from([4096, 16_384, DEFAULTS.ingest_dlq_max_bytes]))
@example(raw=b'{"transaction_id": "\\ud800"}', max_bytes=4096)
@example(raw=b'{"amount": NaN, "amount_usd": Infinity}', max_bytes=4096)
@FUZZ
def test_mutated_events_end_as_an_event_or_a_dead_letter(raw: bytes, max_bytes: int) -> None:
    check_event_outcome(raw, max_bytes)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_time": "0001-01-01T00:00:00+14:00"}, "event_time"),  # out of range once in UTC
        ({"event_time": "9999-12-31T23:59:59-14:00"}, "event_time"),
        ({"event_time": 1_767_225_600}, "event_time"),  # a Unix time: seconds or milliseconds?
        ({"event_time": "1767225600"}, "event_time"),
        ({"schema_version": True}, "schema_version"),
        ({"amount": 10**400}, "amount"),  # beyond float range: read as infinity, refused
    ],
)
def test_the_fuzzer_findings_are_dead_letters_naming_the_field(change: dict[str, Any], field: str) -> None:
    """Found by the properties above: each was an OverflowError or a silently coerced value."""
    event = json.loads(PLAIN.model_dump_json())
    letter = ingest_event(json.dumps(event | change).encode())
    assert isinstance(letter, bytes)
    assert json.loads(letter)["error"].startswith(f"{field}: ")


@given(raw=mutated(labels()), max_bytes=st.sampled_from([4096, DEFAULTS.ingest_dlq_max_bytes]))
@example(raw=b'{"transaction_id": "t", "is_fraud": false, "label_time": "0001-01-01T00:00:00+01:00"}', max_bytes=4096)
@FUZZ
def test_mutated_labels_end_as_a_label_or_a_dead_letter(raw: bytes, max_bytes: int) -> None:
    check_label_outcome(raw, max_bytes)


@pytest.mark.parametrize(
    "raw",
    [
        bytes(range(256)) * 2400,  # 600 KB of every byte value: control characters cost 6 bytes as JSON text
        b'"' + "é".encode() * 400_000 + b'"',  # 800 KB of two-byte characters
        PLAIN.model_dump_json().replace('"u1"', '"' + "u" * 900_000 + '"').encode(),  # the 900 KB poison pill
    ],
    ids=["binary", "multibyte", "poison-pill"],
)
def test_a_large_message_makes_a_dead_letter_within_the_bound(raw: bytes) -> None:
    check_event_outcome(raw, DEFAULTS.ingest_dlq_max_bytes)
    check_label_outcome(raw, DEFAULTS.ingest_dlq_max_bytes)


# -- the request-time features -----------------------------------------------------------------------

STORED_NUMERIC = sorted(set(F.stored_feature_names()) - TIME_FEATURES)  # known_* flags included
plausible = st.floats(min_value=0.0, max_value=1e15, allow_subnormal=False) | st.just(math.nan)


@st.composite
def stored_columns(draw: st.DrawFn, txns: list[Transaction]) -> dict[str, np.ndarray]:
    """A partial online row per transaction, as the scorer's `stored_columns` gives it: some features
    absent, the others NaN / NaT / None where the entity has no value."""
    n = len(txns)
    out: dict[str, np.ndarray] = {}
    for name in draw(st.lists(st.sampled_from(STORED_NUMERIC), max_size=len(STORED_NUMERIC), unique=True)):
        out[name] = np.array(draw(st.lists(plausible, min_size=n, max_size=n)), dtype=np.float64)
    for name in draw(st.lists(st.sampled_from(sorted(TIME_FEATURES)), unique=True)):
        us = [
            (t.event_time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            - draw(st.integers(0, 10 * 365 * 86400 * 10**6))
            for t in txns
        ]
        times = np.array(us, dtype="datetime64[us]")
        times[np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)] = np.datetime64("NaT")
        out[name] = times
    return out


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Transaction], dict[str, np.ndarray]]:
    txns = draw(st.lists(transactions(), min_size=1, max_size=5))
    return txns, draw(stored_columns(txns))


@given(batch=batches())
@example(batch=([PLAIN], {}))  # nothing stored at all: a new user, the online store down
@FUZZ
def test_request_features_are_finite_or_missing(batch: tuple[list[Transaction], dict[str, np.ndarray]]) -> None:
    txns, stored = batch
    columns = F.request_columns(transaction_columns(txns), stored)
    assert list(columns) == F.REQUEST_FEATURES
    for name, values in columns.items():
        floats = np.asarray(values, dtype=np.float64)
        assert floats.shape == (len(txns),), name
        assert not np.isinf(floats).any(), f"{name}: {floats}"


def test_request_features_with_subnormal_stored_values_are_finite() -> None:
    """A subnormal mean or balance (amounts of 5e-324 pass the contract) made the ratios infinite."""
    tiny = np.array([5e-324])
    stored = {"txn_count_total": np.array([1.0]), "usd_mean_30d": tiny, "balance_BTC": tiny}
    columns = F.request_columns(transaction_columns([PLAIN]), stored)
    assert not any(np.isinf(np.asarray(v, dtype=np.float64)).any() for v in columns.values())
