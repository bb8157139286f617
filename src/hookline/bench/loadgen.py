"""The load generator: the same payloads posted to hookline's ingest or straight to the receiver.

Every payload carries ``seq`` (which message) and ``ts`` (wall clock just before the POST), so the
receiver can count each message once and measure ingest→delivery latency. ``blast`` keeps a
fixed number of requests in flight (open throttle); ``paced`` offers a fixed rate.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from hookline.bench.stats import percentiles

EVENT_TYPE = "bench.event"


@dataclass(slots=True)
class Progress:
    """Counters the live display reads while a phase runs."""

    sent: int = 0
    accepted: int = 0
    accepted_healthy: int = 0  # accepted messages bound for endpoints that answer 200
    errors: int = 0
    first_error: str | None = None
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))


class LoadResult(msgspec.Struct, kw_only=True):
    sent: int
    accepted: int  # 2xx answers
    errors: int
    first_error: str | None
    seconds: float
    rate: float  # accepted per second
    post_latency_ms: dict[str, float] | None  # client-side time of each POST


@dataclass(frozen=True, slots=True)
class Target:
    """Where message ``seq`` goes and what its body is."""

    url: Callable[[int], str]
    body: Callable[[int], bytes]
    headers: dict[str, str]
    healthy: Callable[[int], bool]


def payload(seq: int, pad: str) -> bytes:
    return b'{"seq":%d,"ts":%.6f,"pad":"%s"}' % (seq, time.time(), pad.encode())


def padding(payload_bytes: int) -> str:
    return "x" * max(0, payload_bytes - len(payload(0, "")))


def hookline_target(
    base_url: str, token: str, app_ids: list[str], unhealthy: int, payload_bytes: int
) -> Target:
    """Ingest through the API, round-robin over the applications; the first ``unhealthy``
    applications' endpoints hang or fail."""
    pad = padding(payload_bytes)
    urls = [f"{base_url}/api/v1/app/{a}/msg" for a in app_ids]
    head = b'{"eventType":"%s","payload":' % EVENT_TYPE.encode()
    return Target(
        url=lambda seq: urls[seq % len(urls)],
        body=lambda seq: head + payload(seq, pad) + b"}",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        healthy=lambda seq: seq % len(urls) >= unhealthy,
    )


def raw_target(receiver_url: str, payload_bytes: int) -> Target:
    """The raw pipe: the same payload bodies straight to the receiver, no hookline between."""
    pad = padding(payload_bytes)
    url = f"{receiver_url}/ok/raw"
    return Target(
        url=lambda seq: url,
        body=lambda seq: payload(seq, pad),
        headers={"content-type": "application/json"},
        healthy=lambda seq: True,
    )


def new_session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _post(session: aiohttp.ClientSession, target: Target, seq: int, p: Progress) -> None:
    p.sent += 1
    started = time.perf_counter()
    try:
        async with session.post(
            target.url(seq), data=target.body(seq), headers=target.headers, allow_redirects=False
        ) as r:
            await r.read()
            ok = 200 <= r.status < 300
            error = None if ok else f"HTTP {r.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    if ok:
        p.accepted += 1
        if target.healthy(seq):
            p.accepted_healthy += 1
        p.latencies.append((time.perf_counter() - started) * 1000.0)
    else:
        p.errors += 1
        if p.first_error is None:
            p.first_error = error


def _result(p: Progress, seconds: float) -> LoadResult:
    return LoadResult(
        sent=p.sent,
        accepted=p.accepted,
        errors=p.errors,
        first_error=p.first_error,
        seconds=round(seconds, 3),
        rate=round(p.accepted / seconds, 1) if seconds > 0 else 0.0,
        post_latency_ms=percentiles(p.latencies) if p.latencies else None,
    )


async def blast(
    session: aiohttp.ClientSession,
    target: Target,
    count: int,
    concurrency: int,
    progress: Progress,
    *,
    deadline: float,
) -> LoadResult:
    """Post ``count`` messages with ``concurrency`` in flight, stopping at ``deadline``."""
    seqs = iter(range(count))
    started = time.perf_counter()

    async def lane() -> None:
        for seq in seqs:  # the shared iterator hands each seq to exactly one lane
            if time.monotonic() > deadline:
                return
            await _post(session, target, seq, progress)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return _result(progress, time.perf_counter() - started)


async def paced(
    session: aiohttp.ClientSession,
    target: Target,
    rate: float,
    seconds: float,
    max_inflight: int,
    progress: Progress,
) -> LoadResult:
    """Offer ``rate`` messages per second for ``seconds``; at most ``max_inflight`` at once.

    Sends are scheduled on a fixed timetable (open loop), so a slow answer does not lower the
    offered rate unless ``max_inflight`` is reached, which the caller sees as a lower ``rate``.
    """
    total = int(rate * seconds)
    gate = asyncio.Semaphore(max_inflight)
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def one(seq: int) -> None:
        try:
            await _post(session, target, seq, progress)
        finally:
            gate.release()

    for seq in itertools.islice(itertools.count(), total):
        delay = started + seq / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        task = asyncio.create_task(one(seq))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    return _result(progress, time.perf_counter() - started)
