"""Acceptance item 6: an acknowledged message is delivered even if the server dies.

A real ``hookline serve`` process ingests messages while the receiver hangs (so deliveries are
in flight), then is killed (SIGKILL, a crash) or stopped (SIGTERM, graceful). It is started
again on the same database with a healthy receiver, and every message that was answered 202
must arrive: at least once, so duplicates are counted and reported but allowed. Each test runs
on SQLite and on PostgreSQL (``backend_env``).

Timing: ``HOOKLINE_REQUEST_TIMEOUT=1`` keeps the claim lease at 11 s (request timeout + 10 s),
so tasks a crashed process had claimed are claimed again about 11 s later. Retries are 0.2 s
apart but there are six of them, not two: ingesting 200 messages takes about 2 s while the first
deliveries already time out, and with only three attempts a slow machine could exhaust a message
before the crash, which is correct behaviour but not the scenario under test.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable

import httpx
import pytest

from hookline import settings
from tests.support.receiver import Receiver, Reply
from tests.support.server import HooklineServer

REQUEST_TIMEOUT_SECONDS = 1.0
LEASE_SECONDS = settings.Settings(request_timeout=REQUEST_TIMEOUT_SECONDS).lease_seconds
FAST = {
    "HOOKLINE_REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT_SECONDS:g}",
    "HOOKLINE_RETRY_SCHEDULE": ",".join(["0.2"] * 6),
    "HOOKLINE_ALLOWED_SUBNETS": "127.0.0.0/8",
    "HOOKLINE_LOG_LEVEL": "info",  # debug would log 2 lines per attempt; the tail is enough
    # One endpoint takes every message here, and its receiver hangs on purpose: neither the
    # per-endpoint cap nor the circuit breaker (tests/acceptance/test_stress_isolation.py) may hold
    # deliveries back from what these tests crash and restart.
    "HOOKLINE_ENDPOINT_CONCURRENCY": "512",
    "HOOKLINE_CIRCUIT_FAILURES": "100000",
}
# Longer than the request timeout, so the server gives up first; the receiver then answers 503,
# which counts as "not delivered". Short enough that no handler is still asleep at teardown.
HANG = Reply(status=503, delay=REQUEST_TIMEOUT_SECONDS + 0.5)
DELIVERY_TIMEOUT_SECONDS = 30.0
INGEST_CONCURRENCY = 64  # connections the ingesting client opens at once


def _setup(server: HooklineServer, url: str) -> tuple[str, str]:
    """An application with one endpoint at ``url``; returns the app and endpoint ids."""
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        app = client.post("/api/v1/app", json={"name": "durability"})
        assert app.status_code == 201, app.text
        app_id: str = app.json()["id"]
        ep = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": url})
        assert ep.status_code == 201, ep.text
    return app_id, ep.json()["id"]


def _ingest(server: HooklineServer, app_id: str, count: int) -> dict[str, int]:
    """Send ``count`` messages concurrently; return {message id: seq} of every 202."""

    async def main() -> dict[str, int]:
        limits = httpx.Limits(max_connections=INGEST_CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.token}"},
            limits=limits,
            timeout=30.0,
        ) as client:

            async def send(seq: int) -> tuple[int, httpx.Response]:
                body = {"eventType": "durable.test", "payload": {"seq": seq}}
                return seq, await client.post(f"/api/v1/app/{app_id}/msg", json=body)

            answers = await asyncio.gather(*(send(i) for i in range(count)))
        statuses = collections.Counter(r.status_code for _, r in answers)
        assert statuses == {202: count}, statuses  # no 5xx under a burst
        return {r.json()["id"]: seq for seq, r in answers}

    return asyncio.run(main())


def _delivered(receiver: Receiver, path: str) -> collections.Counter[str]:
    """How many times each message id was answered 200 by the receiver."""
    return collections.Counter(
        r.headers["webhook-id"] for r in receiver.requests(path) if r.status == 200
    )


def _wait_all_delivered(
    receiver: Receiver, path: str, acked: dict[str, int], timeout: float
) -> collections.Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        got = _delivered(receiver, path)
        missing = set(acked) - set(got)
        if not missing:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(acked)} acknowledged messages not delivered within "
                f"{timeout:g} s, e.g. {sorted(missing)[:5]}"
            )
        time.sleep(0.1)


def _check_bodies(receiver: Receiver, path: str, acked: dict[str, int]) -> None:
    """Each delivery carries its own message's payload, unchanged."""
    for r in receiver.requests(path):
        if r.status == 200:
            assert json.loads(r.body) == {"seq": acked[r.headers["webhook-id"]]}


def _report(record_property: Callable[[str, object], None], **facts: object) -> None:
    for name, value in facts.items():
        record_property(name, value)
    print(" ".join(f"{k}={v}" for k, v in facts.items()))  # visible with -s / -rP


