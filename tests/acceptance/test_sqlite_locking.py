"""The SQLite store's threads: lock waits and bulk statements keep the event loop free."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from hookline.store.sqlite import SqliteStore


async def test_a_write_waits_for_another_connections_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hookline.db"
    store = SqliteStore(path)
    await store.open()
    await store.migrate()
    other = sqlite3.connect(path, isolation_level=None)  # stands in for the other process
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(store.ensure_org("acme", time.time()))

        # while the write waits for the lock, the event loop keeps running on time
        started = time.monotonic()
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 0.5
        assert not write.done()

        other.execute("COMMIT")
        org = await asyncio.wait_for(write, 5)
        assert org.name == "acme"
    finally:
        other.close()
        await store.close()


async def test_bulk_operations_run_off_the_event_loop_and_others_on_it(tmp_path: Path) -> None:
    # A statement over many rows (recover, deleting an app, purging) must not hold the event
    # loop; the short per-message statements run on it (see store/sqlite.py's docstring).
    store = SqliteStore(tmp_path / "hookline.db")
    await store.open()
    await store.migrate()
    try:

        def where(_: sqlite3.Connection) -> str:
            return threading.current_thread().name

        assert await store._writer.run(where) == threading.current_thread().name
        bulk_thread = await store._writer.run(where, bulk=True)
        assert bulk_thread.startswith("hookline-sqlite-writer")
    finally:
        await store.close()
