"""Retry decisions: what to do after one delivery attempt.

Everything here is pure. The caller supplies the clock (``now``, epoch
seconds) and the random source (``rand``, e.g. ``random.random``) so the
schedule can be tested exactly and replayed deterministically.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_SCHEDULE",
    "GONE",
    "JITTER",
    "RETRY_AFTER_STATUSES",
    "Decision",
    "Outcome",
    "decide",
    "parse_retry_after",
    "parse_schedule",
]

# Delay before attempt n+1 after attempt n failed; Svix's production schedule:
# 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h -> 8 attempts over about 27.6 h.
DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # seconds
# Spreads retries of a burst of failed messages so a recovering endpoint is
# not hit by all of them in the same second.
JITTER = 0.2  # fraction of the step, applied as +/-
# Statuses whose Retry-After we honour: the receiver is telling us when it
# expects to be healthy again. Other statuses' Retry-After is ignored.
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
# Endpoint asked to be forgotten (RFC 9110 "Gone"): stop, and disable it.
GONE = 410  # HTTP status

# RFC 9110 delta-seconds is 1*DIGIT; a fractional part is tolerated because
# some servers send one. Anything looser (signs, exponents, "nan",
# underscores) is rejected rather than guessed at.
_DELTA_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")


class Outcome(enum.Enum):
    """What the delivery loop should do with a message after an attempt."""

    SUCCESS = "success"
    RETRY = "retry"
    EXHAUSTED = "exhausted"
    DISABLE = "disable"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one attempt; ``delay`` (seconds) is set only for RETRY."""

    outcome: Outcome
    delay: float | None = None

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.RETRY) != (self.delay is not None):
            raise ValueError("a delay is required for RETRY and only for RETRY")
        if self.delay is not None and not self.delay >= 0:
            raise ValueError(f"retry delay must be >= 0 seconds, got {self.delay}")

    def next_at(self, now: float) -> float | None:
        """Return when the next attempt is due (epoch seconds), or None."""
        return None if self.delay is None else now + self.delay


def parse_schedule(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of delays in seconds, e.g. ``"5, 300, 1800"``.

    Raises ``ValueError`` naming the offending item when the list is empty or
    an item is not a finite, non-negative number.
    """
    if not text.strip():
        raise ValueError("retry schedule is empty; expected seconds such as '5,300,1800'")
    delays: list[float] = []
    for position, item in enumerate(text.split(","), start=1):
        item = item.strip()
        try:
            delay = float(item)
        except ValueError:
            raise ValueError(
                f"retry schedule item {position} ({item!r}) is not a number of seconds"
            ) from None
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(
                f"retry schedule item {position} ({item!r}) must be a finite, "
                "non-negative number of seconds"
            )
        delays.append(delay)
    return tuple(delays)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the delay (seconds, >= 0) a ``Retry-After`` header asks for.

    Accepts delta-seconds or an HTTP-date, which is taken relative to ``now``
    (epoch seconds). Returns None when the header is absent or unparseable;
    a date in the past yields 0.0.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS_RE.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # "-0000" means "UTC, source zone unknown"; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def decide(
    *,
    schedule: Sequence[float],
    attempt: int,
    status: int,
    retry_after: str | None,
    now: float,
    rand: Callable[[], float],
) -> Decision:
    """Decide what follows attempt number ``attempt`` (1-based).

    ``status`` is the HTTP status received, or 0 when no response arrived
    (transport error, timeout, refused by the egress guard). ``schedule``
    holds the delay before each retry, so a message gets at most
    ``len(schedule) + 1`` attempts. ``rand`` returns a float in [0, 1).

    2xx succeeds; 410 disables the endpoint; anything else -- 3xx included,
    because redirects are never followed -- is retried until the schedule
    runs out. Retry-After is honoured for 429/502/503/504 but clamped to
    [step, 2 * step] so a receiver can neither hurry nor stall us.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if 200 <= status <= 299:
        return Decision(Outcome.SUCCESS)
    if status == GONE:
        return Decision(Outcome.DISABLE)
    if attempt > len(schedule):
        return Decision(Outcome.EXHAUSTED)
    step = schedule[attempt - 1]
    if status in RETRY_AFTER_STATUSES:
        hinted = parse_retry_after(retry_after, now)
        if hinted is not None:
            return Decision(Outcome.RETRY, min(max(hinted, step), 2 * step))
    # Clamped so a misbehaving random source cannot produce a negative delay.
    r = min(max(rand(), 0.0), 1.0)
    return Decision(Outcome.RETRY, step * (1 + JITTER * (2 * r - 1)))
