"""The event-time policy: minutes, days and decades off, in both directions."""

from __future__ import annotations

import pytest

from fraud.event_time import EventTimePolicy

US = 1_000_000
MIN, DAY, YEAR = 60 * US, 86400 * US, 365 * 86400 * US
NOW = 1_800_000_000 * US
POLICY = EventTimePolicy(max_skew_us=5 * MIN, allowed_lateness_us=DAY, max_age_us=3 * YEAR)


@pytest.mark.parametrize(
    ("offset", "watermark", "bound"),
    [
        (0, None, None),
        (4 * MIN, NOW, None),  # within the clock skew
        (6 * MIN, NOW, "ahead"),
        (2 * DAY, NOW, "ahead"),
        (50 * YEAR, NOW, "ahead"),
        (-30 * MIN, NOW, None),  # late, within the allowed lateness
        (-23 * 3600 * US, NOW, None),
        (-2 * DAY, NOW, "late"),
        (-2 * DAY, None, None),  # no watermark yet (a fresh stream): only the clock bounds
        (-30 * YEAR, None, "old"),
        (-30 * YEAR, NOW, "late"),
    ],
)
def test_event_time_bounds(offset: int, watermark: int | None, bound: str | None) -> None:
    refused = POLICY.violation(NOW + offset, NOW, watermark)
    assert (refused and refused.bound) == bound
    if refused is not None:
        assert refused.reason.startswith("event_time: ")


def test_the_watermark_bounds_lateness_not_the_clock() -> None:
    """A replayed history (watermark days behind the clock) takes its own late events."""
    watermark = NOW - 40 * DAY
    assert POLICY.violation(watermark - 3600 * US, NOW, watermark) is None
    assert POLICY.violation(watermark - 2 * DAY, NOW, watermark) is not None
