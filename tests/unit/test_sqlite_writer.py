"""The SQLite writer when the store cannot write, and the checkpoint policy that bounds the WAL.

These run a real ``SqliteStore`` on a file in ``tmp_path`` (fast, but not free of I/O): what
they check is how SQLite's own failures come out of the store, which a fake could not show.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from tests.support.stores import opened_sqlite

from hookline import errors, ids
from hookline.models import Application, Message
from hookline.store import sqlite_writer
from hookline.store.sqlite import SqliteStore

KIB = 1024
ROOMY_PAGES = 1_073_741_823  # SQLite's default max_page_count


@pytest.fixture(autouse=True)
def prompt_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log ``store_writable`` at the first successful write (the hysteresis has its own test)."""
    monkeypatch.setattr(sqlite_writer, "RECOVERED_AFTER_SECONDS", 0.0)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hookline.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_sqlite(path) as backend:
        yield backend


def _store_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in ("store_unwritable", "store_writable")]


def _orgs(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(name for (name,) in conn.execute("SELECT name FROM orgs"))


async def _app(store: SqliteStore) -> Application:
    org = await store.ensure_org("acme", time.time())
    now = time.time()
    app = Application(
        id=ids.new(ids.APP), org_id=org.id, name="app", created_at=now, updated_at=now
    )
    await store.create_app(app)
    return app


def _message(app: Application, payload_bytes: int) -> Message:
    payload = b'{"pad":"' + b"x" * payload_bytes + b'"}'
    return Message(
        id=ids.new(ids.MESSAGE),
        app_id=app.id,
        event_type="invoice.paid",
        payload=payload,
        created_at=time.time(),
    )


async def _limit_pages(store: SqliteStore, pages: int | None = None) -> None:
    """Let the database grow by no more pages (the default), or to ``pages``.

    max_page_count makes SQLite answer SQLITE_FULL ("database or disk is full") as soon as a
    statement needs a page beyond it, the way a full disk does.
    """

    def limit(c: sqlite3.Connection) -> None:
        count = c.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        c.execute(f"PRAGMA max_page_count = {count}")

    await store._writer.run(limit)


async def test_writes_beyond_the_queue_bound_are_refused_at_once(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "MAX_QUEUED_WRITES", 3)
    other = sqlite3.connect(path, isolation_level=None)  # stands in for another process
    try:
        other.execute("BEGIN IMMEDIATE")  # the writer's next transaction waits for this lock
        with capture_logs() as logs:
            first = asyncio.create_task(store.ensure_org("org-0", time.time()))
            await asyncio.sleep(0.02)  # taken as a batch of one, now waiting for the lock
            queued = [
                asyncio.create_task(store.ensure_org(f"org-{i}", time.time())) for i in (1, 2, 3)
            ]
            await asyncio.sleep(0)  # each task queues its write

            started = time.monotonic()
            with pytest.raises(errors.Unavailable) as refused:
                await store.ensure_org("org-4", time.time())
            assert time.monotonic() - started < 0.1  # at once, not after the lock wait
            with pytest.raises(errors.Unavailable):
                await store.ensure_org("org-5", time.time())
            assert refused.value.status == 503
            assert refused.value.headers() == {"Retry-After": "1"}
            assert refused.value.body()["code"] == "unavailable"

            other.execute("COMMIT")
            done = await asyncio.wait_for(asyncio.gather(first, *queued), 5)
            assert [org.name for org in done] == ["org-0", "org-1", "org-2", "org-3"]
            await store.ensure_org("org-6", time.time())

        assert _orgs(path) == ["org-0", "org-1", "org-2", "org-3", "org-6"]
        # one line when the refusals start and one when they end, not one per refusal
        events = _store_events(logs)
        assert [e["event"] for e in events] == ["store_unwritable", "store_writable"]
        assert events[0]["reason"] == "queue_full"
        assert events[1]["refused"] == 2
    finally:
        other.close()


async def test_a_failing_commit_fails_every_write_in_its_batch_as_unavailable(
    store: SqliteStore, path: Path
) -> None:
    def tables(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        c.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")

    await store._writer.run(tables)

    def orphan(c: sqlite3.Connection) -> None:
        # A deferred foreign key is checked only by COMMIT, which then refuses the transaction
        # and leaves it open: a real failing COMMIT without a full disk.
        c.execute("PRAGMA defer_foreign_keys = ON")
        c.execute("INSERT INTO child VALUES (42)")

    with capture_logs() as logs:
        # queued together, so both run in one transaction
        neighbour, culprit = await asyncio.gather(
            store.ensure_org("acme", time.time()),
            store._writer.run(orphan),
            return_exceptions=True,
        )
        assert isinstance(neighbour, errors.Unavailable), neighbour
        assert isinstance(culprit, errors.Unavailable), culprit
        assert isinstance(neighbour.__cause__, sqlite3.IntegrityError)

        # nothing of that batch was committed, and the connection is usable again
        await store.ensure_org("globex", time.time())

    assert _orgs(path) == ["globex"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
    events = _store_events(logs)
    assert [e["event"] for e in events] == ["store_unwritable", "store_writable"]
    assert events[0]["reason"] == "commit_failed"


async def test_a_full_database_refuses_writes_until_there_is_room_again(
    store: SqliteStore, path: Path
) -> None:
    app = await _app(store)
    await _limit_pages(store)
    big = _message(app, 64 * KIB)

    with capture_logs() as logs:
        for _ in range(3):  # each attempt is refused; the store logs the episode once
            small, large = await asyncio.gather(
                store.ensure_org("globex", time.time()),
                store.create_message(big),
                return_exceptions=True,
            )
            # the whole batch is refused, also the write that would have fitted
            assert isinstance(large, errors.Unavailable), large
            assert isinstance(small, errors.Unavailable), small
            assert large.headers() == {"Retry-After": "5"}
            assert "disk is full" in large.detail
        assert await store.get_message(app.id, big.id) is None

        # room again (space returned): the same writes succeed on the same connection
        await _limit_pages(store, ROOMY_PAGES)
        assert await store.create_message(big) == 0
        await store.ensure_org("globex", time.time())

    stored = await store.get_message(app.id, big.id)
    assert stored is not None and stored.payload == big.payload
    assert _orgs(path) == ["acme", "globex"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    events = _store_events(logs)
    assert [e["event"] for e in events] == ["store_unwritable", "store_writable"]
    assert events[0]["reason"] == "disk_full"
    assert events[0]["sqlite_error"] == "SQLITE_FULL"
    assert events[1]["refused"] == 6


async def test_writes_that_get_through_between_refusals_do_not_end_the_episode(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "RECOVERED_AFTER_SECONDS", 0.3)
    app = await _app(store)
    big = 64 * KIB
    with capture_logs() as logs:
        for _ in range(3):  # a full disk where now and then a write fits
            await _limit_pages(store)
            with pytest.raises(errors.Unavailable):
                await store.create_message(_message(app, big))
            await _limit_pages(store, ROOMY_PAGES)
            await store.create_message(_message(app, big))
        assert [e["event"] for e in _store_events(logs)] == ["store_unwritable"]

        await asyncio.sleep(0.3)  # writes keep succeeding: now the store has recovered
        await store.create_message(_message(app, 16))
    events = _store_events(logs)
    assert [e["event"] for e in events] == ["store_unwritable", "store_writable"]
    assert events[1]["refused"] == 3


async def _fill_wal(store: SqliteStore, app: Application, nbytes: int) -> None:
    for _ in range(nbytes // (16 * KIB)):
        await store.create_message(_message(app, 16 * KIB))


def _wal_bytes(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


async def test_a_wal_past_the_threshold_is_truncated_by_the_next_checkpoint(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store._checkpointer.stop_ticking()  # this test ticks by hand
    monkeypatch.setattr(sqlite_writer, "WAL_TRUNCATE_BYTES", 512 * KIB)
    app = await _app(store)
    await _fill_wal(store, app, 1024 * KIB)
    before = _wal_bytes(path)
    assert before > 512 * KIB

    with capture_logs() as logs:
        await store._checkpointer.tick()

    assert _wal_bytes(path) == 0
    restarted = [e for e in logs if e["event"] == "sqlite_wal_restarted"]
    assert len(restarted) == 1 and restarted[0]["wal_bytes"] == before
    # everything written is in the database file now, and writing goes on
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (64,)
    await store.create_message(_message(app, 16))


async def test_a_wal_below_the_threshold_is_only_checkpointed_passively(
    store: SqliteStore, path: Path
) -> None:
    await store._checkpointer.stop_ticking()
    app = await _app(store)
    await _fill_wal(store, app, 1024 * KIB)
    before = _wal_bytes(path)

    with capture_logs() as logs:
        await store._checkpointer.tick()

    # PASSIVE copies the frames back but leaves the file (and the writers) alone
    assert _wal_bytes(path) == before
    assert not [e for e in logs if e["event"].startswith("sqlite_wal")]


async def test_a_reader_holding_a_snapshot_defers_the_truncate_until_it_ends(
    store: SqliteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store._checkpointer.stop_ticking()
    monkeypatch.setattr(sqlite_writer, "WAL_TRUNCATE_BYTES", 512 * KIB)
    app = await _app(store)
    reader = sqlite3.connect(path, isolation_level=None)  # e.g. another process's long read
    try:
        await _fill_wal(store, app, 1024 * KIB)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot
        await _fill_wal(store, app, 64 * KIB)  # a frame the reader's snapshot does not see
        with capture_logs() as logs:
            started = time.monotonic()
            await store._checkpointer.tick()
            await store._checkpointer.tick()
            # the truncate gives up after its short busy timeout instead of stalling writes
            assert time.monotonic() - started < 2.0
            assert _wal_bytes(path) > 512 * KIB
            reader.execute("COMMIT")
            await store._checkpointer.tick()
        assert _wal_bytes(path) == 0
        events = [e["event"] for e in logs if e["event"].startswith("sqlite_wal")]
        assert events == ["sqlite_wal_truncate_deferred", "sqlite_wal_restarted"]
    finally:
        reader.close()


async def test_opening_a_new_database_waits_for_another_process_switching_it_to_wal(
    path: Path,
) -> None:
    """Two processes started together on a new file: one converts it while the other tries.

    The other connection's switch to WAL reads the header and then needs the write lock, which
    SQLite refuses at once (no busy handler on an upgrade from a read); the store waits instead.
    """
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x)")  # a database in rollback mode, as the other one sees it
    other.execute("BEGIN IMMEDIATE")  # the other process, mid-conversion, holds the write lock
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # what SQLite does alone
        probe = sqlite3.connect(path, isolation_level=None)
        probe.execute("PRAGMA busy_timeout = 5000")
        try:
            probe.execute("PRAGMA journal_mode = WAL")
        finally:
            probe.close()
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, other.rollback)
    try:
        async with opened_sqlite(path) as store:
            await _app(store)  # open and migrated: it writes
        with contextlib.closing(sqlite3.connect(path)) as check:
            mode = check.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        other.close()
    assert mode == "wal"
