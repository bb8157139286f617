"""Per-endpoint rate limits as a token bucket: pure arithmetic, the clock is an argument.

An endpoint's ``rateLimit`` (messages per second) refills its bucket continuously; each
delivery started takes one token. The bucket holds at most a quarter second's worth
(``BURST_SECONDS``), at least one token: a bucket of a full second would let an endpoint that
was idle receive twice its limit in the following second. The bucket lives in the store
(``EndpointHealth.tokens``) and is spent inside the claim transaction, so every worker process
on one database draws from the same bucket.
"""

from __future__ import annotations

BURST_SECONDS = 0.25  # the bucket's size, in seconds of the endpoint's rate


def capacity(rate: float) -> float:
    """How many tokens a full bucket holds."""
    return max(1.0, rate * BURST_SECONDS)


def available(tokens: float | None, tokens_at: float | None, rate: float, now: float) -> float:
    """Tokens in the bucket at ``now``; ``tokens`` None means a bucket never drawn from (full)."""
    full = capacity(rate)
    if tokens is None or tokens_at is None:
        return full
    # A clock that stepped back refills nothing rather than draining the bucket.
    return min(full, tokens + max(0.0, now - tokens_at) * rate)


def allowance(tokens: float | None, tokens_at: float | None, rate: float, now: float) -> int:
    """How many deliveries may start at ``now``."""
    # The epsilon absorbs float error: epoch seconds carry ~0.2 µs of precision, so 0.05 s at
    # 20/s may compute as 0.99999 tokens, which must count as one.
    return int(available(tokens, tokens_at, rate, now) + 1e-4)


def spend(
    tokens: float | None, tokens_at: float | None, rate: float, now: float, taken: int
) -> float:
    """The bucket's level at ``now`` after ``taken`` deliveries started."""
    return max(0.0, available(tokens, tokens_at, rate, now) - taken)
