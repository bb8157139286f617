"""Acceptance items 4 (backpressure), 5 (shutdown) and 6 (crash), on real processes and sockets.

Each test runs ``hookline serve`` as a subprocess against a receiver on 127.0.0.1 and is bounded
to seconds:

* SIGTERM with deliveries hanging: exit 0 within the grace (+2 s), the hanging sends are
  released, not failed, and a restart delivers them at once instead of after their lease.
* An API request in flight at SIGTERM is answered; a racing ingest gets 202 (and the message is
  delivered) or a connection error (refused, or closed unanswered), never a 202 that is lost.
* A second SIGTERM exits at once, the database is intact, and the lease brings everything back.
* SIGKILL ten times while delivering: every acknowledged message is delivered, duplicates are
  bounded by what was in flight at the kills.
* Over ``MAX_BACKLOG`` ingest answers 429 with Retry-After, other calls keep working, memory
  stays flat, and every accepted message is delivered once the receiver is fast again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import httpx
import psutil

from hookline import settings
from tests.support import wait
from tests.support.receiver import Receiver, Reply
from tests.support.server import HOST, HooklineServer

MIB = 1024 * 1024
INGEST_CONCURRENCY = 32  # connections an ingesting client opens at once
QUIET = {
    "HOOKLINE_ALLOWED_SUBNETS": "127.0.0.0/8",
    "HOOKLINE_LOG_LEVEL": "info",  # debug logs two lines per attempt; the tail is enough
    # One endpoint takes every message, and its receiver hangs on purpose: neither the circuit
    # breaker nor (unless a test lowers it) the per-endpoint cap may hold deliveries back.
    "HOOKLINE_ENDPOINT_CONCURRENCY": "512",
    "HOOKLINE_CIRCUIT_FAILURES": "100000",
}

# Shutdown: the hanging requests must outlast the grace without ending by timeout, so the
# request timeout is long; the lease (timeout + 10 s) is then 40 s, and "delivered at once
# after a restart" means well inside it.
GRACE_SECONDS = 2.0
EXIT_MARGIN_SECONDS = 2.0  # allowed on top of the grace: interpreter exit, store close
LONG_TIMEOUT_SECONDS = 30.0
LONG_LEASE_SECONDS = settings.Settings(request_timeout=LONG_TIMEOUT_SECONDS).lease_seconds
AT_ONCE_SECONDS = 5.0  # "at once" after a restart; the lease would take 40 s
SHUTDOWN = {
    **QUIET,
    "HOOKLINE_SHUTDOWN_GRACE": f"{GRACE_SECONDS:g}",
    "HOOKLINE_REQUEST_TIMEOUT": f"{LONG_TIMEOUT_SECONDS:g}",
}
# Longer than the grace, so the drain must cancel. The receiver cancels handlers still asleep
# when it stops (after SHUTDOWN_GRACE_SECONDS, see tests/support/receiver.py), so teardown stays
# quick. 503, so an answer that does arrive is never mistaken for a delivery.
HOLD = Reply(status=503, delay=60.0)

# Crash: leases of a killed process run out after request timeout + 10 s = 11 s.
CRASH_TIMEOUT_SECONDS = 1.0
CRASH_LEASE_SECONDS = settings.Settings(request_timeout=CRASH_TIMEOUT_SECONDS).lease_seconds
CRASH = {
    **QUIET,
    "HOOKLINE_REQUEST_TIMEOUT": f"{CRASH_TIMEOUT_SECONDS:g}",
    "HOOKLINE_RETRY_SCHEDULE": ",".join(["0.2"] * 6),
    # A few deliveries at a time, so that at each kill some are done, some in flight and some
    # still waiting.
    "HOOKLINE_ENDPOINT_CONCURRENCY": "8",
}
KILLS = 10
CRASH_BATCH = 30  # messages ingested before each kill
CRASH_ANSWER = Reply(status=200, delay=0.3)  # slow enough that deliveries are in flight
# An answer hookline read shortly before it died may not be committed yet (outcomes are
# batched, then written): such a message is delivered again, like one in flight at the kill.
UNCOMMITTED_WINDOW_SECONDS = 0.5


def _setup(server: HooklineServer, url: str, name: str = "stress") -> tuple[str, str]:
    """An application with one endpoint at ``url``; returns the app and endpoint ids."""
    with _client(server) as client:
        app = client.post("/api/v1/app", json={"name": name})
        assert app.status_code == 201, app.text
        app_id: str = app.json()["id"]
        ep = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": url})
        assert ep.status_code == 201, ep.text
    return app_id, ep.json()["id"]


def _client(server: HooklineServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0)


def _async_client(server: HooklineServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.token}"},
        limits=httpx.Limits(max_connections=INGEST_CONCURRENCY),
        timeout=30.0,
    )


def _ingest(server: HooklineServer, app_id: str, count: int, start: int = 0) -> list[str]:
    """Send ``count`` messages concurrently; all must be answered 202; return their ids."""

    async def main() -> list[httpx.Response]:
        async with _async_client(server) as client:
            return await asyncio.gather(
                *(
                    client.post(f"/api/v1/app/{app_id}/msg", json=_message(seq))
                    for seq in range(start, start + count)
                )
            )

    answers = asyncio.run(main())
    statuses = collections.Counter(r.status_code for r in answers)
    assert statuses == {202: count}, statuses
    return [r.json()["id"] for r in answers]


def _message(seq: int) -> dict[str, object]:
    return {"eventType": "stress.test", "payload": {"seq": seq}}


def _delivered(receiver: Receiver, path: str) -> collections.Counter[str]:
    """How many requests for each message id the receiver answered (or was to answer) 200."""
    return collections.Counter(
        r.headers["webhook-id"] for r in receiver.requests(path) if r.status == 200
    )


def _wait_delivered(
    receiver: Receiver, path: str, acked: set[str], timeout: float
) -> collections.Counter[str]:
    return wait.until(
        lambda: _delivered(receiver, path),
        lambda got: acked <= set(got),
        what=f"all {len(acked)} acknowledged messages delivered to {path}",
        timeout=timeout,
    )


def _stats(server: HooklineServer, app_id: str, ep_id: str) -> dict[str, int]:
    with _client(server) as client:
        response = client.get(f"/api/v1/app/{app_id}/endpoint/{ep_id}/stats")
    assert response.status_code == 200, response.text
    stats: dict[str, int] = response.json()
    return stats


def _wait_recorded(
    server: HooklineServer, app_id: str, ep_id: str, count: int, timeout: float = 10.0
) -> None:
    """Wait until hookline has committed ``count`` successes and has nothing left to send.

    The receiver records a request when it arrives; only this proves hookline read the 200.
    """
    done = {"success": count, "pending": 0, "sending": 0, "fail": 0, "canceled": 0}
    wait.until(
        lambda: _stats(server, app_id, ep_id),
        lambda stats: stats == done,
        what=f"endpoint stats {done}",
        timeout=timeout,
    )


def _events(server: HooklineServer, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of the latest start whose event is ``name``."""
    found = []
    for line in server.output().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def _wait_event(server: HooklineServer, name: str, timeout: float = 5.0) -> dict[str, Any]:
    events = wait.until(
        lambda: _events(server, name), bool, what=f"{name} in the log", timeout=timeout
    )
    return events[0]


