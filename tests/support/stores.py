"""A real SQLite store, opened and migrated, for tests that need SQLite itself (not a contract)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from hookline.store.sqlite import SqliteStore


@contextlib.asynccontextmanager
async def opened_sqlite(
    path: Path, *, close_within: float | None = None
) -> AsyncIterator[SqliteStore]:
    """Open and migrate a store at ``path``; close it after, within ``close_within`` s if given."""
    store = SqliteStore(path)
    await store.open()
    try:
        await store.migrate()
        yield store
    finally:
        await asyncio.wait_for(store.close(), close_within)
