"""Acceptance items on isolation: one endpoint's trouble must not become everybody's.

Real ``hookline`` processes (``serve``, or ``api`` plus ``worker``) deliver to real receivers on
127.0.0.1; every test is bounded to seconds.

* **Isolation.** 20 endpoints, 10 of which hang past the request timeout: the 10 healthy ones
  are delivered at >= 0.9 x the rate they get when nothing hangs. Settings are hookline's
  defaults (retry schedule, worker and per-endpoint concurrency, circuit breaker, log level)
  apart from a 2 s request timeout and the loopback allowance.
* **Rate limit.** An endpoint with ``rateLimit`` 20 receives 200 messages over >= 9.5 s, with
  exactly 200 attempts recorded, all successful, once with ``hookline serve`` and once with
  ``hookline api`` and two ``hookline worker`` processes on one database.
* **Circuit.** A failing endpoint's circuit opens after the threshold; while open, one probe goes
  out per cool-down (1 s, 2 s, then 3 s: doubled and capped) and no retries are spent; the state
  survives a restart (the next probe comes at the stored time); a successful probe closes it and
  the backlog drains.

Messages are posted with an aiohttp client: httpx's AsyncClient spent about 6 ms of CPU per
request here with 64 connections, which made ingest, not hookline, the slow part.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import itertools
import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest

from hookline import ratelimit, settings
from tests.support.postgres import PostgresServer
from tests.support.receiver import Receiver, Recorded, Reply
from tests.support.server import HooklineServer
from tests.support.wait import until

# Rates, ratios and probe times measured here would be scored against another test's load.
pytestmark = pytest.mark.serial

INGEST_CONCURRENCY = 16  # requests the ingesting client keeps in flight
ENDPOINT_CONCURRENCY = settings.Settings().endpoint_concurrency  # the default, 16

Report = Callable[[str, object], None]


# helpers -------------------------------------------------------------------------------------


def _client(server: HooklineServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0)


def _endpoint(client: httpx.Client, url: str, **extra: object) -> tuple[str, str]:
    """An application with one endpoint at ``url``; returns the app and endpoint ids."""
    app = client.post("/api/v1/app", json={"name": url})
    assert app.status_code == 201, app.text
    app_id: str = app.json()["id"]
    ep = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": url, **extra})
    assert ep.status_code == 201, ep.text
    return app_id, ep.json()["id"]


def _ingest(server: HooklineServer, app_ids: Iterable[str]) -> list[str]:
    """Post one message per item of ``app_ids`` (in that order, a few at a time); their ids."""

    async def main() -> list[str]:
        jobs = list(enumerate(app_ids))
        ids: list[str] = [""] * len(jobs)
        todo = iter(jobs)
        headers = {"Authorization": f"Bearer {server.token}"}
        connector = aiohttp.TCPConnector(limit=INGEST_CONCURRENCY)
        async with aiohttp.ClientSession(
            server.base_url, headers=headers, connector=connector
        ) as session:

            async def post_some() -> None:
                for seq, app_id in todo:
                    body = {"eventType": "stress.test", "payload": {"seq": seq}}
                    async with session.post(f"/api/v1/app/{app_id}/msg", json=body) as r:
                        assert r.status == 202, (r.status, await r.text())
                        ids[seq] = (await r.json())["id"]

            await asyncio.gather(*(post_some() for _ in range(INGEST_CONCURRENCY)))
        return ids

    return asyncio.run(main())


def _attempts(client: httpx.Client, app_id: str, endpoint_id: str) -> list[dict[str, Any]]:
    """Every attempt recorded for the endpoint, paging through the API 250 at a time."""
    out: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": 250}
    while True:
        page = client.get(f"/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        out.extend(body["data"])
        if body["done"]:
            return out
        params["iterator"] = body["iterator"]


def _health(server: HooklineServer, endpoint_id: str) -> dict[str, Any] | None:
    """The endpoint's stored circuit and bucket state (``endpoint_health``), read from outside."""
    url = server.environment()["HOOKLINE_DATABASE_URL"]
    if url.startswith("postgresql:"):
        return asyncio.run(_postgres_health(url, endpoint_id))
    uri = f"file:{server.db_path.resolve()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT * FROM endpoint_health WHERE endpoint_id = ?", (endpoint_id,)
        ).fetchone()
    return None if row is None else dict(row)


