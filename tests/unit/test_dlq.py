"""Dead letters: bounded records that still identify the original, and a DLQ write that stops loudly."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud.dlq import DeadLetterError, dead_letter, send_dead_letters


def _open(record: bytes) -> dict[str, Any]:
    letter: dict[str, Any] = json.loads(record)
    return letter


@given(raw=st.binary(max_size=20_000), limit=st.integers(min_value=4096, max_value=40_000))
@settings(max_examples=150, deadline=None)
def test_a_dead_letter_fits_its_bound_and_identifies_the_original(raw: bytes, limit: int) -> None:
    record = dead_letter(raw, "why", "t", 0, 7, max_bytes=limit)
    letter = _open(record)
    assert len(record) <= limit
    kept = base64.b64decode(letter["original_b64"])
    assert raw.startswith(kept)
    assert letter["truncated"] == (len(kept) < len(raw))
    assert letter["original_length"] == len(raw)
    assert letter["original_sha256"] == hashlib.sha256(raw).hexdigest()


def test_a_message_that_fits_is_kept_whole_and_a_big_one_keeps_a_prefix() -> None:
    small = b'{"transaction_id": "x"}'
    assert base64.b64decode(_open(dead_letter(small, "e", "t", 0, 1, 512 * 1024))["original_b64"]) == small
    big = b"a" * 900 * 1024
    letter = _open(dead_letter(big, "e", "t", 0, 1, 512 * 1024))
    kept = base64.b64decode(letter["original_b64"])
    assert letter["truncated"] and 100_000 < len(kept) < len(big)


def test_a_null_message_is_a_dead_letter_of_length_zero() -> None:
    letter = _open(dead_letter(None, "empty message (tombstone)", "t", 2, 3, 4096))
    assert letter["original_length"] == 0 and not letter["truncated"] and letter["original_b64"] == ""


class _Sent:
    """What kafka-python's `send` returns: a future with `get(timeout)`."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class _Producer:
    """A producer whose broker refuses the first `failures` sends."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> _Sent:
        if self.failures > 0:
            self.failures -= 1
            return _Sent(RuntimeError("broker says no"))
        self.sent.append(value)
        return _Sent(None)

    def flush(self) -> None:
        pass


def test_a_failed_dead_letter_is_retried() -> None:
    producer = _Producer(failures=2)
    send_dead_letters(producer, "dlq", [(b"k", b"a"), (b"k", b"b")], attempts=3, backoff_s=0)
    assert sorted(producer.sent) == [b"a", b"b"]


def test_a_dead_letter_the_broker_never_takes_stops_the_stage_with_a_clear_error() -> None:
    producer = _Producer(failures=100)
    with pytest.raises(DeadLetterError, match=r"could not be written to dlq after 3 attempts.*without committing"):
        send_dead_letters(producer, "dlq", [(None, b"a")], attempts=3, backoff_s=0)
