"""The SQLite writer when its own machinery fails: every caller is answered, no lock is left held.

Faults are injected where SQLite and the event loop meet (BEGIN, the writer thread, ROLLBACK,
cancellation of the flusher). Each test checks what a client would notice: its write returns
(a result or ``errors.Unavailable``, never a hang), and the next write works.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.support.stores import opened_sqlite

from hookline import errors
from hookline.store import sqlite_writer
from hookline.store.sqlite import SqliteStore

ANSWER_SECONDS = 5.0  # every caller must be answered within this long


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hookline.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_sqlite(path, close_within=ANSWER_SECONDS) as backend:
        yield backend


def _orgs(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM orgs"))


def _lock_is_free(path: Path) -> bool:
    """Another process could take the write lock now (no transaction was left open)."""
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def _writes(store: SqliteStore, *names: str) -> list[Any]:
    """Write one org per name in one batch; each caller's result or exception."""
    return await asyncio.wait_for(
        asyncio.gather(
            *(store.ensure_org(name, time.time()) for name in names), return_exceptions=True
        ),
        ANSWER_SECONDS,
    )


def _on_the_writer_thread(
    store: SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
    fault: Callable[[Any, tuple[Any, ...]], Any],
) -> None:
    """Route the writer thread's calls through ``fault(fn, args)``, which may raise or delay."""
    executor = store._writer._executor
    submit = executor.submit

    def faulty(fn: Any, /, *args: Any) -> Any:
        return submit(lambda: fault(fn, args))

    monkeypatch.setattr(executor, "submit", faulty)


async def test_a_failing_begin_answers_every_caller_and_the_next_write_works(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    begin = sqlite_writer._begin
    calls = 0

    async def broken_once(conn: sqlite3.Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.ProgrammingError("cannot operate on a closed database")
        await begin(conn)

    monkeypatch.setattr(sqlite_writer, "_begin", broken_once)
    first, second = await _writes(store, "acme", "globex")
    for refused in (first, second):
        assert isinstance(refused, errors.Unavailable), refused  # a 503, not a 500
        assert refused.headers() == {"Retry-After": "1"}
    await store.ensure_org("initech", time.time())
    assert _orgs(path) == ["initech"]


async def test_a_failing_writer_thread_at_commit_answers_every_caller(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = threading.Event()

    def fault(fn: Any, args: tuple[Any, ...]) -> Any:
        if args == ("COMMIT",) and not failed.is_set():
            failed.set()
            raise RuntimeError("cannot schedule new futures after shutdown")
        return fn(*args)

    _on_the_writer_thread(store, monkeypatch, fault)
    results = await _writes(store, "acme", "globex")
    assert all(isinstance(r, errors.Unavailable) for r in results), results
    assert _lock_is_free(path)  # the open transaction was rolled back
    await store.ensure_org("initech", time.time())
    assert _orgs(path) == ["initech"]


async def test_a_failing_rollback_reopens_the_connection_so_no_transaction_holds_the_lock(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tables(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        c.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")

    await store._writer.run(tables)

    def orphan(c: sqlite3.Connection) -> None:
        # checked only by COMMIT, which then fails and leaves the transaction open
        c.execute("PRAGMA defer_foreign_keys = ON")
        c.execute("INSERT INTO child VALUES (42)")

    def rollback_fails(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_writer, "_rollback", rollback_fails)
    with capture_logs() as logs:
        neighbour, culprit = await asyncio.wait_for(
            asyncio.gather(
                store.ensure_org("acme", time.time()),
                store._writer.run(orphan),
                return_exceptions=True,
            ),
            ANSWER_SECONDS,
        )
        assert isinstance(neighbour, errors.Unavailable), neighbour
        assert isinstance(culprit, errors.Unavailable), culprit
        # the broken transaction went with its connection: another process can write now
        assert _lock_is_free(path)
        await store.ensure_org("globex", time.time())

    assert _orgs(path) == ["globex"]
    events = [e["event"] for e in logs]
    assert "sqlite_rollback_failed" in events
    assert "sqlite_writer_reopened" in events


async def test_a_flusher_cancelled_during_commit_still_answers_with_the_commit_s_outcome(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committing = threading.Event()

    def slow_commit(fn: Any, args: tuple[Any, ...]) -> Any:
        if args == ("COMMIT",):
            committing.set()
            time.sleep(0.2)
        return fn(*args)

    _on_the_writer_thread(store, monkeypatch, slow_commit)
    writes = asyncio.gather(
        store.ensure_org("acme", time.time()), store.ensure_org("globex", time.time())
    )
    while not committing.is_set():
        await asyncio.sleep(0.005)
    flusher = store._writer._flusher
    assert flusher is not None
    flusher.cancel()
    # a write queued while the cancelled flusher finishes is taken too, not left waiting
    later = asyncio.ensure_future(store.ensure_org("initech", time.time()))

    # the commit went through, so the callers are told so: answering "failed" would invite a
    # retry that writes the same thing twice
    orgs = await asyncio.wait_for(writes, ANSWER_SECONDS)
    assert [o.name for o in orgs] == ["acme", "globex"]
    assert (await asyncio.wait_for(later, ANSWER_SECONDS)).name == "initech"
    await asyncio.wait([flusher])
    assert flusher.cancelled()
    assert _lock_is_free(path)
    await store.ensure_org("umbrella", time.time())
    assert _orgs(path) == ["acme", "globex", "initech", "umbrella"]


async def test_a_flusher_cancelled_before_it_ran_answers_its_queue(
    store: SqliteStore, path: Path
) -> None:
    write = asyncio.ensure_future(store.ensure_org("acme", time.time()))
    await asyncio.sleep(0)  # the write is queued and its flusher created, not started
    flusher = store._writer._flusher
    assert flusher is not None
    flusher.cancel()
    with pytest.raises(errors.Unavailable):
        await asyncio.wait_for(write, ANSWER_SECONDS)
    assert store._writer._flusher is None
    await store.ensure_org("globex", time.time())
    assert _orgs(path) == ["globex"]


async def test_a_transaction_cancelled_while_waiting_for_the_lock_answers_at_once(
    store: SqliteStore, path: Path
) -> None:
    other = sqlite3.connect(path, isolation_level=None)  # another process holds the lock
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(store.ensure_org("acme", time.time()))
        await asyncio.sleep(0.05)  # waiting in _begin
        txn = store._writer._txn
        assert txn is not None and not txn.done()
        started = time.monotonic()
        txn.cancel()  # e.g. the loop cancelling every task at shutdown
        with pytest.raises(errors.Unavailable):
            await asyncio.wait_for(write, ANSWER_SECONDS)
        assert time.monotonic() - started < 1.0  # not after the 10 s lock wait
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.ensure_org("globex", time.time())
    assert _orgs(path) == ["globex"]


async def test_close_waits_for_a_cancelled_flusher_instead_of_raising(
    store: SqliteStore, path: Path
) -> None:
    write = asyncio.ensure_future(store.ensure_org("acme", time.time()))
    await asyncio.sleep(0.001)
    if (flusher := store._writer._flusher) is not None:
        flusher.cancel()
    await asyncio.wait_for(store._writer.close(), ANSWER_SECONDS)
    done, _ = await asyncio.wait([write], timeout=ANSWER_SECONDS)
    assert done  # answered, one way or the other
