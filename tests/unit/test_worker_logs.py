"""What the worker logs: one ``delivery_attempt`` line per attempt, one line per state change.

The worker runs on the in-memory store with ``delivery.send`` replaced by a script (no sockets).
Logs are captured with ``merge_contextvars``, as ``hookline.logs`` configures them, so these
tests see the ids the worker binds for a delivery on every line logged during it, and check
what an operator greps for: the ids, the outcome, what happens next; never the payload, a
secret or a custom header's value.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from hookline import delivery, egress, ids, worker
from hookline.models import Application, Endpoint, Message, Page, SigningKey
from hookline.settings import Settings
from hookline.store.base import AttemptFilter
from hookline.store.memory import MemoryStore

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
PAYLOAD = b'{"card":"4242-secret-payload"}'
HEADER_VALUE = "tenant-header-value-42"
WAIT_SECONDS = 5.0
IDS = ("msg_id", "endpoint_id", "app_id", "attempt_id")

log = structlog.get_logger("tests.receiver")

Script = list[int]  # status codes answered in turn; the last one repeats


@pytest.fixture
async def store() -> MemoryStore:
    backend = MemoryStore()
    await backend.open()
    return backend


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Script:
    """The statuses ``delivery.send`` answers; it logs one line while "sending"."""
    script: Script = [200]

    async def send(_: Any, request: delivery.Request, **__: Any) -> delivery.Response:
        log.info("receiver_called")  # a line logged during the delivery
        status = script.pop(0) if len(script) > 1 else script[0]
        return delivery.Response(
            status=status, body="receiver says: secret-body", retry_after=None, duration_ms=3
        )

    monkeypatch.setattr(delivery, "send", send)
    return script


@pytest.fixture
async def running(store: MemoryStore) -> AsyncIterator[Callable[[Settings], None]]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(settings: Settings) -> None:
        w = worker.Worker(
            store,
            None,  # type: ignore[arg-type]  # delivery.send is replaced: no session is used
            settings,
            egress_policy=egress.EgressPolicy(),
            wakeup=store.wakeup(),
            rand=lambda: 0.5,
        )
        tasks.append(asyncio.create_task(w.run(stop)))

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)


async def _endpoint(store: MemoryStore, secret: str = SECRET) -> tuple[Application, Endpoint]:
    now = time.time()
    org = await store.ensure_org("acme", now)
    app = Application(id=ids.new(ids.APP), org_id=org.id, name="a", created_at=now, updated_at=now)
    await store.create_app(app)
    endpoint = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app.id,
        url="https://receiver.example.com/hook?token=url-secret",
        headers={"x-tenant": HEADER_VALUE},
        keys=(SigningKey(secret=secret),),
        created_at=now,
        updated_at=now,
    )
    await store.create_endpoint(endpoint)
    return app, endpoint


async def _message(store: MemoryStore, app: Application) -> Message:
    msg = Message(
        id=ids.new(ids.MESSAGE),
        app_id=app.id,
        event_type="a.b",
        payload=PAYLOAD,
        created_at=time.time(),
    )
    await store.create_message(msg)
    return msg


async def _until(logs: list[dict[str, Any]], event: str, count: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_SECONDS
    while len(found := [e for e in logs if e["event"] == event]) < count:
        assert time.monotonic() < deadline, f"no {count} x {event} in {logs}"
        await asyncio.sleep(0.01)
    return found


def _captured() -> Any:
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def _never_leaks(logs: list[dict[str, Any]]) -> None:
    text = json.dumps(logs, default=str)
    for secret in ("4242-secret-payload", SECRET, HEADER_VALUE, "secret-body", "url-secret"):
        assert secret not in text


async def test_one_delivery_logs_one_attempt_line_and_every_line_carries_its_ids(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    app, endpoint = await _endpoint(store)
    msg = await _message(store, app)
    with _captured() as logs:
        running(Settings())
        [line] = await _until(logs, "delivery_attempt")
        await asyncio.sleep(0.05)  # the outcome is committed: nothing more is logged for it
    assert line["log_level"] == "info"
    assert line["msg_id"] == msg.id
    assert line["endpoint_id"] == endpoint.id
    assert line["app_id"] == app.id
    assert line["attempt_id"].startswith("atmpt_")
    assert (line["outcome"], line["status_code"], line["attempt"]) == ("success", 200, 1)
    assert (line["next_state"], line["next_attempt_at"]) == ("success", None)
    assert line["duration_ms"] == 3 and line["trigger"] == "scheduled"
    [during] = [e for e in logs if e["event"] == "receiver_called"]
    assert {k: during[k] for k in IDS} == {k: line[k] for k in IDS}
    [attempt] = await store.list_attempts(app.id, AttemptFilter(msg_id=msg.id), Page())
    assert attempt.id == line["attempt_id"]  # the id logged is the id stored
    assert len([e for e in logs if e["event"] == "delivery_attempt"]) == 1
    _never_leaks(logs)


async def test_a_failed_attempt_says_when_the_next_one_is(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    answers[:] = [503, 200]
    app, _ = await _endpoint(store)
    await _message(store, app)
    with _captured() as logs:
        running(Settings(retry_schedule=(0.05, 0.05)))
        first, second = await _until(logs, "delivery_attempt", 2)
    assert (first["outcome"], first["status_code"], first["next_state"]) == (
        "http_5xx",
        503,
        "pending",
    )
    assert first["next_attempt_at"] > time.time() - 5
    assert (second["outcome"], second["attempt"], second["next_state"]) == ("success", 2, "success")
    assert first["msg_id"] == second["msg_id"] and first["attempt_id"] != second["attempt_id"]
    _never_leaks(logs)


async def test_a_410_disables_the_endpoint_with_one_line(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    answers[:] = [410]
    app, endpoint = await _endpoint(store)
    await _message(store, app)
    with _captured() as logs:
        running(Settings())
        [disabled] = await _until(logs, "endpoint_disabled")
        await asyncio.sleep(0.05)
    assert (disabled["endpoint_id"], disabled["app_id"]) == (endpoint.id, app.id)
    assert disabled["reason"] == "gone" and disabled["log_level"] == "warning"
    assert "msg_id" not in disabled  # about the endpoint, not about one delivery
    assert len([e for e in logs if e["event"] == "endpoint_disabled"]) == 1
    [attempt] = [e for e in logs if e["event"] == "delivery_attempt"]
    assert (attempt["outcome"], attempt["next_state"]) == ("http_4xx", "fail")


async def test_a_circuit_opening_and_closing_is_logged_once_each(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    answers[:] = [500, 500, 200]
    app, endpoint = await _endpoint(store)
    settings = Settings(
        retry_schedule=(0.05, 0.05, 0.05),
        circuit_failures=2,
        circuit_cooldown=0.1,
        endpoint_disable_after=3600.0,
    )
    await _message(store, app)
    with _captured() as logs:
        running(settings)
        await _until(logs, "circuit_closed")
        await asyncio.sleep(0.1)
    changes = [e["event"] for e in logs if e["event"].startswith(("circuit_", "endpoint_"))]
    assert changes == ["circuit_opened", "circuit_closed"]
    [opened] = [e for e in logs if e["event"] == "circuit_opened"]
    assert (opened["endpoint_id"], opened["app_id"], opened["failures"]) == (endpoint.id, app.id, 2)
    assert opened["paused_until"] is not None


async def test_an_endpoint_failing_for_endpoint_disable_after_is_disabled_with_one_line(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    answers[:] = [500]
    other_app, other = await _endpoint(store)
    await _message(store, other_app)
    with _captured() as logs:
        running(Settings(retry_schedule=(0.05,) * 5, endpoint_disable_after=0.0))
        [disabled] = await _until(logs, "endpoint_disabled")
        await asyncio.sleep(0.2)
    assert (disabled["endpoint_id"], disabled["reason"]) == (other.id, "failing")
    assert len([e for e in logs if e["event"] == "endpoint_disabled"]) == 1


async def test_an_attempt_that_could_not_be_prepared_is_logged_like_the_others(
    store: MemoryStore, running: Callable[[Settings], None], answers: Script
) -> None:
    bad = "whsec_not*base64*at*all"
    app, _ = await _endpoint(store, secret=bad)
    msg = await _message(store, app)
    with _captured() as logs:
        running(Settings(retry_schedule=()))
        [line] = await _until(logs, "delivery_attempt")
    [warning] = [e for e in logs if e["event"] == "delivery_unprepared"]
    assert warning["msg_id"] == line["msg_id"] == msg.id
    assert warning["attempt_id"] == line["attempt_id"]
    assert (line["outcome"], line["status_code"], line["next_state"]) == ("unprepared", 0, "fail")
    assert "not*base64" not in json.dumps(logs, default=str)