async def _postgres_health(url: str, endpoint_id: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM endpoint_health WHERE endpoint_id = $1", endpoint_id
        )
    finally:
        await conn.close()
    return None if row is None else dict(row)


def _copy_database(source: Path, data_dir: Path) -> None:
    """A consistent copy of a stopped server's database (WAL included) into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    assert not (data_dir / "hookline.db").exists()
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(data_dir / "hookline.db")) as dst,
    ):
        src.backup(dst)


def _events(output: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in a process's output."""
    found = []
    for line in output.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                found.append(record)
    return found


def _wall_to_monotonic(wall: float) -> float:
    """Map a ``time.time()`` reading (what hookline stores) onto ``time.monotonic()``."""
    return wall - time.time() + time.monotonic()


def _report(record_property: Report, **facts: object) -> None:
    for name, value in facts.items():
        record_property(name, value)
    print(" ".join(f"{k}={v}" for k, v in facts.items()))  # visible with -s / -rP


@contextlib.contextmanager
def _processes() -> Iterator[list[HooklineServer]]:
    """Servers the block starts; every one still running at the end is killed."""
    started: list[HooklineServer] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.kill()


# 1. isolation --------------------------------------------------------------------------------

ISOLATION_TIMEOUT_SECONDS = 2.0
ISOLATION_ENV = {
    "HOOKLINE_REQUEST_TIMEOUT": f"{ISOLATION_TIMEOUT_SECONDS:g}",
    "HOOKLINE_RETRY_SCHEDULE": "",  # empty: hookline's default (5 s, 5 min, ...), not the tests'
    "HOOKLINE_LOG_LEVEL": "info",  # the default (one delivery_attempt line per attempt)
}
HEALTHY_ENDPOINTS = 10
HANGING_ENDPOINTS = 10
# Per healthy endpoint. 9,000 in all take longer than the request timeout at the rates seen
# here (2,600-3,300/s), so the hung requests' whole life (sent, timed out, circuits opened)
# falls inside the measured window; the test checks that it did.
PER_HEALTHY = 900
# Per hanging endpoint: more than its in-flight cap, so a backlog waits behind each of them
# (behind the cap, then behind the open circuit) for the whole run.
PER_HANGING = 50
# Answers 200, but only after hookline gave up: a hung request can only end by the timeout.
HANG = Reply(status=200, delay=ISOLATION_TIMEOUT_SECONDS + 1.0)
MIN_RATIO = 0.9  # the figure
MIN_ROUNDS, MAX_ROUNDS = 2, 4
DRAIN_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class _Fleet:
    """The 20 endpoints: receiver path -> (app id, endpoint id), healthy and hanging ones.

    The two kinds answer from separate receivers, as separate servers would. On one listening
    socket, the hanging endpoints' connections would compete with the healthy ones' for its
    accept queue (aiohttp's default backlog is 128; hookline opens a few hundred connections
    at once here): a healthy connection whose SYN was dropped waits for the kernel's 1 s
    retransmit, and that stall of the receiver would be scored against hookline.
    """

    healthy_rx: Receiver
    hanging_rx: Receiver
    healthy: dict[str, tuple[str, str]]
    hanging: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class _Drain:
    seconds: float  # first to last arrival at the healthy endpoints
    rate: float  # healthy messages per second over that span
    hung: int  # requests the hanging endpoints received


