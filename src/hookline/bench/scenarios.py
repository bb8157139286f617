"""Benchmark scenarios: each starts a fresh hookline, drives load at it and measures the result.

One run shares one receiver process and measures the raw pipe once (the load generator posting
straight to the receiver), so every scenario's delivered rate can be read as a share of what
this machine can move at all. Each scenario gets its own database (``database``: a SQLite file
in the run's temporary directory, or a fresh database on the PostgreSQL server ``--database``
names); everything started is stopped when the scenario ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import psutil

from hookline import models, ratelimit, settings
from hookline.bench import database, loadgen, processes
from hookline.bench.database import Snapshot as DatabaseSnapshot
from hookline.bench.database import Usage as DatabaseUse
from hookline.bench.display import Display
from hookline.bench.stats import Arrivals, Stats

SCENARIOS = ("max", "steady", "burst", "slow-endpoints", "retry-storm", "rate-limited")
POLL_SECONDS = 0.25
RAW_PIPE_MAX_COUNT = 50_000  # the raw pipe's rate is flat well before this many requests
DEFAULT_STEADY_RATE = 1500.0  # messages/s, when neither --rate nor a max result gives one
RATE_LIMITED_SECONDS = 10.0  # rate-limited without --count: send this many seconds of the limit
RATE_TARGET = (0.95, 1.05)  # rate-limited: delivered / limit should fall in here


@dataclass(frozen=True, slots=True)
class Options:
    count: int | None = None  # messages (steady: derived from rate x seconds)
    rate: float | None = None  # steady: offered messages per second
    seconds: float = 20.0  # steady: how long to offer the rate
    endpoints: int = 10  # one application each; messages go round-robin over them
    bad_share: float = 0.2  # slow-endpoints / retry-storm: share of endpoints that misbehave
    rate_limit: int = 50  # rate-limited: every endpoint's rateLimit, messages/s
    concurrency: int = 64  # ingest requests in flight (max, burst, raw pipe)
    payload_bytes: int = 512
    database: str | None = None  # default: a SQLite file per scenario; see bench.database
    timeout: float = 5.0  # hookline's request timeout (how long slow endpoints hang)
    drain_seconds: float = 300.0  # longest wait for deliveries after ingest ends
    topology: str = "embedded"  # embedded: one `hookline serve`; split: `api` + `worker`
    # `hookline api --processes N` / `hookline worker --processes M` wherever those roles run
    # (the split topology, and burst); 1 runs the role in one process, without a supervisor
    api_processes: int = 1
    worker_processes: int = 1
    worker_concurrency: int | None = None  # HOOKLINE_WORKER_CONCURRENCY; None: hookline's default
    # NAME=VALUE settings for the hookline processes (HOOKLINE_NAME), e.g. metrics=false
    setting: tuple[str, ...] = ()
    workdir: Path = Path()


class Phase(msgspec.Struct, kw_only=True):
    """One measured stretch: load sent, and what the receiver saw."""

    ingest: loadgen.LoadResult
    expected: int  # accepted messages bound for healthy endpoints
    delivered: int  # of those, how many arrived (each counted once)
    missing: int
    duplicates: int
    seconds: float  # first POST → last delivery
    delivered_rate: float
    latency_ms: dict[str, float] | None  # ingest → delivery, at the receiver
    failed_attempts: int = 0  # answered 500 by a failing endpoint
    hung_attempts: int = 0  # sent to a hanging endpoint
    # per hookline command (`hookline api`, ...), all its processes together, during the phase
    cpu_seconds: dict[str, float] = {}
    cpu_us_per_message: float | None = None
    peak_rss_mb: dict[str, float] = {}  # per command: its largest process
    processes: dict[str, int] = {}  # per command: processes serving (--processes)
    # the other two parties, for scale: this process (the load generator) per message sent, and
    # the receiver per request it answered
    load_generator_cpu_us_per_message: float | None = None
    receiver_cpu_us_per_request: float | None = None
    # PostgreSQL only: what the server did (filled in once hookline has stopped). The type is
    # imported by name because a field called `database` hides the module in a class body.
    database: DatabaseUse | None = None


class EndpointRate(msgspec.Struct, kw_only=True):
    """One rate-limited endpoint as its receiver path saw it."""

    endpoint: int  # the n of /ok/<n>: the n-th application's endpoint
    requests: int  # answered 200, repeats included: every request spends a token
    seconds: float  # first arrival → last arrival
    rate: float | None  # (requests - burst) / seconds; None while within the initial burst


class RateLimited(msgspec.Struct, kw_only=True):
    """rate-limited: how close the delivered rate came to the limit, and what it cost."""

    limit_per_endpoint: int  # rateLimit, messages/s
    limit: int  # all endpoints together
    burst: float  # tokens each endpoint's bucket starts with
    delivered_rate: float | None  # steady: the per-endpoint rates summed
    ratio: float | None  # delivered_rate / limit; the target is RATE_TARGET
    ratio_min: float | None  # the slowest and fastest endpoint's rate / its limit
    ratio_max: float | None
    attempts: int  # requests the receiver got at these endpoints
    unique: int  # distinct messages among them
    wasted: int  # attempts - unique: repeats, and requests not answered 200
    failed_attempts_recorded: int  # failed attempts in hookline's own attempt list
    endpoints: list[EndpointRate]


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    settings: dict[str, object]
    raw_pipe: Phase
    hookline: Phase
    ratio_to_raw_pipe: float
    drain_rate: float | None = None  # burst: delivered per second once the worker starts
    rate_limit: RateLimited | None = None  # rate-limited only
    notes: list[str] = []


@dataclass
class Run:
    """What a scenario needs: options, the shared receiver, and a control HTTP session."""

    opts: Options
    receiver_url: str
    control: aiohttp.ClientSession
    display: Display
    receiver: processes.Child
    postgres: database.Server | None = None  # --database postgresql://...
    raw_pipe: Phase | None = None

    async def stats(self, latency: bool = False, endpoints: bool = False) -> Stats:
        query = "&".join(q for q, on in (("latency=1", latency), ("endpoints=1", endpoints)) if on)
        url = f"{self.receiver_url}/_stats" + (f"?{query}" if query else "")
        async with self.control.get(url) as r:
            return msgspec.json.decode(await r.read(), type=Stats)

    async def reset(self) -> None:
        async with self.control.post(f"{self.receiver_url}/_reset") as r:
            await r.read()


# the phases -------------------------------------------------------------------------------------


async def measure_raw_pipe(run: Run) -> Phase:
    count = min(run.opts.count or 20_000, RAW_PIPE_MAX_COUNT)
    target = loadgen.raw_target(run.receiver_url, run.opts.payload_bytes)
    return await _measure(run, "raw pipe", target, count, None, _blaster(run, target, count))


async def _measure(
    run: Run,
    label: str,
    target: loadgen.Target,
    count: int,
    inst: Instance | None,
    drive: Callable[[loadgen.Progress], Awaitable[loadgen.LoadResult]],
    *,
    after_ingest: Callable[[], Awaitable[float]] | None = None,
) -> Phase:
    """Drive load, then wait for every healthy message to arrive (or the drain deadline).

    ``inst`` is the hookline under test (None: the raw pipe). ``after_ingest`` (burst) runs once
    ingest is done and returns when delivery began.
    """
    children = [] if inst is None else inst.children
    await run.reset()
    db_before = None
    if inst is not None and inst.database is not None:
        db_before = await inst.database.snapshot()
    progress = loadgen.Progress()
    cpu_before = {c.name: c.cpu_seconds() for c in children}
    me = psutil.Process()
    own_before, receiver_before = _cpu(me), run.receiver.cpu_seconds()
    started_wall = time.time()
    watcher = asyncio.create_task(_watch(run, label, count, progress, children))
    try:
        ingest = await drive(progress)
        if after_ingest is not None:
            started_wall = await after_ingest()
        deadline = time.monotonic() + run.opts.drain_seconds
        while time.monotonic() < deadline:
            if watcher.done():
                watcher.result()  # a child died: raise its log
            stats = await run.stats()
            if stats.unique >= progress.accepted_healthy:
                break
            await asyncio.sleep(POLL_SECONDS / 2)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    stats = await run.stats(latency=True)
    # a child started during the phase (burst's worker) counts from zero
    cpu = {c.name: round(c.cpu_seconds() - cpu_before.get(c.name, 0.0), 3) for c in children}
    own_cpu, receiver_cpu = _cpu(me) - own_before, run.receiver.cpu_seconds() - receiver_before
    answered = stats.ok + stats.fail + stats.slow
    seconds = (stats.last_at or started_wall) - started_wall
    delivered = min(stats.unique, progress.accepted_healthy)
    total_delivered = stats.unique
    phase = Phase(
        ingest=ingest,
        expected=progress.accepted_healthy,
        delivered=delivered,
        missing=progress.accepted_healthy - delivered,
        duplicates=stats.ok - stats.unique,
        seconds=round(seconds, 3),
        delivered_rate=round(delivered / seconds, 1) if seconds > 0 else 0.0,
        latency_ms=stats.latency_ms,
        failed_attempts=stats.fail,
        hung_attempts=stats.slow,
        cpu_seconds=cpu,
        cpu_us_per_message=(
            round(sum(cpu.values()) / total_delivered * 1e6, 1)
            if children and total_delivered
            else None
        ),
        peak_rss_mb={c.name: round(c.peak_rss() / 2**20, 1) for c in children},
        processes={c.name: c.processes for c in children},
        load_generator_cpu_us_per_message=(
            round(own_cpu / ingest.sent * 1e6, 1) if ingest.sent else None
        ),
        receiver_cpu_us_per_request=round(receiver_cpu / answered * 1e6, 1) if answered else None,
    )
    if inst is not None and db_before is not None:
        inst.measured.append((phase, db_before))
    return phase


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _watch(
    run: Run,
    label: str,
    count: int,
    progress: loadgen.Progress,
    children: list[processes.Child],
) -> None:
    """Feed the live display; raise if a hookline process dies."""
    with run.display.phase(label, count) as show:
        while True:
            for child in children:
                child.check_alive()
                child.sample_rss()
            stats = await run.stats()
            show(progress.sent, stats.unique)
            await asyncio.sleep(POLL_SECONDS)


def _blaster(
    run: Run, target: loadgen.Target, count: int
) -> Callable[[loadgen.Progress], Awaitable[loadgen.LoadResult]]:
    async def drive(progress: loadgen.Progress) -> loadgen.LoadResult:
        async with loadgen.new_session(run.opts.concurrency) as session:
            deadline = time.monotonic() + run.opts.drain_seconds
            return await loadgen.blast(
                session, target, count, run.opts.concurrency, progress, deadline=deadline
            )

    return drive


# a hookline instance under test -----------------------------------------------------------------


@dataclass
class Instance:
    base_url: str
    token: str
    children: list[processes.Child]
    env: dict[str, str]
    app_ids: list[str]
    endpoint_ids: list[str]  # the app_ids' endpoints, in the same order
    database: database.Scenario | None = None  # PostgreSQL: the scenario's fresh database
    # phases measured on it, with the server's counters as each began (see ``hookline``)
    measured: list[tuple[Phase, DatabaseSnapshot]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def hookline(
    run: Run,
    name: str,
    *,
    roles: tuple[str, ...] | None = None,
    kinds: tuple[str, ...] = (),
    retry_schedule: str | None = None,
    rate_limit: int | None = None,
) -> AsyncIterator[Instance]:
    """Start hookline (``roles``), create one app + endpoint per ``kinds`` entry; stop after.

    Without ``roles`` the topology option decides: one ``serve`` or ``api`` + ``worker``.
    ``rate_limit`` is every endpoint's ``rateLimit`` (messages/s). On PostgreSQL, once hookline
    has stopped, each measured phase gets what the server did during it (``Phase.database``).
    """
    opts = run.opts
    if roles is None:
        roles = ("serve",) if opts.topology == "embedded" else ("api", "worker")
    workdir = opts.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    async with database.for_scenario(opts.database, run.postgres, workdir) as (url, db):
        port = processes.free_port()
        token = "hl_bench_" + secrets.token_urlsafe(24)
        env = processes.hookline_env(
            url,
            port,
            token,
            request_timeout=opts.timeout,
            retry_schedule=retry_schedule,
            worker_concurrency=opts.worker_concurrency,
            extra=opts.setting,
        )
        children: list[processes.Child] = []
        try:
            for role in roles:
                children.append(start_role(opts, role, workdir, env))
            base_url = f"http://{processes.HOST}:{port}"
            await _wait_healthy(run.control, base_url, children)
            app_ids, endpoint_ids = await _setup(run, base_url, token, kinds, rate_limit)
            inst = Instance(base_url, token, children, env, app_ids, endpoint_ids, db)
            yield inst
        finally:
            for child in children:
                child.stop()
        if db is not None and inst.measured:
            # read after the stop: the server's row counters are flushed when sessions end
            usages = await db.settle([(before, p.delivered) for p, before in inst.measured])
            for (phase, _), usage in zip(inst.measured, usages, strict=True):
                phase.database = usage


def start_role(opts: Options, role: str, workdir: Path, env: dict[str, str]) -> processes.Child:
    """``hookline <role>``, with ``--processes`` as the options ask for api and worker."""
    count = {"api": opts.api_processes, "worker": opts.worker_processes}.get(role, 1)
    return processes.start_hookline(role, workdir, env, processes=count)


async def _wait_healthy(
    control: aiohttp.ClientSession, base_url: str, children: list[processes.Child]
) -> None:
    deadline = time.monotonic() + processes.START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for child in children:
            child.check_alive()
        with contextlib.suppress(aiohttp.ClientError):
            async with control.get(f"{base_url}/api/v1/health") as r:
                if r.status == 204:
                    return
        await asyncio.sleep(0.05)
    raise processes.ChildFailed(f"hookline did not answer on {base_url} in time")


async def _setup(
    run: Run, base_url: str, token: str, kinds: tuple[str, ...], rate_limit: int | None
) -> tuple[list[str], list[str]]:
    headers = {"authorization": f"Bearer {token}"}
    app_ids, endpoint_ids = [], []
    for i, kind in enumerate(kinds):
        async with run.control.post(
            f"{base_url}/api/v1/app", json={"name": f"bench-{i}"}, headers=headers
        ) as r:
            if r.status != 201:
                raise processes.ChildFailed(
                    f"creating an app answered {r.status}: {await r.text()}"
                )
            app_id = (await r.json())["id"]
        endpoint: dict[str, object] = {"url": f"{run.receiver_url}/{kind}/{i}"}
        if rate_limit is not None:
            endpoint["rateLimit"] = rate_limit
        async with run.control.post(
            f"{base_url}/api/v1/app/{app_id}/endpoint", json=endpoint, headers=headers
        ) as r:
            if r.status != 201:
                raise processes.ChildFailed(
                    f"creating an endpoint answered {r.status}: {await r.text()}"
                )
            endpoint_ids.append((await r.json())["id"])
        app_ids.append(app_id)
    return app_ids, endpoint_ids


def _kinds(opts: Options, bad: str | None) -> tuple[str, ...]:
    """Endpoint behaviours: the first ``bad_share`` of them ``bad``, the rest ``ok``."""
    n_bad = round(opts.endpoints * opts.bad_share) if bad else 0
    n_bad = min(n_bad, opts.endpoints - 1)  # keep at least one healthy endpoint to measure
    return tuple(bad if (bad and i < n_bad) else "ok" for i in range(opts.endpoints))


def _target(run: Run, inst: Instance, kinds: tuple[str, ...]) -> loadgen.Target:
    unhealthy = sum(1 for k in kinds if k != "ok")
    return loadgen.hookline_target(
        inst.base_url, inst.token, inst.app_ids, unhealthy, run.opts.payload_bytes
    )


def _report(
    run: Run,
    scenario: str,
    phase: Phase,
    *,
    drain_rate: float | None = None,
    rate_limit: RateLimited | None = None,
    notes: list[str] | None = None,
) -> Report:
    raw = run.raw_pipe
    assert raw is not None
    rate = drain_rate or phase.delivered_rate
    chosen = _settings(run)
    if rate_limit is not None:
        chosen["rate_limit"] = rate_limit.limit_per_endpoint
    return Report(
        scenario=scenario,
        settings=chosen,
        raw_pipe=raw,
        hookline=phase,
        ratio_to_raw_pipe=round(rate / raw.delivered_rate, 3) if raw.delivered_rate else 0.0,
        drain_rate=drain_rate,
        rate_limit=rate_limit,
        notes=notes or [],
    )


def _settings(run: Run) -> dict[str, object]:
    opts = run.opts
    found: dict[str, object] = {
        "endpoints": opts.endpoints,
        "bad_share": opts.bad_share,
        "concurrency": opts.concurrency,
        "payload_bytes": opts.payload_bytes,
        "database": (
            settings.redacted_url(opts.database) if opts.database else "sqlite (temporary file)"
        ),
        "request_timeout": opts.timeout,
        "topology": opts.topology,
        "api_processes": opts.api_processes,
        "worker_processes": opts.worker_processes,
        "worker_concurrency": opts.worker_concurrency or "default",
        "settings": list(opts.setting),
    }
    if run.postgres is not None:
        found["postgres"] = run.postgres.describe()
    return found


# the scenarios ----------------------------------------------------------------------------------


async def max_rate(run: Run) -> Report:
    count = run.opts.count or 30_000
    kinds = _kinds(run.opts, None)
    async with hookline(run, "max", kinds=kinds) as inst:
        target = _target(run, inst, kinds)
        phase = await _measure(run, "max", target, count, inst, _blaster(run, target, count))
    return _report(run, "max", phase)


async def steady(run: Run, rate: float | None = None) -> Report:
    opts = run.opts
    if rate is None:
        rate = opts.rate if opts.rate is not None else DEFAULT_STEADY_RATE
    count = int(rate * opts.seconds)
    kinds = _kinds(opts, None)
    async with hookline(run, "steady", kinds=kinds) as inst:
        target = _target(run, inst, kinds)

        async def drive(progress: loadgen.Progress) -> loadgen.LoadResult:
            async with loadgen.new_session(512) as session:
                return await loadgen.paced(session, target, rate, opts.seconds, 512, progress)

        phase = await _measure(run, f"steady {rate:g}/s", target, count, inst, drive)
    return _report(run, "steady", phase, notes=[f"offered rate {rate:g} messages/s"])


async def burst(run: Run) -> Report:
    """Queue a backlog with only the API running, then start a worker and time the drain."""
    opts = run.opts
    count = opts.count or 100_000
    kinds = _kinds(opts, None)
    if (opts.database or "sqlite:").startswith("memory:"):
        raise ValueError(
            "burst runs the API and the worker as two processes: use a shared database"
        )
    async with hookline(run, "burst", roles=("api",), kinds=kinds) as inst:
        target = _target(run, inst, kinds)
        workdir = opts.workdir / "burst"

        async def start_worker() -> float:
            inst.children.append(start_role(opts, "worker", workdir, inst.env))
            return time.time()

        phase = await _measure(
            run,
            "burst",
            target,
            count,
            inst,
            _blaster(run, target, count),
            after_ingest=start_worker,
        )
    return _report(run, "burst", phase, drain_rate=phase.delivered_rate)


async def slow_endpoints(run: Run) -> Report:
    return await _misbehaving(run, "slow-endpoints", "slow", schedule="1,2,4,8")


async def retry_storm(run: Run) -> Report:
    return await _misbehaving(run, "retry-storm", "fail", schedule="1,2,4,8")


async def _misbehaving(run: Run, scenario: str, bad: str, *, schedule: str) -> Report:
    count = run.opts.count or 20_000
    kinds = _kinds(run.opts, bad)
    async with hookline(run, scenario, kinds=kinds, retry_schedule=schedule) as inst:
        target = _target(run, inst, kinds)
        phase = await _measure(run, scenario, target, count, inst, _blaster(run, target, count))
    n_bad = sum(1 for k in kinds if k != "ok")
    note = (
        f"{n_bad} of {len(kinds)} endpoints {'hang' if bad == 'slow' else 'answer 500'}; "
        f"retry schedule {schedule} s; delivered rate counts the healthy endpoints only"
    )
    return _report(run, scenario, phase, notes=[note])


async def rate_limited(run: Run) -> Report:
    """Blast messages at endpoints with a ``rateLimit``: the limit, not hookline, sets the pace."""
    opts = run.opts
    limit = opts.rate_limit
    count = opts.count or round(opts.endpoints * limit * RATE_LIMITED_SECONDS)
    kinds = _kinds(opts, None)
    async with hookline(run, "rate-limited", kinds=kinds, rate_limit=limit) as inst:
        target = _target(run, inst, kinds)
        phase = await _measure(
            run, "rate-limited", target, count, inst, _blaster(run, target, count)
        )
        stats = await run.stats(endpoints=True)
        recorded = await _failed_attempts(run, inst)
    result = _rate_limited(stats, len(kinds), limit, recorded)
    notes = [
        f"{len(kinds)} endpoints with rateLimit {limit}/s each, {result.limit:,}/s in all; each "
        f"bucket starts full: {result.burst:g} tokens, {ratelimit.BURST_SECONDS:g} s of its rate",
        "steady delivered rate: per endpoint, (requests - burst) / (last arrival - first "
        "arrival), summed over the endpoints; the delivered rate above runs from the first POST "
        "to the last delivery and so includes each bucket's initial burst",
    ]
    if result.ratio is None:
        notes.append("too few messages per endpoint to get past the initial burst: raise --count")
    else:
        low, high = RATE_TARGET
        verdict = "within" if low <= result.ratio <= high else "outside"
        notes.append(f"delivered / limit {result.ratio:.3f}: {verdict} the target {low} to {high}")
    return _report(run, "rate-limited", phase, rate_limit=result, notes=notes)


def _rate_limited(stats: Stats, endpoints: int, limit: int, recorded: int) -> RateLimited:
    """The steady rate per endpoint, fair to the bucket's initial burst.

    A bucket of ``burst`` tokens that starts full and refills at ``limit``/s lets ``burst``
    deliveries go at once and the k-th one after them at k / ``limit`` s, for as long as a
    backlog waits (the blast keeps one). So (requests - burst) / (last - first arrival) is the
    limit itself, for a short run as for a long one; requests / span would overstate it by
    requests / (requests - burst), and timing from the first POST would add ingest and start-up.
    ``burst`` is hookline's own ``ratelimit.capacity``, so the two cannot drift apart.
    """
    burst = ratelimit.capacity(limit)
    seen = stats.endpoints or {}
    rates = []
    for n in range(endpoints):
        a = seen.get(str(n), Arrivals(requests=0, first_at=0.0, last_at=0.0))
        span = a.last_at - a.first_at
        rate = (a.requests - burst) / span if a.requests > burst and span > 0 else None
        rates.append(
            EndpointRate(
                endpoint=n,
                requests=a.requests,
                seconds=round(span, 3),
                rate=None if rate is None else round(rate, 1),
            )
        )
    measured = [r.rate for r in rates if r.rate is not None]
    total = sum(measured) if len(measured) == endpoints else None
    attempts = stats.ok + stats.fail + stats.slow
    return RateLimited(
        limit_per_endpoint=limit,
        limit=limit * endpoints,
        burst=burst,
        delivered_rate=None if total is None else round(total, 1),
        ratio=None if total is None else round(total / (limit * endpoints), 3),
        ratio_min=round(min(measured) / limit, 3) if total is not None else None,
        ratio_max=round(max(measured) / limit, 3) if total is not None else None,
        attempts=attempts,
        unique=stats.unique,
        wasted=attempts - stats.unique,
        failed_attempts_recorded=recorded,
        endpoints=rates,
    )


async def _failed_attempts(run: Run, inst: Instance) -> int:
    """Failed attempts in hookline's attempt list, over every endpoint (all pages)."""
    headers = {"authorization": f"Bearer {inst.token}"}
    failed = 0
    for app_id, endpoint_id in zip(inst.app_ids, inst.endpoint_ids, strict=True):
        url = f"{inst.base_url}/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}"
        query: dict[str, str | int] = {"status": int(models.MessageStatus.FAIL), "limit": 250}
        while True:
            async with run.control.get(url, params=query, headers=headers) as r:
                if r.status != 200:
                    raise processes.ChildFailed(
                        f"listing attempts answered {r.status}: {await r.text()}"
                    )
                page = await r.json()
            failed += len(page["data"])
            if page["done"] or not page["data"]:
                break
            query["iterator"] = page["iterator"]
    return failed


RUNNERS: dict[str, Callable[[Run], Awaitable[Report]]] = {
    "max": max_rate,
    "steady": steady,
    "burst": burst,
    "slow-endpoints": slow_endpoints,
    "retry-storm": retry_storm,
    "rate-limited": rate_limited,
}
