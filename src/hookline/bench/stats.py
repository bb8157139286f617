"""What the receiver reports, shared by the receiver process and the benchmark runner."""

from __future__ import annotations

import array

import msgspec


class Arrivals(msgspec.Struct, kw_only=True):
    """The 200 answers on one receiver path (``/ok/<n>``): how many, the first and the last."""

    requests: int
    first_at: float  # wall clock
    last_at: float


class Stats(msgspec.Struct, kw_only=True):
    ok: int = 0  # 200 answers, duplicates included
    unique: int = 0  # distinct seq numbers answered 200
    fail: int = 0
    slow: int = 0
    first_at: float | None = None  # wall clock of the first and last 200
    last_at: float | None = None
    latency_ms: dict[str, float] | None = None
    # only with ``?endpoints=1``: per ``<n>`` of ``/ok/<n>`` (the polls during a phase skip it)
    endpoints: dict[str, Arrivals] | None = None


def percentiles(values: array.array[float]) -> dict[str, float]:
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}
