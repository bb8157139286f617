"""The SQLite writer: one write connection, group commit, and checkpoints beside it.

Why this shape: SQLite allows one writer at a time, and a commit costs an fsync. Every write is
queued; whatever queued up while the previous transaction was committing goes into the next one
(each operation inside its own SAVEPOINT, so one failing operation does not undo its
neighbours). Callers are answered only after COMMIT returns, so an acknowledged write is on disk
(``synchronous=FULL``), and the commit cost is shared by the batch. Where each step runs is
explained in ``store/sqlite.py``.

When the store cannot write (the disk is full, an I/O error, another process holding the write
lock past ``BUSY_TIMEOUT_MS``, ``MAX_QUEUED_WRITES`` already waiting), every write in the batch
fails with ``errors.Unavailable`` (503 with ``Retry-After``) and nothing of it is committed; the
connection is rolled back and the next batch tries again, so writes resume by themselves once
the cause is gone. ``store_unwritable`` and ``store_writable`` are logged once per episode, and
``Writer.check_writable`` (the health check) reports the episode without writing anything.

Whatever fails, every caller of a batch is answered and no transaction outlives its batch: a
failing BEGIN, statement, COMMIT or writer-thread call fails the batch with
``errors.Unavailable``; a ROLLBACK that fails closes the connection (which rolls back) and opens
a new one; a cancelled flusher still finishes the transaction it started (its outcome is only
known once the writer thread returns) and the rest of the queue before it ends.

The bound on the WAL: the ``-wal`` file stays below ``WAL_TRUNCATE_BYTES`` (64 MiB) plus what
the writer appends between two checkpoint ticks (``CHECKPOINT_SECONDS``) and during the
truncate itself. PASSIVE checkpoints alone never let the WAL restart while writes go on, so
past that size a tick also runs a TRUNCATE checkpoint, which waits up to
``CHECKPOINT_BUSY_TIMEOUT_MS`` for the write lock and for readers. The bound therefore assumes
no read transaction (here or in another process) stays open across consecutive ticks; a reader
that does so defers the truncate and the WAL grows until it ends. After a WAL restarts by
itself (the checkpoints caught up), ``journal_size_limit`` cuts the file back to
``JOURNAL_SIZE_LIMIT_BYTES``. Measured with ``hookline bench --scenario slow-endpoints --count
60000`` (2 of 10 endpoints hang; 2,800-5,300 messages/s ingested on 2 vCPUs): the WAL peaked at
96-114 MiB, truncated about every 2 s, each truncate holding writes back for 40-130 ms; with
PASSIVE checkpoints alone it reached 377-565 MiB and was still growing when ingest ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from hookline import errors
from hookline.store import observer

T = TypeVar("T")
log = structlog.get_logger("hookline.sqlite")
MIB = 1024 * 1024
CHECKPOINT_SECONDS = 1.0  # how often the WAL is copied back into the database file
BUSY_TIMEOUT_MS = 10_000  # another process (hookline api + worker) may hold the write lock
# Writes waiting for the next transaction, beyond the batch committing now. The number is a
# time bound: at the 3,000-5,500 messages/s measured in docs/benchmarks.md a full queue is 2-3 s
# of writer work, so a write that gets in is answered well within a client's timeout, and one
# that does not is told to retry instead of waiting longer still. Healthy load (the benchmark
# keeps 64 requests in flight) never comes near it. As a memory bound it is loose: each queued
# write holds its payload, up to max_payload_bytes.
MAX_QUEUED_WRITES = 10_000
# Under continuous writes PASSIVE checkpoints never catch up, so the WAL never restarts: that is
# how it reached 546 MB in a 60 s blast with a slow receiver. Past this size a tick truncates it.
WAL_TRUNCATE_BYTES = 64 * MIB
# Short: while a TRUNCATE holds the write lock waiting for readers, the writer waits too.
CHECKPOINT_BUSY_TIMEOUT_MS = 200
# What a WAL that restarted by itself is cut back to; below WAL_TRUNCATE_BYTES, or every tick
# after a restart would truncate again.
JOURNAL_SIZE_LIMIT_BYTES = 16 * MIB
# How long writes must succeed without a refusal before the store counts as writable again. On
# a full disk each checkpoint that lets the WAL restart lets a few writes through (into space
# the WAL file already has), which would otherwise log a recovery every CHECKPOINT_SECONDS.
RECOVERED_AFTER_SECONDS = 5.0
# How long after its last refused write the health check still reports an unwritable episode.
# Without a limit a store that nobody writes to any more (a load balancer took the instance out
# because of that very health check) would stay "unwritable" for good, since only writes end
# an episode; with it, the check answers 204 again and the next refused write turns it back.
REFUSALS_SHOWN_SECONDS = 30.0

# What readiness asks the filesystem for (``check_room``): a few group commits of small
# messages. A disk with less free fails the next writes anyway.
ROOM_PROBE_BYTES = 64 * 1024

QUEUE_FULL = "queue_full"
WRITE_FAILED = "write_failed"
# SQLite primary result codes that mean "cannot write now", not "this write is wrong".
_UNWRITABLE = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_LOCKED: "busy",
    sqlite3.SQLITE_READONLY: "read_only",  # e.g. the filesystem was remounted read-only
}
# The errors a room probe (``check_room``) can meet, as the reasons below.
_NO_ROOM = {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only"}
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)  # kernels or filesystems without
_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
# Why writes are refused -> (Retry-After seconds, what the client is told). Lock waits and a full
# queue pass in about a second; a full disk or an I/O error needs someone to act.
_REFUSALS: dict[str, tuple[int, str]] = {
    QUEUE_FULL: (1, "Too many writes are waiting; retry later"),
    "busy": (1, "The database is busy; retry later"),
    "commit_failed": (1, "The write could not be committed; retry later"),
    # BEGIN, a SAVEPOINT or the writer thread failed (or the transaction was interrupted)
    WRITE_FAILED: (1, "The write could not be completed; retry later"),
    "disk_full": (5, "The database's disk is full; retry later"),
    "io_error": (5, "The database could not write to disk; retry later"),
    "read_only": (5, "The database is read-only; retry later"),
}


@dataclass(frozen=True, slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    bulk: bool
    operation: str | None = None  # what the metrics call it (observer.INGEST, ...), if counted
    items: int | None = 1  # how many items it writes; None: as many as its result holds


def _unwritable(exc: BaseException) -> str | None:
    """Why ``exc`` means the store cannot write now (a key of ``_REFUSALS``), or None."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return None if code is None else _UNWRITABLE.get(code & 0xFF)


