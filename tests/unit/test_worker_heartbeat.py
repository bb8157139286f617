"""The worker's heartbeat: it beats while the loop is alive (idle or saturated), not when wedged.

Readiness calls a worker stuck when its heartbeat is older than ``HEARTBEAT_STALE_SECONDS``, so a
worker that is merely idle, or waiting for a free slot while every slot is busy, must go on
beating; one whose store call never returns must stop. The worker runs on the in-memory store
with ``delivery.send`` replaced (no sockets).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hookline import delivery, egress, ids, worker
from hookline.models import Application, Endpoint, Message
from hookline.settings import Settings
from hookline.store.memory import MemoryStore

WAIT_SECONDS = 5.0
STOP_SECONDS = 1.0  # a live worker stops in milliseconds; a wedged one is cancelled after this


@pytest.fixture
async def store() -> MemoryStore:
    backend = MemoryStore()
    await backend.open()
    return backend


@pytest.fixture
async def running(store: MemoryStore) -> AsyncIterator[Callable[[Settings], worker.Worker]]:
    """Start a worker on ``store``; stopped after the test (a wedged one is cancelled)."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(settings: Settings) -> worker.Worker:
        w = worker.Worker(
            store,
            None,  # type: ignore[arg-type]  # delivery.send is replaced: no session is used
            settings,
            egress_policy=egress.EgressPolicy(),
            wakeup=store.wakeup(),
        )
        tasks.append(asyncio.create_task(w.run(stop)))
        return w

    yield start
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _messages(store: MemoryStore, count: int) -> None:
    now = time.time()
    org = await store.ensure_org("acme", now)
    app = Application(id=ids.new(ids.APP), org_id=org.id, name="a", created_at=now, updated_at=now)
    await store.create_app(app)
    endpoint = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app.id,
        url="https://receiver.example.com/hook",
        created_at=now,
        updated_at=now,
    )
    await store.create_endpoint(endpoint)
    for _ in range(count):
        msg = Message(
            id=ids.new(ids.MESSAGE), app_id=app.id, event_type="a.b", payload=b"{}", created_at=now
        )
        await store.create_message(msg)


async def _beats_again(w: worker.Worker) -> None:
    """The heartbeat moves on within a second (the loop went round at least once more)."""
    before = w.heartbeat.at
    deadline = time.monotonic() + 1.0
    while w.heartbeat.at == before:
        assert time.monotonic() < deadline, "the heartbeat did not move"
        await asyncio.sleep(0.01)


def test_a_heartbeat_has_no_age_until_a_loop_beats() -> None:
    now = [100.0]
    beat = worker.Heartbeat(clock=lambda: now[0])
    assert beat.age() is None
    beat.beat()
    now[0] += 7.5
    assert beat.age() == 7.5


async def test_an_idle_worker_keeps_beating(running: Callable[[Settings], worker.Worker]) -> None:
    w = running(Settings())
    await asyncio.sleep(0.05)
    await _beats_again(w)
    await _beats_again(w)


async def test_a_saturated_worker_waiting_for_room_keeps_beating(
    store: MemoryStore,
    running: Callable[[Settings], worker.Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "ROOM_WAIT_SECONDS", 0.05)
    release = asyncio.Event()
    started: list[delivery.Request] = []

    async def hanging_send(_: Any, request: delivery.Request, **__: Any) -> delivery.Response:
        started.append(request)
        await release.wait()  # a receiver that takes its time: every slot stays busy
        return delivery.Response(status=200, body="ok", retry_after=None, duration_ms=1)

    monkeypatch.setattr(delivery, "send", hanging_send)
    await _messages(store, 4)
    w = running(Settings(worker_concurrency=2))
    deadline = time.monotonic() + WAIT_SECONDS
    while len(started) < 2:
        assert time.monotonic() < deadline, "the deliveries never started"
        await asyncio.sleep(0.01)
    assert w.inflight == 2  # saturated: the loop waits for room
    await _beats_again(w)
    await _beats_again(w)
    release.set()


async def test_a_worker_whose_store_call_never_returns_stops_beating(
    store: MemoryStore,
    running: Callable[[Settings], worker.Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wedged = asyncio.Event()

    async def never(*_: Any) -> float | None:
        wedged.set()
        await asyncio.Event().wait()  # a lock nobody releases, a connection that never answers
        return None

    monkeypatch.setattr(store, "next_due_at", never)
    w = running(Settings())
    await asyncio.wait_for(wedged.wait(), WAIT_SECONDS)
    stuck_at = w.heartbeat.at
    await asyncio.sleep(0.2)  # ten idle polls' worth
    assert w.heartbeat.at == stuck_at
    age = w.heartbeat.age()
    assert age is not None and age >= 0.2