def _report(record_property: Callable[[str, object], None], **facts: object) -> None:
    for name, value in facts.items():
        record_property(name, value)
    print(" ".join(f"{k}={v}" for k, v in facts.items()))  # visible with -s / -rP


def _signal(server: HooklineServer, signum: signal.Signals = signal.SIGTERM) -> None:
    assert server._proc is not None
    server._proc.send_signal(signum)


def _wait_exit(server: HooklineServer, timeout: float) -> int:
    assert server._proc is not None
    code = server._proc.wait(timeout)
    server.stop()  # forget the process (it has exited)
    return code


# --- 5. shutdown -------------------------------------------------------------------------------


def test_sigterm_releases_hanging_deliveries_and_restart_sends_them_at_once(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    count = 100
    path = receiver.new_path("hang")
    receiver.script(path, then=HOLD)
    server = start_server(env=SHUTDOWN)
    app_id, ep_id = _setup(server, receiver.url(path))
    acked = set(_ingest(server, app_id, count))
    receiver.wait_for(path, count, timeout=5.0)
    assert receiver.inflight(path) == count  # every delivery hangs in flight

    stopping = time.monotonic()
    code = server.stop()
    exit_s = time.monotonic() - stopping
    assert code == 0, server.output_tail()
    assert exit_s <= GRACE_SECONDS + EXIT_MARGIN_SECONDS, exit_s
    assert exit_s >= GRACE_SECONDS - 0.5, exit_s  # the grace was given, not skipped
    log = server.output()
    assert "Traceback" not in log, server.output_tail()
    assert [e["inflight"] for e in _events(server, "worker_draining")] == [count]
    assert [e["deliveries"] for e in _events(server, "worker_released")] == [count]
    assert not _delivered(receiver, path)

    receiver.script(path, then=200)
    restarted = time.monotonic()
    server.start()
    _wait_delivered(receiver, path, acked, timeout=AT_ONCE_SECONDS)
    redelivered_s = time.monotonic() - restarted
    assert redelivered_s < AT_ONCE_SECONDS < LONG_LEASE_SECONDS
    _wait_recorded(server, app_id, ep_id, count)
    got = _delivered(receiver, path)
    # Exactly once: nothing else held these tasks, and a released send is not an attempt.
    assert got == dict.fromkeys(acked, 1)
    with _client(server) as client:
        for msg_id in acked:
            response = client.get(f"/api/v1/app/{app_id}/attempt/msg/{msg_id}")
            assert response.status_code == 200, response.text
            attempts = response.json()["data"]
            assert [a["responseStatusCode"] for a in attempts] == [200], attempts

    _report(
        record_property,
        inflight_at_sigterm=count,
        exit_s=round(exit_s, 2),
        released=count,
        redelivered_after_restart_s=round(redelivered_s, 2),
        lease_s=LONG_LEASE_SECONDS,
    )


def test_sigterm_answers_the_api_request_in_flight_and_loses_no_racing_202(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    path = receiver.new_path("race")
    server = start_server(env=SHUTDOWN)
    app_id, _ = _setup(server, receiver.url(path))
    receiver.script(path, then=HOLD)  # nothing is delivered before the restart

    # One request is half sent when the signal arrives: its headers are in, its body is not.
    body = json.dumps(_message(-1)).encode()
    head = (
        f"POST /api/v1/app/{app_id}/msg HTTP/1.1\r\n"
        f"Host: {HOST}:{server.port}\r\n"
        f"Authorization: Bearer {server.token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    half = socket.create_connection((HOST, server.port))
    half.settimeout(10.0)
    half.sendall(head + body[:10])

    # Meanwhile a client ingests as fast as it can, until the process is gone.
    race = _Race(server, app_id)
    race.start()
    wait.until(lambda: len(race.acked), lambda n: n >= 100, what="100 racing 202s")
    time.sleep(0.2)  # let the half-sent request's headers be parsed
    stopping = time.monotonic()
    _signal(server)
    _wait_event(server, "shutdown_started")
    # Once the listening socket is closed, new connections are refused.
    wait.until(_refused(server), bool, what="connections refused after SIGTERM", timeout=3.0)
    half.sendall(body[10:])
    answer = _read_response(half)
    half.close()
    code = _wait_exit(server, timeout=GRACE_SECONDS + EXIT_MARGIN_SECONDS + 1)
    exit_s = time.monotonic() - stopping
    race.join()
    assert code == 0, server.output_tail()
    assert exit_s <= GRACE_SECONDS + EXIT_MARGIN_SECONDS, exit_s
    assert "Traceback" not in server.output(), server.output_tail()
    assert answer.startswith(b"HTTP/1.1 202 "), answer
    half_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["id"]
    # Whatever was not answered 202 failed at the connection, not with an error answer.
    assert not race.answers_other_than_202, race.answers_other_than_202

    acked = {half_id, *race.acked}
    receiver.script(path, then=200)
    restarted = time.monotonic()
    server.start()
    got = _wait_delivered(receiver, path, acked, timeout=10.0)
    redelivered_s = time.monotonic() - restarted
    # Messages whose 202 was lost with the connection may be delivered too, but nothing else.
    with _client(server) as client:
        for msg_id in set(got) - acked:
            assert client.get(f"/api/v1/app/{app_id}/msg/{msg_id}").status_code == 200
    _report(
        record_property,
        racing_202=len(race.acked),
        racing_202_after_sigterm=race.acked_after_signal(stopping),
        connection_errors=dict(race.errors),
        delivered_without_202=len(set(got) - acked),
        exit_s=round(exit_s, 2),
        delivered_after_restart_s=round(redelivered_s, 2),
    )


class _Race(threading.Thread):
    """Ingest continuously from a thread until the server process has exited."""

    def __init__(self, server: HooklineServer, app_id: str) -> None:
        super().__init__(name="racing-ingest", daemon=True)
        self.server = server
        self.app_id = app_id
        self.acked: list[str] = []
        self.acked_at: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()
        self.answers_other_than_202: list[tuple[int, str]] = []

    def acked_after_signal(self, at: float) -> int:
        return sum(1 for t in self.acked_at if t >= at)

    def run(self) -> None:
        proc = self.server._proc
        assert proc is not None

        async def sender(client: httpx.AsyncClient, seq: int) -> None:
            while proc.poll() is None:
                try:
                    response = await client.post(
                        f"/api/v1/app/{self.app_id}/msg", json=_message(seq)
                    )
                except httpx.TransportError as exc:
                    self.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                if response.status_code == 202:
                    self.acked.append(response.json()["id"])
                    self.acked_at.append(time.monotonic())
                else:
                    self.answers_other_than_202.append((response.status_code, response.text))

        async def main() -> None:
            async with _async_client(self.server) as client:
                await asyncio.gather(*(sender(client, i) for i in range(8)))

        asyncio.run(main())


def _refused(server: HooklineServer) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            socket.create_connection((HOST, server.port), timeout=1.0).close()
        except ConnectionRefusedError:
            return True
        return False

    return probe


def _read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response with a Content-Length body (hookline always sends one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_second_sigterm_exits_at_once_and_the_lease_recovers_everything(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    # A short request timeout (lease 12 s) so the test can wait for the lease; a long grace so
    # that "at once" is not mistaken for the grace, or for the hanging requests timing out.
    grace = 10.0
    timeout = 2.0
    lease = settings.Settings(request_timeout=timeout).lease_seconds
    env = {
        **QUIET,
        "HOOKLINE_SHUTDOWN_GRACE": f"{grace:g}",
        "HOOKLINE_REQUEST_TIMEOUT": f"{timeout:g}",
        "HOOKLINE_RETRY_SCHEDULE": ",".join(["0.2"] * 6),
    }
    count = 50
    path = receiver.new_path("forced")
    receiver.script(path, then=HOLD)
    server = start_server(env=env)
    app_id, ep_id = _setup(server, receiver.url(path))
    acked = set(_ingest(server, app_id, count))
    receiver.wait_for(path, count, timeout=5.0)

    first = time.monotonic()
    _signal(server)
    _wait_event(server, "worker_draining")  # the first signal is being honoured
    second = time.monotonic()
    _signal(server)
    code = _wait_exit(server, timeout=grace)
    exited = time.monotonic()
    assert code == 128 + signal.SIGTERM, server.output_tail()  # the forced path, not the drain
    assert exited - second < 1.0, exited - second
    # The hanging requests would have ended by timeout 2 s after they were sent.
    assert exited - first < timeout, exited - first
    assert _events(server, "shutdown_forced"), server.output_tail()
    assert not _delivered(receiver, path)

    receiver.script(path, then=200)
    restarted = time.monotonic()
    server.start()
    with contextlib.closing(sqlite3.connect(server.db_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with _client(server) as client:
        for msg_id in acked:
            assert client.get(f"/api/v1/app/{app_id}/msg/{msg_id}").status_code == 200
    # Nothing was released: the tasks come back when the leases of the dead process run out.
    _wait_delivered(receiver, path, acked, timeout=lease + 10.0)
    redelivered_s = time.monotonic() - restarted
    _wait_recorded(server, app_id, ep_id, count)
    assert set(_delivered(receiver, path)) == acked
    _report(
        record_property,
        exit_after_second_sigterm_s=round(exited - second, 3),
        exit_after_first_sigterm_s=round(exited - first, 3),
        exit_status=code,
        redelivered_after_restart_s=round(redelivered_s, 1),
        lease_s=lease,
    )


# --- 6. crash ----------------------------------------------------------------------------------


def test_sigkill_ten_times_while_delivering_loses_nothing_and_bounds_duplicates(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    rng = random.Random(6)  # where in the delivery each kill lands; fixed, so a failure repeats
    path = receiver.new_path("crash")
    receiver.script(path, then=CRASH_ANSWER)
    server = start_server(env=CRASH)
    app_id, ep_id = _setup(server, receiver.url(path))
    acked: set[str] = set()
    at_risk: list[int] = []  # per kill: in flight, plus answered just before it
    inflight_at_kills: list[int] = []
    for kill in range(KILLS):
        if kill:
            server.start()
        acked.update(_ingest(server, app_id, CRASH_BATCH, start=kill * CRASH_BATCH))
        time.sleep(rng.uniform(0.0, 0.6))
        inflight, risk = _kill_while_delivering(server, receiver, path)
        inflight_at_kills.append(inflight)
        at_risk.append(risk)

    restarted = time.monotonic()
    server.start()
    _wait_delivered(receiver, path, acked, timeout=CRASH_LEASE_SECONDS + 15.0)
    # A request in flight at a kill was recorded as a 200 on arrival, but hookline never read
    # the answer and sends it again: wait for hookline's own record, then count.
    _wait_recorded(server, app_id, ep_id, len(acked), timeout=CRASH_LEASE_SECONDS + 15.0)
    delivered_s = time.monotonic() - restarted
    got = _delivered(receiver, path)
    server.assert_running()
    assert len(acked) == KILLS * CRASH_BATCH
    assert set(got) == acked  # nothing the API did not acknowledge
    duplicates = sum(n - 1 for n in got.values())
    # Every send in flight at a kill went unanswered, so it was sent again; beyond those, only
    # an answer read but not yet committed can cause a duplicate.
    assert sum(inflight_at_kills) <= duplicates <= sum(at_risk), (duplicates, at_risk)
    _report(
        record_property,
        acked=len(acked),
        kills=KILLS,
        inflight_at_kills=inflight_at_kills,
        at_risk_at_kills=at_risk,
        duplicates=duplicates,
        bound=sum(at_risk),
        all_delivered_after_last_restart_s=round(delivered_s, 1),
        lease_s=CRASH_LEASE_SECONDS,
    )


def _kill_while_delivering(
    server: HooklineServer, receiver: Receiver, path: str
) -> tuple[int, int]:
    """SIGKILL once a delivery is in flight; return (in flight, at risk of a duplicate).

    The receiver's handlers sleep out their delay even after the sender has died, so a request
    in flight at the kill is, a moment later, either still running or ended after the kill.
    At risk of being delivered again are those, and the ones answered shortly before the kill,
    whose outcome may not have been committed.
    """
    deadline = time.monotonic() + 5.0
    while True:
        killed = time.monotonic()  # before the look, so whatever it sees ends after this
        if receiver.inflight(path):
            break
        assert killed < deadline, "no delivery in flight within 5 s"
        time.sleep(0.005)
    assert server.kill() == -signal.SIGKILL
    # A request the dead process had written may reach a handler a moment later.
    time.sleep(0.05)
    running = receiver.inflight(path)
    inflight = running + receiver.finished_since(killed, path)
    at_risk = running + receiver.finished_since(killed - UNCOMMITTED_WINDOW_SECONDS, path)
    assert inflight > 0
    wait.until(lambda: receiver.inflight(path), lambda n: n == 0, what="handlers done")
    return inflight, at_risk


# --- 4. backpressure ---------------------------------------------------------------------------

MAX_BACKLOG = 2000
BACKPRESSURE: Mapping[str, str] = {
    **QUIET,
    "HOOKLINE_MAX_BACKLOG": str(MAX_BACKLOG),
    "HOOKLINE_REQUEST_TIMEOUT": "5",
    "HOOKLINE_ENDPOINT_CONCURRENCY": "64",
}
# 64 in flight / 2 s = 32 deliveries a second: once over the limit, the backlog stays above the
# resume mark (90 % of it) for the whole blast, so backpressure goes on once and off once.
SLOW = Reply(status=200, delay=2.0)
BLAST_AFTER_ON_SECONDS = 3.0  # keep blasting this long once ingest is refused
RSS_SAMPLE_SECONDS = 0.1
# Measured: 0.3-1.5 MiB of growth while 12,000-24,000 requests are refused in those 3 s. The
# limit leaves room for allocator noise, yet ~1 KiB kept per refused request would exceed it.
RSS_GROWTH_LIMIT = 20 * MIB


def test_backlog_over_the_limit_answers_429_memory_stays_flat_and_all_accepted_arrive(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    path = receiver.new_path("slow")
    receiver.script(path, then=SLOW)
    server = start_server(env=BACKPRESSURE)
    app_id, ep_id = _setup(server, receiver.url(path))
    assert server._proc is not None
    proc = psutil.Process(server._proc.pid)
    blast = asyncio.run(_blast(server, app_id, proc))

    assert blast.refused, "no 429 while blasting"
    assert len(blast.acked) > MAX_BACKLOG
    status, headers, body = blast.refused[0]
    assert status == 429
    assert int(headers["Retry-After"]) > 0
    assert body["code"] == "too_many_requests" and body["detail"], body
    assert blast.other_calls == [200] * len(blast.other_calls) and blast.other_calls
    assert not blast.unexpected, blast.unexpected[:5]
    growth = max(blast.rss) - blast.rss[0]
    assert growth < RSS_GROWTH_LIMIT, [r // MIB for r in blast.rss]
    assert len(_events(server, "backpressure_on")) == 1, server.output_tail()
    assert not _events(server, "backpressure_off")  # on for the whole blast, no flapping

    receiver.script(path, then=200)  # the receiver recovers
    recovered = time.monotonic()
    _wait_delivered(receiver, path, set(blast.acked), timeout=30.0)
    drained_s = time.monotonic() - recovered
    _wait_recorded(server, app_id, ep_id, len(blast.acked))
    assert set(_delivered(receiver, path)) == set(blast.acked)
    wait.until(
        lambda: _events(server, "backpressure_off"), bool, what="backpressure_off", timeout=5.0
    )
    assert len(_events(server, "backpressure_on")) == 1, server.output_tail()
    assert len(_events(server, "backpressure_off")) == 1, server.output_tail()
    # Ingest is accepted again.
    with _client(server) as client:
        response = client.post(f"/api/v1/app/{app_id}/msg", json=_message(-1))
    assert response.status_code == 202, response.text

    _report(
        record_property,
        accepted=len(blast.acked),
        refused_429=blast.refused_count,
        blast_s=round(blast.seconds, 1),
        rss_mib_first_429=round(blast.rss[0] / MIB, 1),
        rss_mib_max=round(max(blast.rss) / MIB, 1),
        rss_growth_mib=round(growth / MIB, 1),
        drained_after_recovery_s=round(drained_s, 1),
    )


class _Blast:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.refused: list[tuple[int, dict[str, str], dict[str, Any]]] = []  # the first few
        self.refused_count = 0
        self.unexpected: list[tuple[int, str]] = []
        self.other_calls: list[int] = []  # GET /api/v1/app while ingest was refused
        self.rss: list[int] = []  # server RSS, from the first 429 on
        self.seconds = 0.0


async def _blast(server: HooklineServer, app_id: str, proc: psutil.Process) -> _Blast:
    """Ingest as fast as possible until ``BLAST_AFTER_ON_SECONDS`` after the first 429.

    aiohttp rather than httpx: httpx's async client costs several milliseconds of CPU per
    request here, which capped the blast at ~200/s, far below what hookline ingests.
    """
    result = _Blast()
    on = asyncio.Event()
    done = asyncio.Event()
    started = time.monotonic()
    url = f"{server.base_url}/api/v1/app/{app_id}/msg"

    async def sender(session: aiohttp.ClientSession, worker: int) -> None:
        seq = worker * 1_000_000
        while not done.is_set():
            seq += 1
            async with session.post(url, json=_message(seq)) as response:
                if response.status == 202:
                    result.acked.append((await response.json())["id"])
                elif response.status == 429:
                    result.refused_count += 1
                    if len(result.refused) < 3:
                        body = await response.json()
                        result.refused.append((429, dict(response.headers), body))
                    on.set()
                else:
                    result.unexpected.append((response.status, await response.text()))

    async def watch(session: aiohttp.ClientSession) -> None:
        await asyncio.wait_for(on.wait(), 30.0)
        until = time.monotonic() + BLAST_AFTER_ON_SECONDS
        while time.monotonic() < until:
            result.rss.append(proc.memory_info().rss)
            async with session.get(f"{server.base_url}/api/v1/app") as response:
                result.other_calls.append(response.status)
            await asyncio.sleep(RSS_SAMPLE_SECONDS)
        result.rss.append(proc.memory_info().rss)
        done.set()

    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {server.token}"},
        connector=aiohttp.TCPConnector(limit=INGEST_CONCURRENCY + 1),
        timeout=aiohttp.ClientTimeout(total=30.0),
    ) as session:
        await asyncio.gather(
            watch(session), *(sender(session, i) for i in range(INGEST_CONCURRENCY))
        )
    result.seconds = time.monotonic() - started
    return result