def _isolated(conn: sqlite3.Connection, op: _Op) -> tuple[bool, Any]:
    """Run one operation in its own SAVEPOINT, so that its failure undoes only itself.

    A full disk or an I/O error fails the whole transaction instead: SQLite may already have
    rolled it back (then ROLLBACK TO would fail, and later operations would autocommit one by
    one), and its COMMIT would fail the same way.
    """
    conn.execute("SAVEPOINT op")
    try:
        result = op.fn(conn)
    except Exception as exc:
        if _unwritable(exc) is not None:
            raise
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
            if not _busy(exc) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.002)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or one of its extended codes: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY)
    return bool(code & 0xFF == sqlite3.SQLITE_BUSY)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL, waiting (up to ``BUSY_TIMEOUT_MS``) for another process doing
    the same.

    On a new database the switch reads the header, then upgrades to a write to change it; when
    another connection holds the write lock at that moment (``hookline api`` and ``hookline
    worker`` started together on a new file, one converting while the other does), SQLite
    reports SQLITE_BUSY at once, without its busy handler (an upgrade from a read could
    deadlock). Once the file is in WAL mode the statement takes no write lock.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # on the writer's own thread, before the store is open
        pause = min(pause * 2, 0.05)


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

    def __init__(self, path: Path, commits: observer.Commits | None = None) -> None:
        self._path = path
        self._commits = commits
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hookline-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._txn: asyncio.Task[list[tuple[bool, Any]]] | None = None  # the batch committing
        self._unwritable: str | None = None  # why writes are refused, while they are
        self._unwritable_since = 0.0
        self._recovering_since: float | None = None  # writes succeed again since then
        self._refused = 0  # writes refused since the store became unwritable
        self._last_refused_at = 0.0
        self.wrote_at: float | None = None  # monotonic time of the last commit that wrote rows
        self._opened = False  # start() ran: a dropped connection may be opened again

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._open)
        self._opened = True

    def _open(self) -> sqlite3.Connection:
        conn = connect(self._path, readonly=False)
        _enable_wal(conn)
        # Checkpoints run on their own connection (SqliteStore._checkpoints): done inside COMMIT
        # they stalled every write queued behind that commit for tens of milliseconds.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA busy_timeout = 0")  # lock waits are _begin's, on the event loop
        # The writer is the connection that restarts the WAL, so the limit must be set here.
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        return conn

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        bulk: bool = False,
        operation: str | None = None,
        items: int | None = 1,
    ) -> T:
        """Run ``fn`` in the next transaction; ``bulk`` for a statement that may touch many rows.

        ``operation`` names it for the commit metrics, with the ``items`` it writes (None: the
        length of its result); a transaction counts once for each operation it carried.

        A bulk operation (recover, deleting an application, purging) runs on the writer thread
        rather than the event loop: one long statement step there holds the loop for its whole
        duration, while on the thread it runs with the GIL released.

        Raises ``errors.Unavailable`` when the store cannot write now: at once when
        ``MAX_QUEUED_WRITES`` are already waiting, else when the transaction could not commit.
        """
        if len(self._queue) >= MAX_QUEUED_WRITES:
            self._refuse(QUEUE_FULL, None)
            raise _unavailable(QUEUE_FULL)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.append((_Op(fn, bulk, operation, items), fut))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
            self._flusher.add_done_callback(self._flusher_done)
        # A cancelled caller cancels only its own future: the batch goes on, and _flush skips
        # answering a future that is already done.
        return await fut

    async def _flush(self) -> None:
        """Commit batches until the queue is empty; a cancellation waits for that too.

        The transaction runs as a task of its own that the flusher waits for, and a cancelled
        flusher goes on waiting: once COMMIT is on the writer thread it cannot be stopped, and
        only its result tells whether the callers' writes are durable. Answering them
        "failed" while it commits would invite a retry that duplicates the write.
        """
        loop = asyncio.get_running_loop()
        cancelled = False
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                txn = self._txn = loop.create_task(self._transaction(loop, [op for op, _ in batch]))
                while not txn.done():
                    try:
                        await asyncio.wait([txn])
                    except asyncio.CancelledError:
                        cancelled = True
                self._answer(batch, txn)
        finally:
            self._flusher = None
        if cancelled:
            raise asyncio.CancelledError

    def _answer(
        self,
        batch: list[tuple[_Op, asyncio.Future[Any]]],
        txn: asyncio.Task[list[tuple[bool, Any]]],
    ) -> None:
        """Answer every caller of ``batch`` that is still waiting, whatever ended ``txn``."""
        if txn.cancelled():
            outcomes = self._failed([op for op, _ in batch], _Interrupted(), committing=False)
        elif (exc := txn.exception()) is not None:  # a bug: must not leave callers waiting
            log.error("sqlite_batch_failed", writes=len(batch), exc_info=exc)
            if not isinstance(exc, Exception):
                exc = _Interrupted()
            outcomes = self._failed([op for op, _ in batch], exc, committing=False)
        else:
            outcomes = txn.result()
        for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():  # its caller was cancelled
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _flusher_done(self, task: asyncio.Task[None]) -> None:
        """Answer writes a flusher left queued: one cancelled before it ever ran leaves all."""
        if self._flusher is task:
            self._flusher = None
        if self._queue and self._flusher is None:
            left, self._queue = self._queue, []
            outcomes = self._failed([op for op, _ in left], _Interrupted(), committing=False)
            for (_, fut), (_, exc) in zip(left, outcomes, strict=True):
                if not fut.done():
                    fut.set_exception(exc)

    async def _transaction(
        self, loop: asyncio.AbstractEventLoop, ops: list[_Op]
    ) -> list[tuple[bool, Any]]:
        try:
            conn = await self._connection()
            if conn.in_transaction:  # an earlier transaction was left open: never build on it
                await self._abandon(conn)
                conn = await self._connection()
            changes = conn.total_changes
            started = time.perf_counter()
            await _begin(conn)
        # e.g. another process held the write lock past BUSY_TIMEOUT_MS; the connection could
        # not be opened; a cancellation while _begin waited for the lock (nothing begun then)
        except asyncio.CancelledError:
            return self._failed(ops, _Interrupted(), committing=False)
        except Exception as exc:
            return self._failed(ops, exc, committing=False)
        outcomes: list[tuple[bool, Any]] = []
        try:
            for op in ops:
                if op.bulk:
                    outcomes.append(await self._on_thread(_isolated, conn, op))
                else:
                    outcomes.append(_isolated(conn, op))
        except Exception as exc:  # the disk is full or failing (see _isolated), or the thread
            await self._abandon(conn)
            return self._failed(ops, exc, committing=False)
        try:
            await self._on_thread(conn.execute, "COMMIT")
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            await self._abandon(conn)
            return self._failed(ops, exc, committing=True)
        # Only a commit that wrote rows shows there is room: an empty one (a claim that found
        # nothing due) commits even on a full disk.
        self._committed(wrote=conn.total_changes > changes)
        if self._commits is not None:
            _observe(self._commits, ops, outcomes, time.perf_counter() - started)
        return outcomes

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the writer thread and wait until it has returned, even if cancelled.

        The thread goes on using the connection whatever happens to the awaiting task, so the
        transaction's next step (or the next transaction) must not start before it is done.
        """
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        while True:
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                if fut.cancelled():  # the executor dropped it unrun
                    raise _Interrupted() from None

    async def _connection(self) -> sqlite3.Connection:
        """The write connection, opened again if an earlier failure had to drop it."""
        if self._conn is None:
            if self._opened is False:
                raise RuntimeError("writer used before start()")
            self._conn = await self._on_thread(self._open)
        return self._conn

    async def _abandon(self, conn: sqlite3.Connection) -> None:
        """Roll back what is left of a failed transaction, so that the next one can begin.

        After a full disk or an I/O error SQLite may or may not have rolled back already; a
        failed COMMIT leaves the transaction open. If ROLLBACK fails too, the connection is
        closed (closing rolls back, and releases the write lock another process may be
        waiting for) and a new one opened; if that fails, the next batch tries again. Never
        raises: the batch has failed already, and its callers must be answered.
        """
        try:
            await self._on_thread(_rollback, conn)
            return
        except Exception:
            log.exception("sqlite_rollback_failed")
        self._conn = None
        try:
            await self._on_thread(conn.close)
        except Exception:
            log.exception("sqlite_close_failed")
        try:
            self._conn = await self._on_thread(self._open)
        except Exception:
            log.exception("sqlite_reopen_failed")  # _connection tries again for the next batch
        else:
            log.info("sqlite_writer_reopened")

    def _failed(
        self, ops: list[_Op], exc: Exception, *, committing: bool
    ) -> list[tuple[bool, Any]]:
        """Every operation's outcome when the batch's transaction failed with ``exc``."""
        # Whatever ends a transaction is the store's condition, not the callers' doing (an
        # operation's own error stays inside its SAVEPOINT): every caller is told to retry.
        reason = _unwritable(exc) or ("commit_failed" if committing else WRITE_FAILED)
        self._refuse(reason, exc, count=len(ops))
        outcomes: list[tuple[bool, Any]] = []
        for _ in ops:
            refusal = _unavailable(reason)
            refusal.__cause__ = exc
            outcomes.append((False, refusal))
        return outcomes

    def _refuse(self, reason: str, exc: Exception | None, *, count: int = 1) -> None:
        """Count refused writes; log when the store becomes unwritable, not on every refusal.

        A full queue gives way to a failing store as the reason, not the other way round, so a
        full disk under load does not flip the logged reason with every batch.
        """
        now = time.monotonic()
        self._settle(now)
        self._refused += count
        if reason != QUEUE_FULL:
            self._last_refused_at = now
        self._recovering_since = None
        if self._unwritable is not None and (
            self._unwritable != QUEUE_FULL or reason == QUEUE_FULL
        ):
            return
        if self._unwritable is None:
            self._unwritable_since = now
        self._unwritable = reason
        log.error(
            "store_unwritable",
            reason=reason,
            sqlite_error=getattr(exc, "sqlite_errorname", None),
            error=None if exc is None else str(exc),
        )

    def _committed(self, *, wrote: bool) -> None:
        if wrote:
            self.wrote_at = time.monotonic()
        # The queue only grows while a transaction runs, so if it filled up again meanwhile,
        # writes are still being refused: the queue_full episode goes on.
        if (
            self._unwritable is None
            or not wrote
            or (self._unwritable == QUEUE_FULL and len(self._queue) >= MAX_QUEUED_WRITES)
        ):
            return
        now = time.monotonic()
        if self._recovering_since is None:
            self._recovering_since = now
        self._settle(now)

    def _settle(self, now: float) -> None:
        """Log the recovery once writes have succeeded for ``RECOVERED_AFTER_SECONDS``."""
        since = self._recovering_since
        if self._unwritable is None or since is None or now - since < RECOVERED_AFTER_SECONDS:
            return
        log.info(
            "store_writable",
            was=self._unwritable,
            refused=self._refused,
            unwritable_seconds=round(since - self._unwritable_since, 1),
        )
        self._unwritable = None
        self._recovering_since = None
        self._refused = 0

    def check_writable(self) -> None:
        """Raise ``errors.Unavailable`` while writes are being refused; never writes itself.

        Reports the episode that ``store_unwritable`` logged, until ``store_writable`` would
        be, or until ``REFUSALS_SHOWN_SECONDS`` passed without a refused write. A full queue
        is not reported: that is load, which the refused requests already answer with 503,
        and a failing health check under load would take a busy but healthy instance away.
        """
        now = time.monotonic()
        self._settle(now)
        reason = self._unwritable
        if reason is None or now - self._last_refused_at > REFUSALS_SHOWN_SECONDS:
            return
        if reason == QUEUE_FULL:
            return
        retry_after, _ = _REFUSALS[reason]
        raise errors.Unavailable(f"database cannot write: {reason}", retry_after=retry_after)

    async def close(self) -> None:
        while (flusher := self._flusher) is not None:
            await asyncio.wait([flusher])  # finish what callers are waiting on before closing
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


def check_room(directory: Path) -> None:
    """Raise ``errors.Unavailable`` unless the filesystem of ``directory`` has room for writes.

    SQLite cannot tell: a commit goes into space its WAL file already holds, so rewriting one
    row succeeds for ever on a full disk, while new rows need the files to grow. This asks the
    filesystem for ``ROOM_PROBE_BYTES`` in a file of its own, as this process (quotas and the
    root reserve count as they do for the database). Blocking: call it on a thread.
    """
    try:
        fd = _probe_file(directory)
        try:
            try:
                os.posix_fallocate(fd, 0, ROOM_PROBE_BYTES)
            except (AttributeError, OSError) as exc:  # not on macOS; not on every filesystem
                if isinstance(exc, OSError) and exc.errno not in _NO_FALLOCATE:
                    raise
                os.write(fd, bytes(ROOM_PROBE_BYTES))  # allocates (or reserves) as it writes
        finally:
            os.close(fd)
    except OSError as exc:
        reason = _NO_ROOM.get(exc.errno or 0, "io_error")
        retry_after, _ = _REFUSALS[reason]
        raise errors.Unavailable(
            f"database cannot write: {reason}", retry_after=retry_after
        ) from exc


def _probe_file(directory: Path) -> int:
    """A new file in ``directory``, unnamed where the system allows (nothing left behind)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, tmpfile | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:
                raise
    path = directory / f".hookline-room-probe-{os.getpid()}"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    os.unlink(path)  # the space stays allocated until the descriptor closes
    return fd


