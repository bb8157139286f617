"""``Store.check_writable``: what the health check reports about writes, without writing.

Every backend: a healthy store is writable, and checking writes nothing. SQLite: a store whose
disk is full is reported unwritable (so ``/api/v1/health`` answers 503), and writable again
once writes succeed, or once no write has been refused for a while.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hookline import app as app_module
from hookline import errors, settings
from hookline.store import sqlite_writer
from hookline.store.base import Store
from hookline.store.sqlite import SqliteStore
from tests.support.stores import opened_sqlite


async def test_a_healthy_store_is_writable_and_checking_writes_nothing(store: Store) -> None:
    org = await store.ensure_org("acme", time.time())
    for _ in range(3):
        await store.check_writable()
    assert (await store.ensure_org("acme", time.time())).id == org.id


async def _fill(store: SqliteStore, pages: int | None = None) -> None:
    """No more pages (max_page_count): SQLite answers SQLITE_FULL, as on a full disk."""

    def limit(c: sqlite3.Connection) -> None:
        count = c.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        c.execute(f"PRAGMA max_page_count = {count}")

    await store._writer.run(limit)


async def _refused_write(store: SqliteStore) -> None:
    with pytest.raises(errors.Unavailable):
        await store.ensure_org("x" * 8000 + str(time.time()), time.time())


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Only SQLite can refuse a write (the memory store never does), so these run on it alone."""
    async with opened_sqlite(tmp_path / "hookline.db") as backend:
        yield backend


async def test_a_full_disk_is_reported_until_writes_succeed_again(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "RECOVERED_AFTER_SECONDS", 0.0)
    await _fill(sqlite_store)
    await _refused_write(sqlite_store)
    with pytest.raises(errors.Unavailable) as unwritable:
        await sqlite_store.check_writable()
    assert unwritable.value.body() == {
        "code": "unavailable",
        "detail": "database cannot write: disk_full",
    }
    assert unwritable.value.headers() == {"Retry-After": "5"}

    await _fill(sqlite_store, 1_073_741_823)  # room again
    await sqlite_store.ensure_org("acme", time.time())
    await sqlite_store.check_writable()


async def test_an_episode_nobody_writes_into_any_more_stops_being_reported(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(sqlite_store)
    await _refused_write(sqlite_store)
    with pytest.raises(errors.Unavailable):
        await sqlite_store.check_writable()
    # else a load balancer that took the instance out for it would never send the write
    # that ends the episode
    monkeypatch.setattr(sqlite_writer, "REFUSALS_SHOWN_SECONDS", 0.0)
    await sqlite_store.check_writable()


async def test_a_full_queue_is_load_not_an_unwritable_store(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "MAX_QUEUED_WRITES", 0)
    with pytest.raises(errors.Unavailable):
        await sqlite_store.ensure_org("acme", time.time())
    await sqlite_store.check_writable()


async def test_health_answers_503_while_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}")
    async with app_module.opened(s) as hookline:
        store = hookline.store
        assert isinstance(store, SqliteStore)
        transport = httpx.ASGITransport(app=app_module.asgi(hookline))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/api/v1/health")).status_code == 204
            await _fill(store)
            await _refused_write(store)
            resp = await client.get("/api/v1/health")
            assert resp.status_code == 503, resp.text
            assert resp.json() == {
                "code": "unavailable",
                "detail": "database cannot write: disk_full",
            }
            assert resp.headers["retry-after"] == "5"
            await _fill(store, 1_073_741_823)
            monkeypatch.setattr(sqlite_writer, "RECOVERED_AFTER_SECONDS", 0.0)
            await store.ensure_org("acme", time.time())
            assert (await client.get("/api/v1/health")).status_code == 204
