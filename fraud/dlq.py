"""Dead letters: a bounded record for any rejected message, and a DLQ write that never fails silently.

A record holds the original message whole when it fits in `max_bytes` (the producer's request size
less headroom), else the longest prefix that does, with the original's length and SHA-256: a 900 KB
message used to make a 2 MB record (text plus base64) that the producer refused, and the ingest died
on the same offset at every restart. Writing to the DLQ is retried; when it still fails the stage
stops with `DeadLetterError` before committing past the message, so nothing is lost or skipped.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from datetime import UTC, datetime

from kafka import KafkaProducer
from pydantic import ValidationError

from fraud.contracts import DeadLetter

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


class DeadLetterError(RuntimeError):
    """The DLQ did not take a record after every retry: the stage must stop without committing."""


def error_text(exc: Exception) -> str:
    """The reason a message was rejected, field by field for a contract violation."""
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
    else:
        text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS] or type(exc).__name__


def dead_letter(raw: bytes | None, error: str, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
    """The DLQ record of one message, at most `max_bytes` long (see the module's docstring)."""
    raw = raw or b""
    digest = hashlib.sha256(raw).hexdigest()
    failed_at = datetime.now(UTC)

    def record(kept: bytes) -> bytes:
        letter = DeadLetter(
            original=kept.decode("utf-8", errors="replace"),
            original_b64=base64.b64encode(kept).decode(),
            original_length=len(raw),
            original_sha256=digest,
            truncated=len(kept) < len(raw),
            error=error[:MAX_ERROR_CHARS],
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            failed_at=failed_at,
        )
        return letter.model_dump_json().encode()

    payload = record(raw)
    keep = len(raw)
    while len(payload) > max_bytes and keep > 0:
        # UTF-8 text plus base64 is ~2.3 bytes per byte; escaped control bytes cost more: halve until it fits
        keep = min(keep // 2, max_bytes // 3)
        payload = record(raw[:keep])
    return payload


def send_dead_letters(
    producer: KafkaProducer,
    topic: str,
    letters: list[tuple[bytes | None, bytes]],
    attempts: int = 5,
    backoff_s: float = 1.0,
) -> None:
    """Write (key, record) pairs to the DLQ and wait for the broker; retried, then `DeadLetterError`."""
    todo = letters
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        futures = []
        failed: list[tuple[bytes | None, bytes]] = []
        for key, value in todo:
            try:
                futures.append(((key, value), producer.send(topic, key=key, value=value)))
            except Exception as exc:  # the send itself refused (size, buffer): retry, then stop
                failed.append((key, value))
                last = exc
        producer.flush()
        for item, fut in futures:
            try:
                fut.get(timeout=60)
            except Exception as exc:  # any broker error: retry, then stop
                failed.append(item)
                last = exc
        if not failed:
            return
        log.warning("%d dead letters not taken by %s (attempt %d/%d): %s", len(failed), topic, attempt, attempts, last)
        todo = failed
        if attempt < attempts:
            time.sleep(backoff_s * attempt)
    raise DeadLetterError(
        f"{len(todo)} rejected messages could not be written to {topic} after {attempts} attempts ({last}); "
        "stopping without committing past them: they are read again at the next start"
    )
