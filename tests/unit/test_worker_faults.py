"""The worker when a task or the store fails: attempts are recorded, failures are not hammered.

The worker runs on the in-memory store with ``delivery.send`` replaced (no sockets); faults are
injected by replacing one store method. Each test checks what an operator or a tenant would
notice: the attempt history, how often the store is called, how many lines reach the log.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from hookline import delivery, egress, errors, ids, worker
from hookline.models import (
    Application,
    Endpoint,
    Message,
    MessageStatus,
    Page,
    SigningKey,
)
from hookline.settings import Settings
from hookline.store.base import AttemptFilter
from hookline.store.memory import MemoryStore

GOOD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
BAD_SECRET = "whsec_not*base64*at*all"
WAIT_SECONDS = 5.0


@pytest.fixture
async def store() -> MemoryStore:
    backend = MemoryStore()
    await backend.open()
    return backend


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[delivery.Request]:
    """Every request the worker sends; each is answered 200."""
    requests: list[delivery.Request] = []

    async def send(_: Any, request: delivery.Request, **__: Any) -> delivery.Response:
        requests.append(request)
        return delivery.Response(status=200, body="ok", retry_after=None, duration_ms=1)

    monkeypatch.setattr(delivery, "send", send)
    return requests


async def _message_to(store: MemoryStore, secret: str) -> tuple[Application, Message]:
    now = time.time()
    org = await store.ensure_org("acme", now)
    app = Application(id=ids.new(ids.APP), org_id=org.id, name="a", created_at=now, updated_at=now)
    await store.create_app(app)
    endpoint = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app.id,
        url="https://receiver.example.com/hook",
        keys=(SigningKey(secret=secret),),
        created_at=now,
        updated_at=now,
    )
    await store.create_endpoint(endpoint)
    msg = Message(
        id=ids.new(ids.MESSAGE), app_id=app.id, event_type="a.b", payload=b"{}", created_at=now
    )
    await store.create_message(msg)
    return app, msg


@pytest.fixture
async def running(
    store: MemoryStore,
) -> AsyncIterator[Callable[[Settings], worker.Worker]]:
    """Start a worker on ``store``; it is stopped (and drained) after the test."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(settings: Settings) -> worker.Worker:
        w = worker.Worker(
            store,
            None,  # type: ignore[arg-type]  # delivery.send is replaced: no session is used
            settings,
            egress_policy=egress.EgressPolicy(),
            wakeup=store.wakeup(),
            rand=lambda: 0.5,
        )
        tasks.append(asyncio.create_task(w.run(stop)))
        return w

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)


async def _until(check: Callable[[], Any]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_task_that_cannot_be_prepared_is_recorded_and_follows_the_schedule(
    store: MemoryStore, running: Callable[[Settings], worker.Worker], sent: list[Any]
) -> None:
    app, msg = await _message_to(store, BAD_SECRET)
    running(Settings(retry_schedule=(0.05,)))

    async def exhausted() -> bool:
        [(_, task)] = await store.list_deliveries(app.id, msg.id, Page())
        return task.status is MessageStatus.FAIL

    await _until(exhausted)
    attempts = await store.list_attempts(app.id, AttemptFilter(msg_id=msg.id), Page())
    assert len(attempts) == 2  # the first and the one retry of the schedule, then it ends
    for attempt in attempts:
        assert attempt.status is MessageStatus.FAIL
        assert attempt.response_status_code == 0
        assert "signing secret cannot be decoded" in attempt.response
        assert BAD_SECRET.removeprefix("whsec_") not in attempt.response
    assert sent == []  # nothing unsigned ever went out


async def test_a_failed_outcome_write_is_retried_not_dropped(
    store: MemoryStore,
    running: Callable[[Settings], worker.Worker],
    sent: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "ERROR_BACKOFF_SECONDS", 0.01)
    app, msg = await _message_to(store, GOOD_SECRET)
    complete = store.complete
    calls = 0

    async def refuses_twice(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise errors.Unavailable("The database's disk is full; retry later", retry_after=5)
        return await complete(*args, **kwargs)

    monkeypatch.setattr(store, "complete", refuses_twice)
    with capture_logs() as logs:
        running(Settings())

        async def recorded() -> bool:
            [(_, task)] = await store.list_deliveries(app.id, msg.id, Page())
            return task.status is MessageStatus.SUCCESS

        await _until(recorded)
    attempts = await store.list_attempts(app.id, AttemptFilter(msg_id=msg.id), Page())
    assert [a.response_status_code for a in attempts] == [200]  # history kept
    assert len(sent) == 1  # and not delivered again
    assert not [e for e in logs if e["event"] == "record_dropped"]


async def test_an_outcome_that_cannot_be_written_within_its_lease_is_dropped_with_one_line(
    store: MemoryStore,
    running: Callable[[Settings], worker.Worker],
    sent: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(request_timeout=1.0)
    # the first pause already ends past the lease: keeping the outcome would be pointless
    monkeypatch.setattr(worker, "ERROR_BACKOFF_SECONDS", settings.lease_seconds + 1)
    monkeypatch.setattr(worker, "ERROR_BACKOFF_MAX_SECONDS", settings.lease_seconds + 1)
    await _message_to(store, GOOD_SECRET)
    calls = 0

    async def broken(*_: Any, **__: Any) -> Any:
        nonlocal calls
        calls += 1
        raise OSError("disk I/O error")

    monkeypatch.setattr(store, "complete", broken)
    with capture_logs() as logs:
        running(settings)
        await _until(lambda: _async(bool(sent)))
        await asyncio.sleep(0.1)
    dropped = [e for e in logs if e["event"] == "record_dropped"]
    assert len(dropped) == 1 and dropped[0]["attempts"] == 1
    assert calls == 1


async def _async(value: bool) -> bool:
    return value


async def test_a_broken_store_is_polled_with_backoff_and_logged_once(
    store: MemoryStore,
    running: Callable[[Settings], worker.Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    async def broken() -> float | None:
        nonlocal calls
        calls += 1
        raise OSError("disk I/O error")

    monkeypatch.setattr(store, "next_due_at", broken)
    with capture_logs() as logs:
        running(Settings())
        await asyncio.sleep(0.5)  # the idle poll alone would ask 25 times meanwhile
    assert 1 <= calls <= 2, calls
    failed = [e for e in logs if e["event"] == "next_due_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "OSError: disk I/O error"


def test_repeated_store_errors_are_logged_once_per_interval_with_a_count() -> None:
    now = [0.0]
    errs = worker.StoreErrors("claim_failed", clock=lambda: now[0])
    refusal = errors.Unavailable("The database's disk is full; retry later", retry_after=5)
    with capture_logs() as logs:
        pauses = []
        for _ in range(30):  # one failure per second for 30 s
            pauses.append(errs.failed(refusal))
            now[0] += 1.0
        errs.succeeded()
        errs.failed(OSError("gone"))
    lines = [e for e in logs if e["event"] == "claim_failed"]
    # the first, then one per 10 s with what it stood for, then the rest on recovery
    assert [e.get("repeated") for e in lines] == [None, 10, 10, 9, None]
    assert sum(e.get("repeated") or 1 for e in lines[:4]) == 30
    assert "exc_info" not in lines[0]  # a refusal the store logged already: no traceback
    assert lines[4]["exc_info"] is not None
    assert pauses[:5] == [1.0, 2.0, 4.0, 8.0, 8.0]  # backing off, bounded
    assert errs.failed(OSError("gone")) == 2.0  # backoff started over after the success
