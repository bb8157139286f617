"""The PostgreSQL store's connections, transactions and clock (``postgres.PostgresStore``'s base).

What every store operation stands on, kept apart from the operations themselves:

- an asyncpg pool of ``pool_size`` connections, opened lazily (no floor: a pool with one
  reconnects in the background while the database is down, logging a traceback per try);
- ``_connection`` and ``_transaction``: a database that cannot be reached raises
  ``errors.Unavailable`` (the API's 503 with ``Retry-After``), and ``check_writable`` reports
  it for ``REFUSALS_SHOWN_SECONDS`` unless a write succeeds meanwhile; ``_retrying`` runs a
  transaction again after PostgreSQL broke a deadlock by aborting it;
- ``now()``: the database server's clock, as local time plus a measured offset (see
  ``postgres``'s module docstring for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog

from hookline import errors
from hookline.store import observer, queries
from hookline.store import postgres_rows as rows

T = TypeVar("T")
Q = queries.load("postgres")
log = structlog.get_logger("hookline.postgres")
POOL_SIZE = 10  # connections per process
CONNECT_TIMEOUT = 5.0  # seconds to open a connection before the database counts as unreachable
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a pooled connection
CLOCK_REFRESH_SECONDS = 30.0
CLOCK_SAMPLES = 3
REFUSALS_SHOWN_SECONDS = 30.0  # as sqlite_writer's: how long the health check reports a refusal
TRANSACTION_TRIES = 3  # claims and completions, run again after a deadlock


class Database:
    """A pool on one PostgreSQL database, the transactions run on it and the server's clock."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        local_clock: Callable[[], float] = time.time,
        commits: observer.Commits | None = None,
    ) -> None:
        self.url = url
        self._commits = commits
        self._pool_size = pool_size
        self._local_clock = local_clock
        self._offset = 0.0  # database clock - local clock, seconds
        self._pool: Any = None
        self._clock_task: asyncio.Task[None] | None = None
        self._refused_at: float | None = None  # monotonic time of the last refused write
        self._refusal: errors.Unavailable | None = None
        self.wrote_at: float | None = None  # monotonic time of the last committed transaction

    async def open(self) -> None:
        """Connect (one clear ``errors.Unavailable`` if the database cannot be used)."""
        # min_size=0: a pool with a floor reconnects in the background while the database is
        # down, logging a traceback per try; without one it reconnects when next asked.
        pool = await asyncpg.create_pool(
            self.url, min_size=0, max_size=self._pool_size, timeout=CONNECT_TIMEOUT
        )
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                offset = await _clock_offset(conn, self._local_clock)
        except (*rows.UNREACHABLE, asyncpg.PostgresError, ValueError) as exc:
            await pool.close()
            raise errors.Unavailable(self._cannot_connect(exc)) from exc
        self._pool, self._offset = pool, offset
        self._clock_task = asyncio.get_running_loop().create_task(
            self._keep_clock(), name="postgres-clock"
        )

    def _cannot_connect(self, exc: BaseException) -> str:
        parts = urllib.parse.urlsplit(self.url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (is PostgreSQL running there?)"
        elif isinstance(exc, TimeoutError):
            reason = f"no answer within {CONNECT_TIMEOUT:g} s"
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        else:
            reason = str(exc) or type(exc).__name__
        return f"cannot connect to PostgreSQL at {where}: {reason}"

    async def close(self) -> None:
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
            self._clock_task = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        async with self._connection() as c:
            await c.fetchval("SELECT 1")

    async def check_writable(self) -> None:
        refused = self._refused_at
        if refused is None or time.monotonic() - refused > REFUSALS_SHOWN_SECONDS:
            return
        retry_after = 1 if self._refusal is None else self._refusal.retry_after
        raise errors.Unavailable("database cannot write: unreachable", retry_after=retry_after)

    async def _connect(self) -> Any:
        """A connection of its own, outside the pool (the wake-up's LISTEN)."""
        return await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; a database that cannot be reached raises ``Unavailable``."""
        if self._pool is None:
            raise RuntimeError("PostgresStore used before open()")
        pool = self._pool
        try:
            conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        except rows.UNREACHABLE as exc:
            raise self._refused(exc) from exc
        try:
            yield conn
        except rows.UNREACHABLE as exc:
            if isinstance(exc, rows.BROKEN_CONNECTION):
                # It cannot be used again: closed here, so that the pool opens a new one
                # instead of handing this one to the next caller.
                conn.terminate()
            raise self._refused(exc) from exc
        finally:
            await _release(pool, conn)

    def _refused(self, exc: BaseException) -> errors.Unavailable:
        refusal = rows.unavailable(exc)
        if self._refused_at is None:
            log.error("store_unwritable", reason="unreachable", error=str(exc))
        self._refused_at, self._refusal = time.monotonic(), refusal
        return refusal

    async def _transaction(
        self,
        fn: Callable[[Any], Awaitable[T]],
        *,
        operation: str | None = None,
        items: Callable[[T], int] | None = None,
    ) -> T:
        """Run ``fn(conn)`` in one transaction; its result once the commit returned.

        ``operation`` names it for the commit metrics, with ``items(result)`` items written.
        """
        async with self._connection() as c:
            started = time.perf_counter()
            async with c.transaction():
                result = await fn(c)
            if operation is not None and self._commits is not None:
                written = 1 if items is None else items(result)
                self._commits.committed(operation, time.perf_counter() - started, written)
        self.wrote_at = time.monotonic()
        if self._refused_at is not None:
            log.info("store_writable", was="unreachable")
            self._refused_at = self._refusal = None
        return result

    async def _retrying(
        self,
        fn: Callable[[Any], Awaitable[T]],
        *,
        operation: str | None = None,
        items: Callable[[T], int] | None = None,
    ) -> T:
        """``_transaction``, run again when PostgreSQL broke a deadlock by aborting it."""
        for attempt in range(TRANSACTION_TRIES):
            try:
                return await self._transaction(fn, operation=operation, items=items)
            except rows.RETRY_AGAIN:
                if attempt == TRANSACTION_TRIES - 1:
                    raise
                await asyncio.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as c:
            return list(await c.fetch(sql, *args))

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        async with self._connection() as c:
            return await c.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any, conflict: str | None = None) -> int:
        """One statement in its own transaction; rows changed. ``conflict``: unique → 409."""

        async def op(c: Any) -> int:
            return rows.rowcount(await c.execute(sql, *args))

        try:
            return await self._transaction(op)
        except asyncpg.UniqueViolationError as exc:
            if conflict is None:
                raise
            raise errors.Conflict(conflict) from exc

    # the clock ---------------------------------------------------------------------------------
    def now(self) -> float:
        """The database server's clock (see the module docstring), epoch seconds."""
        return self._local_clock() + self._offset

    async def sync_clock(self) -> None:
        """Measure the offset to the server's clock again (done at open and periodically)."""
        async with self._connection() as c:
            self._offset = await _clock_offset(c, self._local_clock)

    async def _keep_clock(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_REFRESH_SECONDS)
            # unreachable: keep the last offset; _connection logged the refusal
            with contextlib.suppress(errors.Unavailable):
                await self.sync_clock()


async def _release(pool: Any, conn: Any) -> None:
    """Give ``conn`` back to the pool; a failure here does not undo what was done on it.

    The pool resets a connection it takes back, and that reset fails when the server closed
    the connection after the last statement (a shutdown reaching an idle session): by then the
    caller's transaction has committed, and answering it with an error would deny a write that
    holds. The pool has closed such a connection and opens a new one when next asked.
    """
    try:
        await pool.release(conn)
    except (*rows.UNREACHABLE, asyncpg.PostgresError) as exc:
        log.debug("postgres_release_failed", error=str(exc))


async def _clock_offset(conn: Any, local_clock: Callable[[], float]) -> float:
    """Server clock minus local clock: the sample with the shortest round trip, halved."""
    best: tuple[float, float] | None = None  # (round trip, offset)
    for _ in range(CLOCK_SAMPLES):
        before = local_clock()
        server = float(await conn.fetchval(Q["clock"]))
        after = local_clock()
        if best is None or after - before < best[0]:
            best = (after - before, server - (before + after) / 2)
    assert best is not None
    return best[1]