def _preload(
    root: Path, healthy_rx: Receiver, hanging_rx: Receiver
) -> tuple[Path, Path, str, _Fleet]:
    """Two databases with the same healthy backlog: one with hanging endpoints, one without.

    The backlog is queued with only ``hookline api`` running, so each run below measures
    delivery alone (ingest would otherwise share the CPU and set the pace). The hanging
    endpoints' messages are queued first: the oldest due work is theirs, the worst case for
    anybody queued behind them. The baseline is a copy with the hanging endpoints deleted
    (their deliveries go with them), so it is the healthy endpoints alone: a stricter baseline
    than 20 healthy endpoints that also take the other 10 endpoints' messages.
    """
    api = HooklineServer(root / "with-hanging", env=ISOLATION_ENV, command="api")
    with _processes() as running:
        running.append(api.start())
        with _client(api) as client:
            hanging = {
                p: _endpoint(client, hanging_rx.url(p))
                for p in (hanging_rx.new_path("hanging") for _ in range(HANGING_ENDPOINTS))
            }
            healthy = {
                p: _endpoint(client, healthy_rx.url(p))
                for p in (healthy_rx.new_path("healthy") for _ in range(HEALTHY_ENDPOINTS))
            }
        hanging_apps = [app for app, _ in hanging.values()]
        healthy_apps = [app for app, _ in healthy.values()]
        _ingest(api, hanging_apps * PER_HANGING)
        _ingest(api, healthy_apps * PER_HEALTHY)  # round-robin over the healthy endpoints
        assert api.stop() == 0, api.output_tail()

        baseline = HooklineServer(
            root / "healthy-only", env=ISOLATION_ENV, command="api", token=api.token
        )
        _copy_database(api.db_path, baseline.data_dir)
        running.append(baseline.start())
        with _client(baseline) as client:
            for app_id, endpoint_id in hanging.values():
                gone = client.delete(f"/api/v1/app/{app_id}/endpoint/{endpoint_id}")
                assert gone.status_code == 204, gone.text
        assert baseline.stop() == 0, baseline.output_tail()
    fleet = _Fleet(healthy_rx, hanging_rx, healthy, hanging)
    return api.db_path, baseline.db_path, api.token, fleet


def _drain(
    template: Path, data_dir: Path, token: str, fleet: _Fleet, *, hanging: bool
) -> tuple[_Drain, HooklineServer]:
    """Start ``hookline serve`` on a copy of ``template`` and time the healthy endpoints' drain.

    With ``hanging``, the run also waits until every hanging endpoint's circuit opened (their
    requests timed out), before it kills the server.
    """
    _copy_database(template, data_dir)
    server = HooklineServer(data_dir, env=ISOLATION_ENV, token=token)
    want = HEALTHY_ENDPOINTS * PER_HEALTHY
    # Earlier runs' requests are not this run's; a killed run sends nothing more.
    healthy_before = len(fleet.healthy_rx.requests())
    hanging_before = len(fleet.hanging_rx.requests())
    with _processes() as running:
        running.append(server.start())
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while True:
            # Look coarsely and cheaply (a count) until enough may have arrived: each look
            # copies the receiver's whole record while holding its lock.
            if len(fleet.healthy_rx.requests()) - healthy_before >= want:
                healthy = fleet.healthy_rx.requests()[healthy_before:]
                if len({r.headers["webhook-id"] for r in healthy}) >= want:
                    break
            server.assert_running()
            assert time.monotonic() < deadline, (
                f"the healthy backlog not delivered within {DRAIN_TIMEOUT_SECONDS:g} s"
            )
            time.sleep(0.1)
        if hanging:
            # Proof that the hangs ended by the timeout: each hanging endpoint's circuit opened.
            until(
                lambda: len(_events(server.output(), "circuit_opened")),
                lambda n: n >= len(fleet.hanging),
                what="the hanging endpoints' circuits to open",
            )
    # Killed, not stopped: the copy of the database is thrown away.
    hung = len(fleet.hanging_rx.requests()) - hanging_before
    assert len(healthy) == want, f"{len(healthy) - want} healthy messages delivered twice"
    assert {r.path for r in healthy} == set(fleet.healthy)
    arrivals = sorted(r.at for r in healthy)
    seconds = arrivals[-1] - arrivals[0]
    return _Drain(seconds=seconds, rate=want / seconds, hung=hung), server


