"""The event-time policy: event time is untrusted input, bounded on both sides before it reaches state.

An event dated more than `max_skew` ahead of the wall clock, or more than `allowed_lateness` behind
the stream's watermark (the latest event time the state has taken), or older than `max_age`, is
rejected with its reason. Without it one event dated 50 years ahead moved the state's watermark, and
the state let go of every retained event; with the batch check on, it quarantined its whole batch.
Pure: times are int64 microseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

US = 1_000_000


class Refusal(NamedTuple):
    """Which bound an event broke ("ahead", "late" or "old") and why, in words."""

    bound: str
    reason: str


def _span(us: int) -> str:
    s = abs(us) / US
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.1f} seconds"


@dataclass(frozen=True)
class EventTimePolicy:
    """Bounds on an event's time relative to the wall clock and to the stream's watermark."""

    max_skew_us: int
    allowed_lateness_us: int
    max_age_us: int

    @classmethod
    def of_seconds(cls, max_skew: float, allowed_lateness: float, max_age: float) -> EventTimePolicy:
        return cls(int(max_skew * US), int(allowed_lateness * US), int(max_age * US))

    def violation(self, t_us: int, now_us: int, watermark_us: int | None, field: str = "event_time") -> Refusal | None:
        """Why a time `t_us` is refused (None: accepted)."""
        if t_us > now_us + self.max_skew_us:
            ahead = f"{_span(t_us - now_us)} ahead of the clock (allowed skew {_span(self.max_skew_us)})"
            return Refusal("ahead", f"{field}: {ahead}")
        if watermark_us is not None and t_us < watermark_us - self.allowed_lateness_us:
            behind = f"{_span(watermark_us - t_us)} behind the stream's watermark"
            return Refusal("late", f"{field}: {behind} (allowed lateness {_span(self.allowed_lateness_us)})")
        if t_us < now_us - self.max_age_us:
            return Refusal("old", f"{field}: {_span(now_us - t_us)} old (maximum age {_span(self.max_age_us)})")
        return None
