"""Stream a history to Kafka: vectorized JSON rendering and partitioning, then one tight send loop.

Values are the contracts' JSON (`Transaction` / `FraudLabel`); keys are user_id for transactions (per-user
order within a partition) and transaction_id for labels. Transactions and labels interleave in time order:
a label goes out when its label_time is reached in simulated time.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kafka.partitioner.default import murmur2

from pipelines.simulator.generate import History

log = logging.getLogger(__name__)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Arrow renders seconds with the microseconds of a timestamp[us]


def _s(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.string())


def _join(*parts: pa.Array | pa.Scalar) -> pa.Array:
    return pc.binary_join_element_wise(*parts, _s(""))


def _quoted(col: pa.Array) -> pa.Array:
    """JSON string literal, or `null` (values are from safe alphabets: no escaping needed)."""
    quoted = _join(_s('"'), col, _s('"'))
    return pc.if_else(pc.is_null(col), _s("null"), quoted)


def _number(col: pa.Array) -> pa.Array:
    """JSON float literal as pydantic writes it (always with a decimal point or exponent)."""
    text = pc.cast(col, pa.string())
    has_point = pc.match_substring_regex(text, r"[.eE]")
    return pc.if_else(has_point, text, _join(text, _s(".0")))


def _time(col: pa.Array) -> pa.Array:
    return pc.strftime(col, format=_TIME_FORMAT)


@dataclass
class Rendered:
    """JSON values split around the timestamp (so real-time mode can stamp it at send time)."""

    head: list[bytes]  # up to and including the opening quote of the timestamp
    time: list[bytes]
    tail: list[bytes]


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


def render_transactions(table: pa.Table) -> Rendered:
    """`Transaction.model_dump_json()`-equivalent values for every row of a transactions table."""
    c = {name: _column(table, name) for name in table.column_names}
    head = _join(
        _s('{"schema_version":'), pc.cast(c["schema_version"], pa.string()),
        _s(',"transaction_id":"'), c["transaction_id"], _s('","event_time":"'),
    )  # fmt: skip
    tail = _join(
        _s('","user_id":"'), c["user_id"], _s('","type":"'), c["type"], _s('","asset":"'), c["asset"],
        _s('","amount":'), _number(c["amount"]), _s(',"amount_usd":'), _number(c["amount_usd"]),
        _s(',"payment_method":"'), c["payment_method"],
        _s('","destination_address":'), _quoted(c["destination_address"]),
        _s(',"source_address":'), _quoted(c["source_address"]),
        _s(',"device_id":"'), c["device_id"], _s('","ip_address":"'), c["ip_address"],
        _s('","country":"'), c["country"], _s('","channel":"'), c["channel"], _s('"}'),
    )  # fmt: skip
    return Rendered(_bytes(head), _bytes(_time(c["event_time"])), _bytes(tail))


def render_labels(table: pa.Table) -> Rendered:
    """`FraudLabel.model_dump_json()`-equivalent values for every row of a labels table."""
    c = {name: _column(table, name) for name in table.column_names}
    is_fraud = pc.if_else(c["is_fraud"], _s("true"), _s("false"))
    head = _join(
        _s('{"schema_version":1,"transaction_id":"'), c["transaction_id"], _s('","is_fraud":'), is_fraud,
        _s(',"fraud_type":'), _quoted(c["fraud_type"]), _s(',"label_time":"'),
    )  # fmt: skip
    tail = pa.array([b'"}'] * len(table), pa.binary())
    return Rendered(_bytes(head), _bytes(_time(c["label_time"])), tail.to_pylist())


def _bytes(arr: pa.Array) -> list[bytes]:
    return pc.cast(arr, pa.binary()).to_pylist()


def partitions(keys: pa.Array, n_partitions: int) -> np.ndarray:
    """Kafka's default partition (murmur2 of the key) for each key, vectorized for equal-length keys."""
    binary = pc.cast(keys, pa.binary())
    lengths = pc.binary_length(binary).to_numpy()
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    if lengths.min() != lengths.max():
        return np.array([(murmur2(k) & 0x7FFFFFFF) % n_partitions for k in binary.to_pylist()])
    length = int(lengths[0])
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)
    offset = binary.offset * 0 + int(np.frombuffer(binary.buffers()[1], dtype=np.int32)[binary.offset])
    data = data[offset : offset + length * len(binary)].reshape(-1, length).astype(np.uint32)
    return (_murmur2(data) & np.uint32(0x7FFFFFFF)).astype(np.int64) % n_partitions


def _murmur2(data: np.ndarray) -> np.ndarray:
    """Kafka's murmur2 over the rows of an (n, length) uint32 array of bytes."""
    n, length = data.shape
    m = np.uint32(0x5BD1E995)
    h = np.full(n, 0x9747B28C ^ length, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for i in range(length // 4):
            k = data[:, 4 * i] | (data[:, 4 * i + 1] << 8) | (data[:, 4 * i + 2] << 16) | (data[:, 4 * i + 3] << 24)
            k = k * m
            k ^= k >> np.uint32(24)
            k = k * m
            h = (h * m) ^ k
        extra, base = length % 4, length & ~3
        if extra >= 3:
            h ^= data[:, base + 2] << 16
        if extra >= 2:
            h ^= data[:, base + 1] << 8
        if extra >= 1:
            h ^= data[:, base]
            h = h * m
        h ^= h >> np.uint32(13)
        h = h * m
        h ^= h >> np.uint32(15)
    return h


@dataclass
class StreamStats:
    """What `stream` sent and how fast."""

    transactions: int
    labels: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Messages per second, transactions and labels together."""
        return (self.transactions + self.labels) / self.seconds if self.seconds else 0.0


def stream(
    history: History,
    producer: Any,
    transactions_topic: str,
    labels_topic: str,
    rate: float = 0.0,
    realtime: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> StreamStats:
    """Send transactions and labels interleaved in time order; `rate` > 0 caps messages per second."""
    tx, lb = history.transactions, history.labels
    tx_times = pc.cast(_column(tx, "event_time"), pa.int64()).to_numpy()
    lb_times = pc.cast(_column(lb, "label_time"), pa.int64()).to_numpy()
    order = np.argsort(np.concatenate([tx_times, lb_times]), kind="stable")
    n_tx = len(tx)
    rt, rl = render_transactions(tx), render_labels(lb)
    tx_keys, lb_keys = _column(tx, "user_id"), _column(lb, "transaction_id")
    tx_part = partitions(tx_keys, len(producer.partitions_for(transactions_topic)))
    lb_part = partitions(lb_keys, len(producer.partitions_for(labels_topic)))

    def merged(a: list[Any], b: list[Any]) -> list[Any]:
        both = np.empty(len(a) + len(b), dtype=object)
        both[: len(a)], both[len(a) :] = a, b
        return both[order].tolist()

    is_label = (order >= n_tx).tolist()
    keys = merged(_bytes(tx_keys), _bytes(lb_keys))
    parts = np.concatenate([tx_part, lb_part])[order].tolist()
    heads, times, tails = (merged(getattr(rt, f), getattr(rl, f)) for f in ("head", "time", "tail"))
    topic_of = [(transactions_topic, labels_topic)[j] for j in is_label]
    send = producer.send
    # Millions of live objects make each cyclic-GC pass slow; nothing here forms cycles worth collecting.
    gc_was_enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        started = time.perf_counter()
        seconds = _send_all(send, topic_of, heads, times, tails, keys, parts, rate, realtime, on_progress)
        producer.flush()
        seconds = time.perf_counter() - started
    finally:
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    log.info("sent %d transactions and %d labels in %.1fs", n_tx, len(lb), seconds)
    return StreamStats(transactions=n_tx, labels=len(lb), seconds=seconds)


def _send_all(
    send: Callable[..., Any],
    topic_of: list[str],
    heads: list[bytes],
    times: list[bytes],
    tails: list[bytes],
    keys: list[bytes],
    parts: list[int],
    rate: float,
    realtime: bool,
    on_progress: Callable[[int], None] | None,
) -> float:
    """The send loop, in chunks (progress and pacing between chunks); returns seconds spent."""
    started = time.perf_counter()
    chunk = 5000
    for lo in range(0, len(topic_of), chunk):
        hi = min(lo + chunk, len(topic_of))
        if realtime:
            for i in range(lo, hi):
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
                send(topic_of[i], value=heads[i] + stamp + tails[i], key=keys[i], partition=parts[i])
                if rate > 0 and i % 50 == 0:
                    _pace(i + 1, rate, started)
        else:
            values = [h + t + e for h, t, e in zip(heads[lo:hi], times[lo:hi], tails[lo:hi], strict=True)]
            for topic, value, key, part in zip(topic_of[lo:hi], values, keys[lo:hi], parts[lo:hi], strict=True):
                send(topic, value=value, key=key, partition=part)
        if on_progress:
            on_progress(hi - lo)
        if rate > 0:
            _pace(hi, rate, started)
    return time.perf_counter() - started


def _pace(sent: int, rate: float, started: float) -> None:
    """Sleep until `sent` messages are due at `rate` per second."""
    ahead = sent / rate - (time.perf_counter() - started)
    if ahead > 0:
        time.sleep(ahead)
