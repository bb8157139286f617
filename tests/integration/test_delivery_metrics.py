"""The delivery metrics of a real worker against a real receiver, on SQLite and PostgreSQL.

A ``Worker`` runs in this process on a real store, delivering over real sockets to the scripted
receiver on 127.0.0.1 (an address outside the allowed subnets is refused before any packet
goes out); its ``Metrics`` registry is read directly. Each test starts from a fresh registry
and checks that every counter and histogram moved by exactly what the scripted run implies.

How each outcome is provoked (the same recipe scripts an end-to-end scrape): success (200),
http_4xx (404), http_5xx (500, then 200), timeout (an answer slower than request_timeout),
connect_error (a loopback port nothing listens on), egress_refused (a private address outside
allowed_subnets); deferred rate_limited (rateLimit 1 and several messages at once),
circuit_open (circuit_failures failures in a row, then more messages), endpoint_busy (more
messages to a slow endpoint than endpoint_concurrency).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from hookline import delivery, egress, ids, worker
from hookline import metrics as metrics_
from hookline import store as store_
from hookline.models import Application, Endpoint, Message, SigningKey
from hookline.settings import Settings
from hookline.store.base import Store
from tests.support.receiver import Receiver, Reply

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
WAIT_SECONDS = 20.0
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@dataclass
class Harness:
    store: Store
    receiver: Receiver
    metrics: metrics_.Metrics
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sessions: list[Any] = field(default_factory=list)

    def start(self, **overrides: Any) -> None:
        options: dict[str, Any] = {"retry_schedule": (0.05,), "request_timeout": 0.5}
        settings = Settings(allowed_subnets=LOOPBACK, **{**options, **overrides})
        policy = egress.EgressPolicy(allowed=settings.allowed_subnets)
        session = delivery.new_session(policy, settings.worker_concurrency)
        self._sessions.append(session)
        w = worker.Worker(
            self.store,
            session,
            settings,
            egress_policy=policy,
            wakeup=self.store.wakeup(),
            metrics=self.metrics,
        )
        self._tasks.append(asyncio.create_task(w.run(self._stop)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), WAIT_SECONDS)
        for session in self._sessions:
            await session.close()

    async def endpoint(self, url: str, **fields: Any) -> Endpoint:
        """A new application with one endpoint at ``url``."""
        now = time.time()
        org = await self.store.ensure_org("acme", now)
        app = Application(
            id=ids.new(ids.APP), org_id=org.id, name="a", created_at=now, updated_at=now
        )
        await self.store.create_app(app)
        endpoint = Endpoint(
            id=ids.new(ids.ENDPOINT),
            app_id=app.id,
            url=url,
            keys=(SigningKey(secret=SECRET),),
            created_at=now,
            updated_at=now,
        )
        endpoint = replace(endpoint, **fields)
        await self.store.create_endpoint(endpoint)
        return endpoint

    async def send(self, endpoint: Endpoint, n: int = 1, **fields: Any) -> list[Message]:
        out = []
        for _ in range(n):
            msg = Message(
                id=ids.new(ids.MESSAGE),
                app_id=endpoint.app_id,
                event_type="a.b",
                payload=b'{"n":1}',
                created_at=self.store.now(),
                **fields,
            )
            await self.store.create_message(msg)
            out.append(msg)
        self.store.wakeup().notify()
        return out

    def value(self, name: str, **labels: str) -> float:
        found = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def attempts(self, outcome: str) -> float:
        return self.value("hookline_delivery_attempts_total", outcome=outcome)

    def deferred(self, reason: str) -> float:
        return self.value("hookline_deliveries_deferred_total", reason=reason)

    async def until(self, check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgres"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver
) -> AsyncIterator[Harness]:
    metrics = metrics_.Metrics(endpoint_labels=True)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hookline.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    backend = store_.from_url(url, pool_size=4, metrics=metrics)
    await backend.open()
    await backend.migrate()
    h = Harness(backend, receiver, metrics)
    try:
        yield h
    finally:
        await h.stop()
        await backend.close()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def test_every_attempt_is_counted_once_under_its_outcome(harness: Harness) -> None:
    rx = harness.receiver
    ok, flaky, missing, slow = (rx.new_path(p) for p in ("ok", "flaky", "missing", "slow"))
    rx.script(flaky, 500, then=200)
    rx.script(missing, then=404)
    rx.script(slow, then=Reply(200, delay=2.0))  # longer than request_timeout
    targets = {
        "ok": await harness.endpoint(rx.url(ok)),
        "flaky": await harness.endpoint(rx.url(flaky)),
        "missing": await harness.endpoint(rx.url(missing)),
        "slow": await harness.endpoint(rx.url(slow)),
        "closed": await harness.endpoint(closed_port_url()),
        "refused": await harness.endpoint("http://192.168.77.1:8080/hook"),  # not allowed
    }
    harness.start()
    await harness.send(targets["ok"], 3)
    for name in ("flaky", "missing", "slow", "closed", "refused"):
        await harness.send(targets[name])
    # one try and one retry each (the schedule has one step), but ok (3 x 1) and flaky (2)
    expected = {
        "success": 3 + 1,
        "http_5xx": 1,
        "http_4xx": 2,
        "timeout": 2,
        "connect_error": 2,
        "egress_refused": 2,
    }
    total = sum(expected.values())
    await harness.until(
        lambda: harness.value("hookline_store_batch_size_sum", operation="complete") >= total,
        "every outcome committed",
    )
    assert {o: harness.attempts(o) for o in expected} == expected
    assert harness.value("hookline_delivery_attempt_duration_seconds_count") == total
    # the two timeouts alone took request_timeout each
    assert harness.value("hookline_delivery_attempt_duration_seconds_sum") >= 2 * 0.5
    # latency: once per task that succeeded (ok x 3, flaky after its retry)
    assert harness.value("hookline_delivery_latency_seconds_count") == 4
    assert harness.value("hookline_delivery_latency_seconds_sum") >= 0.04  # flaky's retry delay
    assert harness.value("hookline_deliveries_in_flight") == 0
    per_endpoint = {
        name: {
            o: harness.value(
                "hookline_endpoint_delivery_attempts_total",
                app_id=ep.app_id,
                endpoint_id=ep.id,
                outcome=o,
            )
            for o in metrics_.ATTEMPT_OUTCOMES
        }
        for name, ep in targets.items()
    }
    assert per_endpoint["flaky"]["http_5xx"] == 1 and per_endpoint["flaky"]["success"] == 1
    assert per_endpoint["refused"]["egress_refused"] == 2
    assert sum(sum(v.values()) for v in per_endpoint.values()) == total
    # the store's transactions: every message ingested, claimed and completed once per attempt
    assert harness.value("hookline_store_batch_size_sum", operation="ingest") == 8
    assert harness.value("hookline_store_batch_size_sum", operation="claim") == total
    assert harness.value("hookline_store_commit_duration_seconds_count", operation="complete") >= 1
    assert rx.requests(ok) and not rx.requests(flaky)[2:]  # flaky: exactly two requests


async def test_latency_runs_from_deliver_at_and_a_resend_is_not_counted(harness: Harness) -> None:
    rx = harness.receiver
    path = rx.new_path("later")
    endpoint = await harness.endpoint(rx.url(path))
    harness.start()
    [msg] = await harness.send(endpoint, deliver_at=time.time() + 0.5)
    await harness.until(lambda: harness.attempts("success") == 1, "the scheduled delivery")
    assert harness.value("hookline_delivery_latency_seconds_count") == 1
    # measured from deliverAt, not from creation half a second earlier
    assert harness.value("hookline_delivery_latency_seconds_sum") < 0.4
    await harness.store.requeue(endpoint.app_id, msg.id, endpoint.id, harness.store.now())
    harness.store.wakeup().notify()
    await harness.until(lambda: harness.attempts("success") == 2, "the resend")
    assert len(rx.requests(path)) == 2
    assert harness.value("hookline_delivery_latency_seconds_count") == 1


async def test_held_back_tasks_are_counted_once_each_and_the_endpoint_gauges_follow(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "ENDPOINT_SUMMARY_SECONDS", 0.05)
    rx = harness.receiver
    limited = await harness.endpoint(rx.url(rx.new_path("limited")), rate_limit=1)
    failing_path = rx.new_path("failing")
    rx.script(failing_path, then=500)
    failing = await harness.endpoint(rx.url(failing_path))
    gone_path = rx.new_path("gone")
    rx.script(gone_path, then=410)
    gone = await harness.endpoint(rx.url(gone_path))
    harness.start(circuit_failures=2, circuit_cooldown=60.0, retry_schedule=(0.05, 0.05))

    # rate limit 1/s, a bucket of one: of three messages at once, two wait (and are counted
    # once, however many claims they wait through)
    await harness.send(limited, 3)
    await harness.until(lambda: harness.attempts("success") == 3, "the rate-limited three")
    assert harness.deferred("rate_limited") == 2

    # two failures open the circuit; their retries and a new message then wait for it
    await harness.send(failing, 2)
    await harness.until(lambda: harness.value("hookline_circuits_open") == 1, "an open circuit")
    await harness.until(lambda: harness.deferred("circuit_open") == 2, "the held retries")
    await harness.send(failing)
    await harness.until(lambda: harness.deferred("circuit_open") == 3, "the new message held")
    assert harness.attempts("http_5xx") == 2

    # a 410 disables its endpoint
    await harness.send(gone)
    await harness.until(lambda: harness.value("hookline_endpoints_disabled") == 1, "disabled")
    assert harness.attempts("http_4xx") == 1
    assert harness.deferred("endpoint_busy") == 0
    assert len(rx.requests(gone_path)) == 1


async def test_a_busy_endpoint_counts_each_waiting_task_once(harness: Harness) -> None:
    rx = harness.receiver
    path = rx.new_path("slow")
    rx.script(path, then=Reply(200, delay=0.2))
    endpoint = await harness.endpoint(rx.url(path))
    harness.start(endpoint_concurrency=1)
    await harness.send(endpoint, 3)
    await harness.until(lambda: harness.attempts("success") == 3, "three slow deliveries")
    assert harness.deferred("endpoint_busy") == 2
    assert harness.deferred("rate_limited") == harness.deferred("circuit_open") == 0
    assert rx.inflight(path) == 0


async def test_in_flight_follows_the_requests_in_progress(harness: Harness) -> None:
    rx = harness.receiver
    path = rx.new_path("hang")
    rx.script(path, then=Reply(200, delay=0.4))
    endpoint = await harness.endpoint(rx.url(path))
    harness.start(request_timeout=5.0)
    await harness.send(endpoint, 2)
    await harness.until(lambda: rx.inflight(path) == 2, "two requests at the receiver")
    assert harness.value("hookline_deliveries_in_flight") == 2
    await harness.until(lambda: harness.attempts("success") == 2, "both answered")
    await harness.until(lambda: harness.value("hookline_deliveries_in_flight") == 0, "none left")
