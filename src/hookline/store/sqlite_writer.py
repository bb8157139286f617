"""The SQLite writer: one write connection, group commit, and checkpoints beside it.

Why this shape: SQLite allows one writer at a time, and a commit costs an fsync. Every write is
queued; whatever queued up while the previous transaction was committing goes into the next one
(each operation inside its own SAVEPOINT, so one failing operation does not undo its
neighbours). Callers are answered only after COMMIT returns, so an acknowledged write is on disk
(``synchronous=FULL``), and the commit cost is shared by the batch. Where each step runs is
explained in ``store/sqlite.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("hookline.sqlite")
CHECKPOINT_SECONDS = 1.0  # how often the WAL is copied back into the database file
BUSY_TIMEOUT_MS = 10_000  # another process (hookline api + worker) may hold the write lock


@dataclass(frozen=True, slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    bulk: bool


def _isolated(conn: sqlite3.Connection, op: _Op) -> tuple[bool, Any]:
    """Run one operation in its own SAVEPOINT, so that its failure undoes only itself."""
    conn.execute("SAVEPOINT op")
    try:
        result = op.fn(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return (False, exc)
    conn.execute("RELEASE op")
    return (True, result)


async def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE without blocking the event loop while another process writes.

    The writer connection has no busy timeout, so taking the write lock either succeeds at once
    or fails at once; on failure this retries after 0.2 ms, doubling up to 2 ms, for up to
    ``BUSY_TIMEOUT_MS``. SQLite's own busy handler would sleep the calling thread in steps of up
    to 100 ms instead, which held the API and the worker of a split deployment back from each
    other's commits.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.0002
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = (
                getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) & 0xFF == sqlite3.SQLITE_BUSY
            )
            if not busy or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.002)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (group commit needs that control).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a commit is on disk when COMMIT returns, so an acknowledged message survives power
    # loss, not only a process crash; group commit keeps the fsync cost per message small.
    conn.execute("PRAGMA synchronous = FULL")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class Writer:
    """Runs write operations in batches, one transaction per batch (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hookline-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._open)

    def _open(self) -> sqlite3.Connection:
        conn = connect(self._path, readonly=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # Checkpoints run on their own connection (SqliteStore._checkpoints): done inside COMMIT
        # they stalled every write queued behind that commit for tens of milliseconds.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")  # lock waits are _begin's, on the event loop
        return conn

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, bulk: bool = False) -> T:
        """Run ``fn`` in the next transaction; ``bulk`` for a statement that may touch many rows.

        A bulk operation (recover, deleting an application, purging) runs on the writer thread
        rather than the event loop: one long statement step there holds the loop for its whole
        duration, while on the thread it runs with the GIL released.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((_Op(fn, bulk), fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        # A cancelled caller cancels only its own future: the batch goes on, and _flush skips
        # answering a future that is already done.
        return await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                outcomes = await self._transaction(loop, [op for op, _ in batch])
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._flusher = None

    async def _transaction(
        self, loop: asyncio.AbstractEventLoop, ops: list[_Op]
    ) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None, "writer used before start()"
        try:
            await _begin(conn)
        except Exception as exc:  # e.g. another process held the write lock past BUSY_TIMEOUT_MS
            return [(False, exc)] * len(ops)
        outcomes: list[tuple[bool, Any]] = []
        try:
            for op in ops:
                if op.bulk:
                    outcomes.append(await loop.run_in_executor(self._executor, _isolated, conn, op))
                else:
                    outcomes.append(_isolated(conn, op))
            await loop.run_in_executor(self._executor, conn.execute, "COMMIT")
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            await loop.run_in_executor(self._executor, _rollback, conn)
            return [(False, exc)] * len(ops)
        return outcomes

    async def close(self) -> None:
        while self._flusher is not None:
            await self._flusher  # finish what callers are waiting on before closing
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


class Checkpointer:
    """Copies the WAL back into the database file on a connection and thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checkpoint_thread = ThreadPoolExecutor(1, thread_name_prefix="hookline-sqlite-ckpt")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._checkpoints(), name="sqlite-checkpoints")

    async def stop_ticking(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        """A last checkpoint, then release the thread and connection (after the writer closed)."""
        loop = asyncio.get_running_loop()
        # A last PASSIVE checkpoint leaves a short WAL behind. Not TRUNCATE: that waits (up to
        # the busy timeout) for every other process's readers, which would delay a shutdown.
        with contextlib.suppress(sqlite3.Error):
            await loop.run_in_executor(self._checkpoint_thread, self._checkpoint, "PASSIVE")
        self._checkpoint_thread.shutdown(wait=True)
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()

    async def _checkpoints(self) -> None:
        """Copy the WAL back into the database every second, beside the writer, not in it.

        PASSIVE never waits for readers or the writer; it copies what it can. A failure is
        logged and retried on the next tick: the WAL only grows meanwhile.
        """
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await loop.run_in_executor(self._checkpoint_thread, self._checkpoint, "PASSIVE")
            except sqlite3.Error:
                log.exception("sqlite_checkpoint_failed")

    def _checkpoint(self, mode: str) -> None:
        if self._checkpoint_conn is None:
            self._checkpoint_conn = connect(self.path, readonly=False)
        self._checkpoint_conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
