"""The contract suite: every test here runs once per store backend.

Factories build records the way the API would (fresh prefixed ids, ``time.time()`` clocks); the
queue tests pass ``now`` explicitly so leases and schedules are exact, never slept through.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hookline import ids
from hookline.models import (
    Application,
    Attempt,
    Claim,
    Completion,
    Endpoint,
    EventType,
    Message,
    MessageStatus,
    Org,
    Trigger,
)
from hookline.store.base import Store
from hookline.store.memory import MemoryStore

LEASE = 30.0  # seconds a claim holds its task in these tests


def factory(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Builds unopened stores of ``backend``; every call of one factory uses ONE database.

    Imports are lazy so the memory half of the suite runs even while sqlite or postgres is
    broken, and only the postgres half needs a server (and asyncpg): the database is asked for
    here, so memory and sqlite runs start none.
    """
    if backend == "memory":
        return MemoryStore
    if backend == "sqlite":
        from hookline.store import sqlite

        return lambda: sqlite.SqliteStore(tmp_path / "hookline.db")
    from hookline.store import postgres

    url = request.getfixturevalue("postgres_url")  # tests/conftest.py: a fresh database
    return lambda: postgres.PostgresStore(url, pool_size=4)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, migrated, empty store of each backend."""
    backend = factory(request.param, request, tmp_path)()
    await backend.open()
    try:
        await backend.migrate()
        yield backend
    finally:
        await backend.close()


OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])  # memory cannot be shared: one process, one store
async def shared_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenStore]:
    """Opens stores on one fresh, unmigrated database, as separate processes would."""
    make = factory(request.param, request, tmp_path)
    opened: list[Store] = []

    async def open_store() -> Store:
        backend = make()
        await backend.open()
        opened.append(backend)
        return backend

    try:
        yield open_store
    finally:
        for backend in reversed(opened):
            await backend.close()


@pytest.fixture
async def org(store: Store) -> Org:
    return await store.ensure_org("acme", time.time())


@pytest.fixture
async def other_org(store: Store) -> Org:
    return await store.ensure_org("globex", time.time())


@pytest.fixture
async def app(store: Store, org: Org) -> Application:
    application = make_app(org.id, uid="main-app")
    await store.create_app(application)
    return application


@pytest.fixture
async def other_app(store: Store, org: Org) -> Application:
    application = make_app(org.id, uid="other-app")
    await store.create_app(application)
    return application


def make_app(
    org_id: str, *, uid: str | None = None, name: str = "Acme app", created_at: float | None = None
) -> Application:
    at = time.time() if created_at is None else created_at
    return Application(
        id=ids.new(ids.APP),
        org_id=org_id,
        name=name,
        uid=uid,
        metadata={"team": "billing"},
        created_at=at,
        updated_at=at,
    )


def make_event_type(
    org_id: str, name: str, *, archived: bool = False, description: str = "An event"
) -> EventType:
    at = time.time()
    return EventType(
        org_id=org_id,
        name=name,
        description=description,
        archived=archived,
        created_at=at,
        updated_at=at,
    )


def make_endpoint(
    app_id: str,
    *,
    uid: str | None = None,
    url: str = "https://receiver.example.com/hook",
    event_types: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None,
    disabled: bool = False,
) -> Endpoint:
    at = time.time()
    return Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app_id,
        url=url,
        uid=uid,
        disabled=disabled,
        event_types=event_types,
        channels=channels,
        created_at=at,
        updated_at=at,
    )


def make_message(
    app_id: str,
    *,
    event_type: str = "invoice.paid",
    channels: tuple[str, ...] | None = None,
    event_id: str | None = None,
    created_at: float | None = None,
    payload: bytes = b'{"invoice":"in_1","amount":100}',
) -> Message:
    return Message(
        id=ids.new(ids.MESSAGE),
        app_id=app_id,
        event_type=event_type,
        payload=payload,
        event_id=event_id,
        channels=channels,
        created_at=time.time() if created_at is None else created_at,
    )


def make_attempt(
    message: Message,
    endpoint: Endpoint,
    *,
    status: MessageStatus = MessageStatus.SUCCESS,
    code: int = 200,
    created_at: float | None = None,
    trigger: Trigger = Trigger.SCHEDULED,
) -> Attempt:
    return Attempt(
        id=ids.new(ids.ATTEMPT),
        msg_id=message.id,
        endpoint_id=endpoint.id,
        app_id=message.app_id,
        url=endpoint.url,
        status=status,
        response_status_code=code,
        response="ok" if code else "connection refused",
        duration_ms=12,
        trigger=trigger,
        created_at=time.time() if created_at is None else created_at,
    )


def completion_for(
    claim: Claim,
    *,
    next_status: MessageStatus = MessageStatus.SUCCESS,
    code: int = 200,
    next_attempt_at: float | None = None,
    disable_endpoint: bool = False,
    created_at: float | None = None,
    lease: int | None = None,
) -> Completion:
    """What a worker reports after sending ``claim`` (attempt status follows ``next_status``)."""
    attempt_status = (
        MessageStatus.SUCCESS if next_status == MessageStatus.SUCCESS else MessageStatus.FAIL
    )
    return Completion(
        attempt=make_attempt(
            claim.message,
            claim.endpoint,
            status=attempt_status,
            code=code,
            created_at=created_at,
            trigger=claim.trigger,
        ),
        lease=claim.lease if lease is None else lease,
        next_status=next_status,
        next_attempt_at=next_attempt_at,
        disable_endpoint=disable_endpoint,
    )


async def add_endpoint(
    store: Store,
    app_id: str,
    *,
    uid: str | None = None,
    event_types: tuple[str, ...] | None = None,
    channels: tuple[str, ...] | None = None,
    disabled: bool = False,
) -> Endpoint:
    """Create and store an endpoint."""
    endpoint = make_endpoint(
        app_id, uid=uid, event_types=event_types, channels=channels, disabled=disabled
    )
    await store.create_endpoint(endpoint)
    return endpoint


async def add_message(
    store: Store,
    app_id: str,
    *,
    event_type: str = "invoice.paid",
    channels: tuple[str, ...] | None = None,
    event_id: str | None = None,
    created_at: float | None = None,
) -> Message:
    """Create and store a message (and so its delivery tasks)."""
    message = make_message(
        app_id,
        event_type=event_type,
        channels=channels,
        event_id=event_id,
        created_at=created_at,
    )
    await store.create_message(message)
    return message
