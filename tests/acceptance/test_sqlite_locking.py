"""The SQLite store when another process holds the write lock (``hookline api`` + ``worker``)."""

from __future__ import annotations

import asyncio
import sqlite3
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
