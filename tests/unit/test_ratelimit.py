"""The per-key token bucket: a burst, then the average rate, each key on its own."""

from __future__ import annotations

from services.scorer.ratelimit import RateLimiter


def test_a_key_gets_its_burst_then_its_rate_and_others_are_untouched() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.1  # empty: one token takes 0.1 s
    assert limiter.take("b") == 0.0
    now[0] = 0.1
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    now[0] = 100.0  # idle for long: the bucket refills to its burst, not beyond
    assert [limiter.take("a") for _ in range(4)][-1] > 0
