"""A per-API-key request-rate limit: one token bucket per key, in each worker process (pure, no I/O).

Each key may send `rate` requests a second on average and `burst` at once; past that the scorer
answers 429 with `Retry-After`. Buckets live in each uvicorn worker, so with N workers a key's
ceiling is N x `rate` (the settings say so); a limit shared across workers and replicas would take
a round trip to Redis per request, more than a scoring request costs here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """`take(key)` spends one token of the key's bucket: 0.0 when it had one, else seconds to wait."""

    rate: float  # tokens a second
    burst: float  # bucket size
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str) -> float:
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate
