"""``/health/live`` and ``/health/ready``: their bodies, each failing check, and recovery.

In-process on a real SQLite database (``conftest.hl``). Faults are what an operator meets: a
database that errors or does not answer (the store's methods replaced), a write lock another
process holds (a real second connection), a worker loop that stopped going round (an injected
clock) and deliveries nobody picks up (real old rows in the store).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import httpx
import pytest

from hookline import errors, ids, worker
from hookline.api import health
from hookline.app import Hookline
from hookline.models import ClaimPolicy, Endpoint, Message
from hookline.store import sqlite as sqlite_module
from hookline.store import sqlite_writer
from hookline.store.sqlite import SqliteStore

from .conftest import create_app


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _ready(anon: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    resp = await anon.get("/health/ready")
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert set(body) == {"status", "failed", "checks"}, body
    for check in body["checks"].values():
        assert set(check) == {"ok", "detail"} and check["detail"], body
    assert body["failed"] == [name for name, c in body["checks"].items() if not c["ok"]]
    if resp.status_code == 503:
        assert body["status"] == "unready" and body["failed"], body
        assert resp.headers["retry-after"] == str(health.RETRY_AFTER_SECONDS)
    else:
        assert resp.status_code == 200 and body["status"] == "ready", body
    return resp.status_code, body


# liveness --------------------------------------------------------------------------------------


async def test_live_answers_200_without_a_token_and_without_the_store(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def gone() -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(hl.store, "ping", gone)
    resp = await anon.get("/health/live")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}
    assert (await anon.head("/health/live")).status_code == 200


async def test_live_is_answered_even_past_the_in_flight_bound(
    anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy process is alive: a liveness 503 would get it restarted for being busy."""
    import hookline.api as api_module

    monkeypatch.setattr(api_module, "MAX_REQUESTS_IN_FLIGHT", 0)
    assert (await anon.get("/health/live")).status_code == 200
    assert (await anon.get("/health/ready")).status_code == 503  # readiness may shed load


# readiness -------------------------------------------------------------------------------------


async def test_ready_lists_its_checks_and_needs_no_token(anon: httpx.AsyncClient) -> None:
    status, body = await _ready(anon)
    assert status == 200, body
    # no worker loop runs in this process, so there is no worker check
    assert list(body["checks"]) == ["store", "writable", "backlog"]
    assert body["failed"] == []