def test_hanging_endpoints_do_not_slow_the_healthy_ones(
    tmp_path: Path, receiver: Receiver, record_property: Report
) -> None:
    """Healthy endpoints keep >= 0.9 x their rate while 10 of 20 endpoints hang.

    Both arms drain the same healthy backlog (9,000 messages) on a fresh copy of a preloaded
    database; the rate is healthy messages over first-to-last arrival. Rounds of one baseline
    and one hanging run alternate, so drift on a shared machine hits both arms alike, and each
    arm is scored by the median of its runs. Not by its best: a drain lasts about 5 s, and this
    machine's speed changes by 20 % from one to the next (baseline runs of 1,590 to 2,130/s in
    one sitting), so the best of a few runs is mostly the luckiest one, and a lucky baseline
    alone failed the ratio. Two rounds always; more (up to four) only while the ratio is short.
    """
    with Receiver() as hanging_rx:
        with_hanging, healthy_only, token, fleet = _preload(tmp_path, receiver, hanging_rx)
        for path in fleet.hanging:
            hanging_rx.script(path, then=HANG)
        hanging_ids = {ep for _, ep in fleet.hanging.values()}

        base: list[_Drain] = []
        hang: list[_Drain] = []
        for n in range(1, MAX_ROUNDS + 1):
            run, _ = _drain(healthy_only, tmp_path / f"base-{n}", token, fleet, hanging=False)
            base.append(run)
            assert run.hung == 0
            run, server = _drain(with_hanging, tmp_path / f"hang-{n}", token, fleet, hanging=True)
            hang.append(run)
            # The hangs were real and fell inside the measured window: every hanging endpoint
            # was sent requests, they ended by the timeout, and the circuits opened.
            opened = {e["endpoint_id"] for e in _events(server.output(), "circuit_opened")}
            assert opened == hanging_ids, opened
            assert run.seconds > ISOLATION_TIMEOUT_SECONDS, (
                f"the healthy backlog drained in {run.seconds:.2f} s, before the hung requests "
                f"timed out ({ISOLATION_TIMEOUT_SECONDS:g} s): raise PER_HEALTHY"
            )
            ratio = statistics.median(r.rate for r in hang) / statistics.median(
                r.rate for r in base
            )
            if n >= MIN_ROUNDS and ratio >= MIN_RATIO:
                break

    _report(
        record_property,
        ratio=round(ratio, 3),
        rounds=len(base),
        baseline_rates=[round(r.rate) for r in base],
        hanging_rates=[round(r.rate) for r in hang],
        hanging_drain_s=[round(r.seconds, 2) for r in hang],
        hung_requests=[r.hung for r in hang],
    )
    assert ratio >= MIN_RATIO, (
        f"healthy endpoints got {ratio:.3f} x their rate while others hang (need {MIN_RATIO}): "
        f"baseline {[round(r.rate) for r in base]}/s, hanging {[round(r.rate) for r in hang]}/s"
    )


# 2. rate limit -------------------------------------------------------------------------------

RATE = 20  # the endpoint's rateLimit, messages per second
RATE_MESSAGES = 200
MIN_SPAN_SECONDS = 9.5  # the figure
# The bucket starts full (a quarter second's worth) and then refills at RATE, so the last of
# 200 messages may go (200 - 5) / 20 = 9.75 s after the first.
BURST = int(ratelimit.capacity(RATE))
NOMINAL_SPAN_SECONDS = (RATE_MESSAGES - BURST) / RATE
# Not asked by the issue, but a limiter far stricter than asked would pass "at least 9.5 s":
# the steady rate must reach 85 % of the limit (the bench's target is 95 %; this machine is
# shared, and a claim delayed by more than the bucket's quarter second loses tokens).
MIN_STEADY_SHARE = 0.85
# In any one second of claims: the limit plus the burst. The receiver sees each request a
# delivery latency after its claim, and on a loaded machine those latencies vary by up to a
# quarter second (a late request lands in the next second beside that second's own), so the
# bound at the receiver allows that much more. The span check bounds the average rate.
DELIVERY_JITTER_SECONDS = 0.25
MAX_PER_SECOND = RATE + BURST + int(RATE * DELIVERY_JITTER_SECONDS)
RATE_ENV = {"HOOKLINE_LOG_LEVEL": "info"}  # delivery_attempt lines show which worker sent what