def _observe(
    commits: observer.Commits, ops: list[_Op], outcomes: list[tuple[bool, Any]], seconds: float
) -> None:
    """Report one committed transaction once per operation it carried, with what succeeded."""
    written: dict[str, int] = {}
    for op, (ok, result) in zip(ops, outcomes, strict=True):
        if op.operation is None:
            continue
        items = 0 if not ok else (len(result) if op.items is None else op.items)
        written[op.operation] = written.get(op.operation, 0) + items
    for operation, items in written.items():
        commits.committed(operation, seconds, items)


class _Interrupted(Exception):
    """The batch's transaction was cancelled before it could run."""

    def __str__(self) -> str:
        return "the write was interrupted before it ran"


def _unavailable(reason: str) -> errors.Unavailable:
    retry_after, detail = _REFUSALS[reason]
    return errors.Unavailable(detail, retry_after=retry_after)


class Checkpointer:
    """Copies the WAL back into the database file on a connection and thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checkpoint_thread = ThreadPoolExecutor(1, thread_name_prefix="hookline-sqlite-ckpt")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the last tick failed (logged once per episode)
        self._truncate_deferred = False  # the last TRUNCATE gave up (logged once per episode)

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
        """Copy the WAL back into the database every second, beside the writer, not in it."""
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            await self.tick()

    async def tick(self) -> None:
        """One checkpoint: PASSIVE, then TRUNCATE if the WAL is past ``WAL_TRUNCATE_BYTES``.

        PASSIVE never waits for readers or the writer; it copies what it can, but under
        continuous writes it never catches up, and the WAL restarts only once it has. TRUNCATE
        blocks writers until it has copied the rest and readers have moved on, then empties the
        file; running it after the PASSIVE leaves it only the frames of the last second to copy.
        It gives up after ``CHECKPOINT_BUSY_TIMEOUT_MS`` and is tried again on the next tick.
        A failure is logged once and retried on the next tick: the WAL only grows meanwhile.
        """
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._checkpoint_thread, self._checkpoint, "PASSIVE")
            wal_bytes = self._wal_bytes()
            if wal_bytes > WAL_TRUNCATE_BYTES:
                started = time.monotonic()
                busy = await loop.run_in_executor(
                    self._checkpoint_thread, self._checkpoint, "TRUNCATE"
                )
                if busy:
                    if not self._truncate_deferred:
                        log.warning("sqlite_wal_truncate_deferred", wal_bytes=wal_bytes)
                    self._truncate_deferred = True
                else:
                    log.info(
                        "sqlite_wal_restarted",
                        wal_bytes=wal_bytes,
                        took_ms=round((time.monotonic() - started) * 1000, 1),
                    )
                    self._truncate_deferred = False
        except sqlite3.Error:
            if not self._failing:
                log.exception("sqlite_checkpoint_failed")
            self._failing = True
            return
        if self._failing:
            log.info("sqlite_checkpoint_recovered")
            self._failing = False

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:  # none yet; anything else must not end the checkpoint task
            return 0

    def _checkpoint(self, mode: str) -> bool:
        """Run one checkpoint; True if it could not finish (another connection was busy)."""
        if self._checkpoint_conn is None:
            conn = connect(self.path, readonly=False)
            # PASSIVE ignores it; TRUNCATE waits this long for the write lock and for readers.
            conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")
            self._checkpoint_conn = conn
        busy, _, _ = self._checkpoint_conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return bool(busy)