async def test_ready_names_the_store_while_the_database_errors_and_recovers(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_ping = hl.store.ping

    async def unreachable() -> None:
        raise errors.Unavailable("The database is unreachable; retry later")

    monkeypatch.setattr(hl.store, "ping", unreachable)
    status, body = await _ready(anon)
    assert status == 503
    assert "store" in body["failed"]
    assert body["checks"]["store"]["detail"] == "The database is unreachable; retry later"

    monkeypatch.setattr(hl.store, "ping", real_ping)
    assert (await _ready(anon))[0] == 200


async def test_a_database_that_does_not_answer_fails_the_probe_instead_of_hanging_it(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def silent() -> None:
        await asyncio.Event().wait()  # a server that accepted the connection and went quiet

    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.1)
    monkeypatch.setattr(hl.store, "ping", silent)
    started = time.monotonic()
    status, body = await _ready(anon)
    assert time.monotonic() - started < 2.0
    assert status == 503 and body["failed"] == ["store"], body
    assert body["checks"]["store"]["detail"] == "no answer within 0.1 s"


async def test_internal_errors_are_named_by_type_only(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise OSError("/secret/path/hookline.db: disk gone")

    monkeypatch.setattr(hl.store, "ping", broken)
    _, body = await _ready(anon)
    assert body["checks"]["store"] == {"ok": False, "detail": "failed: OSError"}


async def test_ready_names_writable_while_another_process_holds_the_write_lock(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real write is tried, on an idle store: the probe finds what no earlier write did."""
    store = hl.store
    assert isinstance(store, SqliteStore)
    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(sqlite_module, "RECENT_WRITE_SECONDS", -1.0)
    clock = Clock()
    hl.readiness = health.Readiness(
        store, hl.backlog, hl.heartbeat, max_backlog_age=300.0, monotonic=clock
    )
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell, mid-transaction
    try:
        async with _client(hl) as client:
            status, body = await _ready(client)
            assert status == 503 and body["failed"] == ["writable"], body
            assert body["checks"]["writable"]["detail"] == "The database is busy; retry later"
            other.rollback()
            clock.now += health.WRITE_PROBE_SECONDS - 0.5
            assert (await _ready(client))[0] == 503  # the probe's answer is reused a while
            clock.now += 1.0
            monkeypatch.setattr(sqlite_writer, "RECOVERED_AFTER_SECONDS", 0.0)
            assert (await _ready(client))[0] == 200  # probed again: writable
    finally:
        other.close()


async def test_concurrent_probes_share_one_write(
    hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = 0
    real = hl.store.probe_write

    async def counted(now: float) -> None:
        nonlocal writes
        writes += 1
        await asyncio.sleep(0.05)
        await real(now)

    monkeypatch.setattr(hl.store, "probe_write", counted)
    readiness = health.Readiness(hl.store)
    results = await asyncio.gather(*(readiness.check() for _ in range(10)))
    assert all(r.status == "ready" for r in results)
    assert writes == 1


async def test_ready_names_the_worker_once_its_loop_stops_going_round(
    hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    heartbeat = worker.Heartbeat(clock=clock)
    readiness = health.Readiness(hl.store, hl.backlog, heartbeat, max_backlog_age=300.0)
    assert "worker" not in (await readiness.check()).checks  # no loop has run here yet
    heartbeat.beat()
    clock.now += worker.HEARTBEAT_STALE_SECONDS - 1
    out = await readiness.check()
    assert out.status == "ready" and out.checks["worker"].ok
    clock.now += 2
    out = await readiness.check()
    assert out.failed == ["worker"]
    assert "has not gone round for 31 s" in out.checks["worker"].detail
    heartbeat.beat()  # the loop got going again
    assert (await readiness.check()).status == "ready"


async def _old_work(hl: Hookline, age: float, *, rate_limit: int | None = None) -> Endpoint:
    """An endpoint with a delivery that fell due ``age`` seconds ago and nobody claimed."""
    async with _client(hl, authenticated=True) as client:
        app = await create_app(client, name=f"old-{ids.new('x')}")
    now = time.time()
    endpoint = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app["id"],
        url="https://receiver.example.com/hook",
        rate_limit=rate_limit,
        created_at=now,
        updated_at=now,
    )
    await hl.store.create_endpoint(endpoint)
    msg = Message(
        id=ids.new(ids.MESSAGE),
        app_id=app["id"],
        event_type="a.b",
        payload=b"{}",
        created_at=now - age,
    )
    await hl.store.create_message(msg)
    return endpoint


async def test_ready_names_the_backlog_while_due_work_waits_past_the_limit(
    hl: Hookline, anon: httpx.AsyncClient
) -> None:
    limit = hl.settings.ready_max_backlog_age
    await _old_work(hl, limit + 100)
    status, body = await _ready(anon)
    assert status == 503 and body["failed"] == ["backlog"], body
    assert "waited 400 s for a worker (limit 300 s)" in body["checks"]["backlog"]["detail"]
    # a worker takes it: nothing is waiting any more
    claims = await hl.store.claim_due(time.time(), ClaimPolicy(limit=10), 30.0)
    assert len(claims) == 1
    await hl.backlog.measure()
    assert (await _ready(anon))[0] == 200


async def test_a_rate_limited_endpoints_old_backlog_does_not_make_the_instance_unready(
    hl: Hookline, anon: httpx.AsyncClient
) -> None:
    await _old_work(hl, 1000, rate_limit=1)
    status, body = await _ready(anon)
    assert status == 200, body
    detail = body["checks"]["backlog"]["detail"]
    assert "waited 1000 s, held back by its endpoint" in detail, detail
    assert hl.backlog.oldest_age >= 1000  # the gauge still shows it


async def test_the_backlog_gauges_and_the_heartbeat_gauge_are_set(hl: Hookline) -> None:
    assert hl.metrics is not None
    registry = hl.metrics.registry
    await _old_work(hl, 50)
    await hl.backlog.measure()
    assert registry.get_sample_value("hookline_backlog_due") == 1
    oldest = registry.get_sample_value("hookline_backlog_oldest_age_seconds")
    assert oldest is not None and 50 <= oldest < 60
    assert registry.get_sample_value("hookline_backpressure_active") == 0
    hl.heartbeat.beat()
    hl.backlog.publish_heartbeat()
    age = registry.get_sample_value("hookline_worker_heartbeat_age_seconds")
    assert age is not None and 0 <= age < 1


async def test_a_backlog_limit_of_zero_leaves_the_check_out(hl: Hookline) -> None:
    await _old_work(hl, 10_000)
    readiness = health.Readiness(hl.store, hl.backlog, max_backlog_age=0.0)
    out = await readiness.check()
    assert out.status == "ready" and list(out.checks) == ["store", "writable"]


async def test_readiness_logs_each_change_once(
    hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    readiness = health.Readiness(hl.store)
    real_ping = hl.store.ping

    async def unreachable() -> None:
        raise errors.Unavailable("The database is unreachable; retry later")

    with capture_logs() as logs:
        await readiness.check()
        monkeypatch.setattr(hl.store, "ping", unreachable)
        for _ in range(3):
            await readiness.check()
        monkeypatch.setattr(hl.store, "ping", real_ping)
        for _ in range(3):
            await readiness.check()
    events = [(e["event"], e.get("failed"), e.get("was")) for e in logs]
    assert events == [("health_unready", ["store"], None), ("health_ready", None, ["store"])]


# outside the API's server ----------------------------------------------------------------------


async def test_probe_app_serves_both_probes_and_hands_other_paths_on(hl: Hookline) -> None:
    async def metrics(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"# metrics"})

    app = health.probe_app(hl.readiness, metrics)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (await client.get("/metrics")).text == "# metrics"
        refused = await client.post("/health/ready")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    bare = httpx.ASGITransport(app=health.probe_app(hl.readiness))
    async with httpx.AsyncClient(transport=bare, base_url="http://test") as client:
        assert (await client.get("/metrics")).status_code == 404


# the document ----------------------------------------------------------------------------------


async def test_the_probes_are_documented_under_health(anon: httpx.AsyncClient) -> None:
    doc = (await anon.get("/api/v1/openapi.json")).json()
    live = doc["paths"]["/health/live"]["get"]
    ready = doc["paths"]["/health/ready"]["get"]
    assert live["tags"] == ready["tags"] == ["Health"]
    assert "security" not in live and "security" not in ready
    ok = ready["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/ReadinessOut"}
    unready = ready["responses"]["503"]["content"]["application/json"]["schema"]
    assert unready == {
        "anyOf": [
            {"$ref": "#/components/schemas/ReadinessOut"},
            {"$ref": "#/components/schemas/HttpErrorOut"},
        ]
    }
    schema = doc["components"]["schemas"]["ReadinessOut"]
    assert set(schema["required"]) == {"status", "failed", "checks"}


def _client(hl: Hookline, *, authenticated: bool = False) -> httpx.AsyncClient:
    from hookline import app

    from .conftest import ADMIN_TOKEN

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if authenticated else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.asgi(hl)), base_url="http://test", headers=headers
    )


async def test_the_stalled_age_gauge_shows_work_no_worker_takes_and_not_throttled_work(
    hl: Hookline,
) -> None:
    assert hl.metrics is not None
    registry = hl.metrics.registry
    await _old_work(hl, 1000, rate_limit=1)  # held back by design: not stalled
    await hl.backlog.measure()
    assert registry.get_sample_value("hookline_backlog_stalled_age_seconds") == 0
    await _old_work(hl, 400)  # nothing holds it back, and no worker takes it
    hl.backlog._stalled_read_at = None  # the next measurement reads again (every 5 s otherwise)
    await hl.backlog.measure()
    stalled = registry.get_sample_value("hookline_backlog_stalled_age_seconds")
    assert stalled is not None and 400 <= stalled < 410
