"""Where hookline persists everything: the ``Store`` Protocol (``base``) and its backends.

``from_url`` lives here, not in ``base``, because the backends import ``base``: the factory
imports them lazily, so an optional driver is loaded only when its URL is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hookline.metrics import Metrics
    from hookline.store.base import Store


POSTGRES_SCHEMES = ("postgresql:", "postgres:")
POSTGRES_DRIVER_MISSING = (
    "hookline: PostgreSQL needs the asyncpg driver: install it with pip install hookline[postgres]"
)


def from_url(url: str, *, pool_size: int | None = None, metrics: Metrics | None = None) -> Store:
    """Build the store a database URL names (``memory://``, ``sqlite:///path``,
    ``postgresql://user@host/db``).

    ``pool_size`` caps a server database's connections (PostgreSQL); the others ignore it.
    With ``metrics``, SQLite and PostgreSQL time their ingest, claim and completion
    transactions (``observer``); the memory store has no transactions and records nothing.
    Raises ``SystemExit`` with one line when the URL needs a driver that is not installed.
    """
    if url.startswith("memory:"):
        from hookline.store import memory

        return memory.MemoryStore()
    if url.startswith("sqlite:"):
        from hookline.store import sqlite

        return sqlite.SqliteStore(sqlite.path_from_url(url), metrics=metrics)
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from hookline.store import postgres
        except ModuleNotFoundError as exc:
            if exc.name != "asyncpg":
                raise
            raise SystemExit(POSTGRES_DRIVER_MISSING) from None
        if pool_size is None:
            return postgres.PostgresStore(url, metrics=metrics)
        return postgres.PostgresStore(url, pool_size=pool_size, metrics=metrics)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path, postgresql://host/db or memory://"
    )
