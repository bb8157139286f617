"""What ``/health/ready`` asks the store: ``probe_write`` and ``stalled_since``.

``probe_write`` must answer for the store as it is now, also when nothing else writes;
``stalled_since`` must leave out the work that waits by design (an open circuit, a rate limit,
an endpoint already being served), so that one slow or throttled endpoint cannot make a whole
fleet of healthy instances unready. Every test runs on every backend unless it says otherwise.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from msgspec.structs import replace

from hookline import errors
from hookline.circuit import CircuitPolicy
from hookline.models import Application, ClaimPolicy, MessageStatus
from hookline.store import sqlite as sqlite_module
from hookline.store import sqlite_writer
from hookline.store.base import Store
from hookline.store.sqlite import SqliteStore
from tests.support.stores import opened_sqlite

from .conftest import LEASE, add_endpoint, add_message, completion_for, make_endpoint

OPENS_AFTER = CircuitPolicy(failures=2, cooldown=60.0, cooldown_max=60.0, disable_after=3600.0)


# probe_write -----------------------------------------------------------------------------------


async def test_a_healthy_store_passes_the_write_probe_again_and_again(
    store: Store, app: Application
) -> None:
    now = time.time()
    for i in range(3):
        await store.probe_write(now + i)
    # the probe's row is its own: nothing a client or a worker reads changes
    assert await store.next_due_at() is None
    assert await store.count_tokens() == 0
    assert await store.get_app(app.org_id, app.id) == app


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_sqlite(tmp_path / "hookline.db") as backend:
        yield backend


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another process's open write transaction on the database (as ``sqlite3`` in a shell)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_sqlite_probe_fails_while_another_process_holds_the_write_lock(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(sqlite_module, "RECENT_WRITE_SECONDS", -1.0)  # always write the row
    other = _hold_write_lock(sqlite_store.path)
    try:
        with pytest.raises(errors.Unavailable) as refused:
            await sqlite_store.probe_write(time.time())
        assert refused.value.body()["detail"] == "The database is busy; retry later"
    finally:
        other.close()
    await sqlite_store.probe_write(time.time())  # the lock is gone: writable again


async def test_sqlite_probe_does_not_queue_behind_writes_that_just_committed(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy store answers from its own commits: a probe row would wait behind their batch."""
    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT_MS", 200)
    await sqlite_store.ensure_org("acme", time.time())
    other = _hold_write_lock(sqlite_store.path)
    try:
        await sqlite_store.probe_write(time.time())  # no write needed, so no wait for the lock
    finally:
        other.close()


async def test_room_probe_passes_on_a_disk_with_room_and_leaves_no_file(tmp_path: Path) -> None:
    sqlite_writer.check_room(tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_postgres_probe_fails_on_a_read_only_server(postgres_url: str) -> None:
    """As after a failover onto a standby: reads work, writes are refused."""
    import asyncpg

    from hookline.store import postgres

    async with _store(postgres_url) as migrating:
        await migrating.migrate()
    conn = await asyncpg.connect(postgres_url)
    try:
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    finally:
        await conn.close()
    async with _store(postgres_url) as read_only:  # new connections: read-only from the start
        assert isinstance(read_only, postgres.PostgresStore)
        await read_only.ping()
        with pytest.raises(errors.Unavailable) as refused:
            await read_only.probe_write(time.time())
        assert refused.value.body()["detail"] == "The database is read-only; retry later"


@contextlib.asynccontextmanager
async def _store(url: str) -> AsyncIterator[Store]:
    from hookline.store import postgres

    store = postgres.PostgresStore(url, pool_size=2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# stalled_since ---------------------------------------------------------------------------------


async def test_nothing_waiting_or_nothing_due_is_not_stalled(
    store: Store, app: Application
) -> None:
    now = time.time()
    assert await store.stalled_since(now, LEASE) is None
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now + 60)  # due in a minute
    assert await store.stalled_since(now, LEASE) is None
    assert await store.stalled_since(now + 90, LEASE) == now + 60


async def test_due_work_nobody_claims_is_stalled_since_it_fell_due(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now - 100)
    await add_message(store, app.id, created_at=now - 50)
    assert await store.stalled_since(now, LEASE) == now - 100


async def test_a_rate_limited_endpoints_backlog_waits_by_design(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    await store.create_endpoint(replace(make_endpoint(app.id), rate_limit=1))
    for i in range(5):
        await add_message(store, app.id, created_at=now - 600 + i)
    assert await store.next_due_at() == now - 600  # the oldest due work is old ...
    assert await store.stalled_since(now, LEASE) is None  # ... but nothing is stalled
    await add_endpoint(store, other_app.id)
    await add_message(store, other_app.id, created_at=now - 5)
    assert await store.stalled_since(now, LEASE) == now - 5  # other endpoints still count


async def test_an_open_circuits_backlog_waits_by_design(store: Store, app: Application) -> None:
    at = time.time() - 600
    await add_endpoint(store, app.id)
    for _ in range(2):
        await add_message(store, app.id, created_at=at)
    claims = await store.claim_due(at, ClaimPolicy(limit=2), LEASE)
    done = [
        completion_for(c, next_status=MessageStatus.PENDING, code=500, next_attempt_at=at + 1)
        for c in claims
    ]
    await store.complete(done, at, OPENS_AFTER)
    health = await store.endpoint_health(claims[0].endpoint.id)
    assert health is not None and health.circuit_open
    assert await store.next_due_at() == at + 1
    assert await store.stalled_since(at + 600, LEASE) is None


async def test_an_endpoint_being_served_is_not_stalled_until_its_leases_run_out(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    for i in range(3):
        await add_message(store, app.id, created_at=now - 300 + i)
    # one slot for this endpoint: the rest waits for it, which is concurrency, not a stall
    assert len(await store.claim_due(now, ClaimPolicy(limit=1), LEASE)) == 1
    assert await store.stalled_since(now + 1, LEASE) is None
    # the worker died: once its lease has run out, the endpoint's work is stalled again
    assert await store.stalled_since(now + LEASE + 1, LEASE) == now - 299