def test_sigkill_while_delivering_loses_no_acknowledged_message(
    start_server: Callable[..., HooklineServer],
    backend_env: dict[str, str],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    count = 200
    path = receiver.new_path("crash")
    receiver.script(path, then=HANG)
    server = start_server(env={**FAST, **backend_env})
    app_id, _ = _setup(server, receiver.url(path))

    acked = _ingest(server, app_id, count)
    assert len(acked) == count
    # Deliveries are in flight (the receiver holds them); crash before any can be recorded as
    # exhausted (that takes three timeouts).
    receiver.wait_for(path, count // 2, timeout=5.0)
    assert server.kill() == -9
    attempts_before_kill = len(receiver.requests(path))
    assert not _delivered(receiver, path)

    receiver.script(path, then=200)
    restarted = time.monotonic()
    server.start()
    got = _wait_all_delivered(receiver, path, acked, DELIVERY_TIMEOUT_SECONDS)
    took = time.monotonic() - restarted
    server.assert_running()

    _check_bodies(receiver, path, acked)
    assert set(got) == set(acked)  # nothing the API did not acknowledge
    duplicates = sum(n - 1 for n in got.values())
    _report(
        record_property,
        acked=len(acked),
        attempts_before_kill=attempts_before_kill,
        delivered_after_restart_s=round(took, 1),
        duplicates=duplicates,
    )


def test_sigterm_drains_then_restart_delivers_the_rest(
    start_server: Callable[..., HooklineServer],
    backend_env: dict[str, str],
    receiver: Receiver,
    record_property: Callable[[str, object], None],
) -> None:
    count = 100
    path = receiver.new_path("drain")
    receiver.script(path, then=HANG)
    server = start_server(env={**FAST, **backend_env})
    app_id, _ = _setup(server, receiver.url(path))

    acked = _ingest(server, app_id, count)
    receiver.wait_for(path, count // 2, timeout=5.0)
    attempts_before_stop = len(receiver.requests(path))

    stopping = time.monotonic()
    assert server.stop() == 0
    drain = time.monotonic() - stopping
    # The drain waits for in-flight requests, which the request timeout bounds.
    assert drain < LEASE_SECONDS, drain
    log = server.output()
    assert "worker_stopped" in log
    assert "Traceback" not in log, server.output_tail()
    assert not _delivered(receiver, path)

    receiver.script(path, then=200)
    restarted = time.monotonic()
    server.start()
    got = _wait_all_delivered(receiver, path, acked, DELIVERY_TIMEOUT_SECONDS)
    took = time.monotonic() - restarted
    # A graceful stop recorded its in-flight attempts instead of leaving them leased, so no
    # delivery waited for a lease to run out.
    assert took < LEASE_SECONDS, took
    _check_bodies(receiver, path, acked)

    # The interrupted attempt is on record: a timeout, then the success after the restart.
    first = receiver.requests(path)[0].headers["webhook-id"]
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers) as client:
        attempts = client.get(f"/api/v1/app/{app_id}/attempt/msg/{first}").json()["data"]
    codes = [a["responseStatusCode"] for a in reversed(attempts)]  # oldest first
    assert codes[0] == 0 and codes[-1] == 200, attempts
    assert "timed out" in attempts[-1]["response"], attempts

    _report(
        record_property,
        acked=len(acked),
        attempts_before_stop=attempts_before_stop,
        drain_s=round(drain, 1),
        delivered_after_restart_s=round(took, 1),
        duplicates=sum(n - 1 for n in got.values()),
    )


@pytest.mark.parametrize("stop", ["kill", "stop"])
def test_restart_after_everything_was_delivered_sends_nothing_again(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    stop: str,
    backend_env: dict[str, str],
) -> None:
    """Recorded deliveries stay delivered across a crash or a stop: a restart is not a replay."""
    count = 20
    path = receiver.new_path("done")
    server = start_server(env={**FAST, **backend_env})
    app_id, ep_id = _setup(server, receiver.url(path))
    acked = _ingest(server, app_id, count)
    _wait_all_delivered(receiver, path, acked, DELIVERY_TIMEOUT_SECONDS)
    headers = {"Authorization": f"Bearer {server.token}"}
    stats_path = f"/api/v1/app/{app_id}/endpoint/{ep_id}/stats"
    with httpx.Client(base_url=server.base_url, headers=headers) as client:
        deadline = time.monotonic() + 10.0
        while client.get(stats_path).json()["success"] < count:  # outcomes on disk
            assert time.monotonic() < deadline, client.get(stats_path).json()
            time.sleep(0.05)
    getattr(server, stop)()
    server.start()
    receiver.assert_no_more(path, count, seconds=1.0)