@dataclass(frozen=True)
class _RateRun:
    topology: str
    arrivals: list[Recorded]
    ids: list[str]
    attempts: list[dict[str, Any]]
    sent_by_worker: list[int]  # delivery_attempt lines per worker process
    exit_codes: list[int | None]

    @property
    def span(self) -> float:
        return self.arrivals[-1].at - self.arrivals[0].at

    def busiest_second(self) -> int:
        ats = [r.at for r in self.arrivals]
        return max(bisect.bisect_left(ats, at + 1.0) - i for i, at in enumerate(ats))


def _rate_limited_run(
    data_dir: Path, receiver: Receiver, topology: str, database: Mapping[str, str]
) -> _RateRun:
    path = receiver.new_path(f"limited-{topology}")
    env = {**RATE_ENV, **database}
    with _processes() as running:
        if topology == "serve":
            api = HooklineServer(data_dir, env=env)
            running.append(api.start())
            workers = [api]
        else:
            api = HooklineServer(data_dir, env=env, command="api")
            running.append(api.start())
            workers = [
                HooklineServer(
                    data_dir, env=env, command="worker", token=api.token, name=f"worker-{n}"
                )
                for n in (1, 2)
            ]
            for worker in workers:  # both claim before the first message exists
                running.append(worker.start())
        with _client(api) as client:
            app_id, endpoint_id = _endpoint(client, receiver.url(path), rateLimit=RATE)
            ids = _ingest(api, [app_id] * RATE_MESSAGES)
            # 200 at 20/s: about 10 s; the wait allows for a much slower machine.
            arrivals = receiver.wait_for(path, RATE_MESSAGES, timeout=3 * NOMINAL_SPAN_SECONDS)
            receiver.assert_no_more(path, RATE_MESSAGES, seconds=0.5)
            # The receiver sees a request a moment before its outcome is committed.
            attempts = until(
                lambda: _attempts(client, app_id, endpoint_id),
                lambda got: len(got) >= RATE_MESSAGES,
                what=f"{RATE_MESSAGES} recorded attempts",
            )
        for server in running:
            server.assert_running()
        sent = [len(_events(w.output(), "delivery_attempt")) for w in workers]
        exit_codes = [server.stop() for server in reversed(running)]
    return _RateRun(topology, arrivals, ids, attempts, sent, exit_codes)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rate_limit_holds_embedded_and_with_two_workers(
    tmp_path: Path,
    receiver: Receiver,
    record_property: Report,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """200 messages to an endpoint limited to 20/s take >= 9.5 s; 200 attempts, all successful.

    The two topologies run side by side (about 10 s each, and light on the CPU): one
    ``hookline serve``, and ``hookline api`` with two ``hookline worker`` processes on one
    database, whose claims draw on the one bucket stored with the endpoint. On SQLite and on
    PostgreSQL (a database of its own per topology).
    """
    databases: dict[str, dict[str, str]] = {"serve": {}, "split": {}}
    if backend == "postgres":
        cluster: PostgresServer = request.getfixturevalue("postgres_cluster")
        for topology in databases:
            name = cluster.create_database(f"rate-{topology}")
            request.addfinalizer(lambda name=name: cluster.drop_database(name))
            databases[topology] = {"HOOKLINE_DATABASE_URL": cluster.url(name)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(
                _rate_limited_run, tmp_path / topology, receiver, topology, databases[topology]
            )
            for topology in ("serve", "split")
        ]
        runs = [f.result() for f in futures]

    for run in runs:
        where = f"[{run.topology}]"
        webhook_ids = [r.headers["webhook-id"] for r in run.arrivals]
        assert len(webhook_ids) == RATE_MESSAGES, where
        assert set(webhook_ids) == set(run.ids), f"{where} not each message exactly once"
        assert all(r.status == 200 for r in run.arrivals), where
        # no attempt failed, none recorded beyond the 200
        assert len(run.attempts) == RATE_MESSAGES, (where, len(run.attempts))
        assert {a["msgId"] for a in run.attempts} == set(run.ids), where
        failed = [a for a in run.attempts if a["status"] != 0 or a["responseStatusCode"] != 200]
        assert not failed, (where, failed[:3])
        assert run.span >= MIN_SPAN_SECONDS, f"{where} 200 messages in {run.span:.2f} s"
        steady = (RATE_MESSAGES - BURST) / run.span
        assert steady >= MIN_STEADY_SHARE * RATE, f"{where} steady rate {steady:.1f}/s"
        assert run.busiest_second() <= MAX_PER_SECOND, (where, run.busiest_second())
        assert all(code == 0 for code in run.exit_codes), (where, run.exit_codes)
        assert sum(run.sent_by_worker) == RATE_MESSAGES, (where, run.sent_by_worker)
    split = runs[1]
    # Both workers took part: the limit held across processes, not within one of them.
    assert all(n > 0 for n in split.sent_by_worker), split.sent_by_worker

    _report(
        record_property,
        **{f"{run.topology}_span_s": round(run.span, 2) for run in runs},
        **{f"{run.topology}_busiest_second": run.busiest_second() for run in runs},
        split_sent_by_worker=split.sent_by_worker,
        nominal_span_s=NOMINAL_SPAN_SECONDS,
    )


# 3. circuit breaker --------------------------------------------------------------------------

CIRCUIT_FAILURES = 5
COOLDOWNS = (1.0, 2.0, 3.0)  # the wait before each probe: 1 s, doubled, capped at 3 s
RETRY_SCHEDULE = (0.2, 0.2, 0.2, 0.2)  # seconds; 5 attempts a message, all within a second
CIRCUIT_ENV = {
    "HOOKLINE_CIRCUIT_FAILURES": str(CIRCUIT_FAILURES),
    "HOOKLINE_CIRCUIT_COOLDOWN": f"{COOLDOWNS[0]:g}",
    "HOOKLINE_CIRCUIT_COOLDOWN_MAX": f"{COOLDOWNS[-1]:g}",
    "HOOKLINE_RETRY_SCHEDULE": ",".join(f"{s:g}" for s in RETRY_SCHEDULE),
}
ATTEMPT_BUDGET = len(RETRY_SCHEDULE) + 1
CIRCUIT_MESSAGES = 60  # more than can be in flight when the circuit opens, so a backlog waits
# A probe may not come before its stored time, and comes within this much after it: the
# worker looks at held-back work every 50 ms; the rest is a loaded machine's scheduling.
PROBE_LATE_SECONDS = 0.5
EARLY_SECONDS = 0.02  # clock reading slop between this process and hookline's
# Requests sent before the circuit opened may arrive a little after it: less than the first
# retry step, so that a retry let through would still be caught.
IN_FLIGHT_SECONDS = 0.15


def _open_state(server: HooklineServer, endpoint_id: str, cooldown: float) -> dict[str, Any]:
    """Wait until the endpoint's circuit is open, with no probe in flight, at ``cooldown``."""
    state = until(
        lambda: _health(server, endpoint_id),
        lambda h: (
            h is not None
            and h["circuit_open"] == 1
            and not h["probing"]
            and h["cooldown"] == cooldown
        ),
        what=f"the circuit open with a {cooldown:g} s cool-down",
    )
    assert state is not None
    return state


def _next_probe(receiver: Receiver, path: str, seen: int, state: dict[str, Any]) -> Recorded:
    """Assert that nothing arrives before the stored probe time, then that one probe does."""
    due = _wall_to_monotonic(state["paused_until"])
    receiver.assert_no_more(path, seen, seconds=max(0.0, due - time.monotonic() - EARLY_SECONDS))
    probe = receiver.wait_for(path, seen + 1, timeout=due - time.monotonic() + 5.0)[seen]
    assert due - EARLY_SECONDS <= probe.at <= due + PROBE_LATE_SECONDS, (
        f"probe {probe.at - due:+.3f} s from its stored time"
    )
    return probe


def test_circuit_opens_probes_survives_restart_and_closes(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Report,
    backend_env: dict[str, str],
) -> None:
    path = receiver.new_path("failing")
    receiver.script(path, then=500)
    server = start_server(env={**CIRCUIT_ENV, **backend_env})
    with _client(server) as client:
        app_id, endpoint_id = _endpoint(client, receiver.url(path))
    ids = _ingest(server, [app_id] * CIRCUIT_MESSAGES)

    # Opens after the threshold: at least that many failures, then quiet.
    state = _open_state(server, endpoint_id, COOLDOWNS[0])
    assert state["failures"] >= CIRCUIT_FAILURES, state
    opened_at = _wall_to_monotonic(state["paused_until"]) - COOLDOWNS[0]
    time.sleep(max(0.0, opened_at + IN_FLIGHT_SECONDS - time.monotonic()))
    burst = len(receiver.requests(path))
    assert all(r.at <= opened_at + IN_FLIGHT_SECONDS for r in receiver.requests(path))
    # The failures that opened it, plus what was in flight then: at most one claim's worth
    # (the per-endpoint cap) besides the failures that were recorded before it.
    assert CIRCUIT_FAILURES <= burst <= CIRCUIT_FAILURES - 1 + 2 * ENDPOINT_CONCURRENCY, burst
    assert burst < CIRCUIT_MESSAGES  # a backlog waits

    # While open, one probe per cool-down, at the stored time; the cool-down doubles, capped.
    probes = [_next_probe(receiver, path, burst, state)]
    state = _open_state(server, endpoint_id, COOLDOWNS[1])
    probes.append(_next_probe(receiver, path, burst + 1, state))
    state = _open_state(server, endpoint_id, COOLDOWNS[2])

    # A restart while open keeps it open: no burst, the next probe at the stored time.
    stopping = time.monotonic()
    assert server.stop() == 0, server.output_tail()
    server.start()
    restart_s = time.monotonic() - stopping
    due = _wall_to_monotonic(state["paused_until"])
    assert time.monotonic() < due - 0.3, (
        f"the restart took {restart_s:.1f} s, past the stored probe time: nothing left to check"
    )
    assert _health(server, endpoint_id) == state  # the same state, read back
    receiver.assert_no_more(path, burst + 2, seconds=due - time.monotonic() - 0.1)
    # The endpoint recovers; the probe still waits for its time, succeeds and closes it.
    receiver.script(path, then=200)
    probes.append(_next_probe(receiver, path, burst + 2, state))
    assert probes[-1].status == 200

    # ... and the backlog drains: every message delivered.
    deadline = time.monotonic() + 10.0
    while not set(ids) <= {
        r.headers["webhook-id"] for r in receiver.requests(path) if r.status == 200
    }:
        assert time.monotonic() < deadline, "the backlog did not drain after the circuit closed"
        time.sleep(0.05)
    health = until(
        lambda: _health(server, endpoint_id),
        lambda h: h is None or h["circuit_open"] == 0,
        what="the circuit closed in the store",
    )

    # No retries were spent while it was open: between the burst and the closing probe, the
    # receiver saw the probes and nothing else.
    requests = receiver.requests(path)
    while_open = [r for r in requests if opened_at + IN_FLIGHT_SECONDS < r.at <= probes[-1].at]
    assert while_open == probes, [r.at - opened_at for r in while_open]
    with _client(server) as client:
        attempts = until(
            lambda: _attempts(client, app_id, endpoint_id),
            lambda got: len(got) >= len(requests),
            what="every request recorded as an attempt",
        )
    assert len(attempts) == len(requests)
    per_message = collections.Counter(a["msgId"] for a in attempts)
    assert set(per_message) == set(ids)
    assert max(per_message.values()) < ATTEMPT_BUDGET, per_message.most_common(3)
    succeeded = collections.Counter(a["msgId"] for a in attempts if a["status"] == 0)
    assert succeeded == collections.Counter(ids), "each message delivered exactly once"

    # One log line per change, with the endpoint's id; none of them repeated after the restart.
    whole_log = server.output(since_start=False)
    opened = _events(whole_log, "circuit_opened")
    closed = _events(whole_log, "circuit_closed")
    assert [e["endpoint_id"] for e in opened] == [endpoint_id], opened
    assert [e["endpoint_id"] for e in closed] == [endpoint_id], closed
    assert not _events(server.output(), "circuit_opened")  # it opened before the restart

    gaps = [b.at - a.at for a, b in itertools.pairwise(probes)]
    _report(
        record_property,
        burst=burst,
        first_probe_after_s=round(probes[0].at - opened_at, 2),
        probe_gaps_s=[round(g, 2) for g in gaps],
        restart_s=round(restart_s, 2),
        max_attempts_per_message=max(per_message.values()),
        health_after=health,
    )
