"""Backups of a running hookline and restores from them, as docs/operations.md describes them.

- SQLite: while ``hookline serve`` accepts messages, the test copies its database with Python's
  ``sqlite3`` backup API, or with ``VACUUM INTO``, from a connection of its own. The copy is one
  file. Restored into a fresh directory and started, it holds every message acknowledged (202)
  before the backup began and nothing that was not acknowledged, it completes the deliveries
  the copy had pending, and it takes new messages.
- PostgreSQL: the same with ``pg_dump --format=custom`` of the running database and
  ``pg_restore`` into a fresh one.
- Rollback: a database that a newer release migrated (one more column, one more table, a higher
  schema version) still opens with this release, which leaves the version as it found it.

Ingest runs on threads for the whole backup, and every answer during it must be a 202: a backup
does not block writers.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import postgres
from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

INGEST_THREADS = 4
WARM_UP_MESSAGES = 200  # acknowledged before the backup starts, at least
AFTER_BACKUP_SECONDS = 0.5  # ingest goes on this long after the backup is done
DELIVERY_TIMEOUT_SECONDS = 30.0  # a delivery the copy holds as sending waits out its lease
DUMP_TIMEOUT_SECONDS = 60.0
FAST = {
    "HOOKLINE_REQUEST_TIMEOUT": "1",  # lease 11 s: what the copy holds as sending comes back then
    "HOOKLINE_LOG_LEVEL": "info",
}
PENDING, SENDING = 1, 3  # delivery statuses (Svix's)


@dataclass
class Ingest:
    """Messages posted on threads until stopped: (time acknowledged, message id) per 202."""

    server: HooklineServer
    app_id: str
    acked: list[tuple[float, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Ingest:
        for n in range(INGEST_THREADS):
            thread = threading.Thread(target=self._post, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30.0)
        assert not any(t.is_alive() for t in self._threads), "ingest threads did not stop"

    def _post(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.server.token}"}
        with httpx.Client(base_url=self.server.base_url, headers=headers, timeout=10.0) as client:
            seq = 0
            while not self._stop.is_set():
                body = {"eventType": "backup.test", "payload": {"thread": n, "seq": seq}}
                try:
                    answer = client.post(f"/api/v1/app/{self.app_id}/msg", json=body)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.refused.append(f"{type(exc).__name__}: {exc}")
                    continue
                at = time.monotonic()
                with self._lock:
                    if answer.status_code == 202:
                        self.acked.append((at, answer.json()["id"]))
                    else:
                        self.refused.append(f"{answer.status_code} {answer.text}")
                seq += 1

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            self.server.assert_running()
            assert time.monotonic() < deadline, f"only {self.count()} messages acknowledged"
            time.sleep(0.02)

    def acked_before(self, moment: float) -> set[str]:
        with self._lock:
            return {msg_id for at, msg_id in self.acked if at < moment}

    def all_acked(self) -> set[str]:
        with self._lock:
            return {msg_id for _, msg_id in self.acked}


def _setup(server: HooklineServer, url: str) -> str:
    """An application with one endpoint at ``url``; returns the application's id."""
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        app = client.post("/api/v1/app", json={"name": "backup", "uid": "backup"})
        assert app.status_code == 201, app.text
        app_id: str = app.json()["id"]
        endpoint = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": url})
        assert endpoint.status_code == 201, endpoint.text
    return app_id


def _message_ids(server: HooklineServer, app_id: str) -> set[str]:
    """Every message of the application, read page by page through the API."""
    ids: set[str] = set()
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        params: dict[str, str | int] = {"limit": 250}
        while True:
            page = client.get(f"/api/v1/app/{app_id}/msg", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            ids.update(m["id"] for m in body["data"])
            if body["done"]:
                return ids
            params["iterator"] = body["iterator"]


def _post_one(server: HooklineServer, app_id: str) -> str:
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        body = {"eventType": "backup.test", "payload": {"after": "restore"}}
        answer = client.post(f"/api/v1/app/{app_id}/msg", json=body)
        assert answer.status_code == 202, answer.text
        msg_id: str = answer.json()["id"]
        return msg_id


def _wait_delivered(receiver: Receiver, path: str, ids: set[str], since: float) -> None:
    """Every message in ``ids`` reached the receiver at or after ``since``."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while True:
        got = {r.headers["webhook-id"] for r in receiver.requests(path) if r.at >= since}
        missing = ids - got
        if not missing:
            return
        assert time.monotonic() < deadline, (
            f"{len(missing)} of {len(ids)} not delivered after the restore, e.g. "
            f"{sorted(missing)[:5]}"
        )
        time.sleep(0.1)


def _backup_api(source: Path, target: Path) -> None:
    """sqlite3's online backup API: all pages in one step, so under one read transaction."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        dst.close()
        src.close()


def _vacuum_into(source: Path, target: Path) -> None:
    """``VACUUM INTO``: a compacted copy, written from one read transaction."""
    src = sqlite3.connect(source)
    try:
        src.execute("VACUUM INTO ?", (str(target),))
    finally:
        src.close()


BACKUPS: dict[str, Callable[[Path, Path], None]] = {
    "backup-api": _backup_api,
    "vacuum-into": _vacuum_into,
}


def _pending_in(copy: Path) -> set[str]:
    """Messages the copy holds as not yet delivered (pending or sending)."""
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT msg_id FROM deliveries WHERE status IN (?, ?)", (PENDING, SENDING)
        ).fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


@pytest.mark.parametrize("method", sorted(BACKUPS))
def test_online_sqlite_backup_during_ingest_restores_every_acknowledged_message(
    tmp_path: Path, receiver: Receiver, method: str
) -> None:
    path = receiver.new_path("backup")
    server = HooklineServer(tmp_path / "live", env=FAST)
    restored = HooklineServer(tmp_path / "restored", env=FAST, token=server.token)
    try:
        server.start()
        app_id = _setup(server, receiver.url(path))
        copy = tmp_path / "backup" / "hookline.db"
        copy.parent.mkdir()
        with Ingest(server, app_id) as ingest:
            ingest.wait_for(WARM_UP_MESSAGES)
            began = time.monotonic()
            BACKUPS[method](server.db_path, copy)
            done = time.monotonic()
            count_at_done = ingest.count()
            time.sleep(AFTER_BACKUP_SECONDS)
            ingest.wait_for(count_at_done + 1)  # ingest went on after the backup
        assert not ingest.refused, ingest.refused[:5]
        before = ingest.acked_before(began)
        print(
            f"{method}: {len(before)} messages acknowledged before the backup, "
            f"{len(ingest.all_acked())} in all; the backup took {done - began:.3f} s"
        )
        server.stop()

        # One self-contained, sound file.
        assert not any(copy.with_name(copy.name + s).exists() for s in ("-wal", "-shm"))
        check = sqlite3.connect(copy)
        try:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            check.close()
        pending = _pending_in(copy)

        # Restore: the file into a fresh directory, and hookline started on it.
        shutil.copy2(copy, restored.db_path)
        since = time.monotonic()
        restored.start()
        in_copy = _message_ids(restored, app_id)
        assert before <= in_copy, f"{len(before - in_copy)} acknowledged messages missing"
        assert in_copy <= ingest.all_acked(), "the copy holds messages never acknowledged"
        _wait_delivered(receiver, path, pending, since)
        new = _post_one(restored, app_id)
        _wait_delivered(receiver, path, {new}, since)
        print(f"{method}: {len(pending)} deliveries pending in the copy, sent after the restore")
    finally:
        server.kill()
        restored.kill()


def _pg_program(name: str) -> str:
    """``pg_dump`` or ``pg_restore`` next to the server's binaries, else on PATH."""
    bindir = postgres.find_bindir()
    candidates = [str(bindir / name)] if bindir is not None else []
    found = shutil.which(name)
    if found is not None:
        candidates.append(found)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} is missing: run scripts/test-deps (as root) or apt-get install postgresql"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def restored_postgres_url(
    request: pytest.FixtureRequest, postgres_cluster: postgres.PostgresServer
) -> Iterator[str]:
    """A second fresh database of the session's cluster, to restore into."""
    name = postgres_cluster.create_database(f"restored_{request.node.name}")
    try:
        yield postgres_cluster.url(name)
    finally:
        postgres_cluster.drop_database(name)


def _pg(argv: list[str]) -> None:
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DUMP_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stdout}{result.stderr}"


def test_pg_dump_during_ingest_restores_every_acknowledged_message(
    tmp_path: Path, receiver: Receiver, postgres_url: str, restored_postgres_url: str
) -> None:
    pg_dump, pg_restore = _pg_program("pg_dump"), _pg_program("pg_restore")
    path = receiver.new_path("pgdump")
    server = HooklineServer(tmp_path / "live", env={**FAST, "HOOKLINE_DATABASE_URL": postgres_url})
    restored = HooklineServer(
        tmp_path / "restored",
        env={**FAST, "HOOKLINE_DATABASE_URL": restored_postgres_url},
        token=server.token,
    )
    dump = tmp_path / "hookline.dump"
    try:
        server.start()
        app_id = _setup(server, receiver.url(path))
        with Ingest(server, app_id) as ingest:
            ingest.wait_for(WARM_UP_MESSAGES)
            began = time.monotonic()
            _pg([pg_dump, "--format=custom", f"--file={dump}", postgres_url])
            count_at_done = ingest.count()
            time.sleep(AFTER_BACKUP_SECONDS)
            ingest.wait_for(count_at_done + 1)
        assert not ingest.refused, ingest.refused[:5]
        before = ingest.acked_before(began)
        server.stop()

        _pg(
            [
                pg_restore,
                "--no-owner",
                "--exit-on-error",
                f"--dbname={restored_postgres_url}",
                str(dump),
            ]
        )
        since = time.monotonic()
        restored.start()
        in_copy = _message_ids(restored, app_id)
        assert before <= in_copy, f"{len(before - in_copy)} acknowledged messages missing"
        assert in_copy <= ingest.all_acked(), "the copy holds messages never acknowledged"
        new = _post_one(restored, app_id)
        _wait_delivered(receiver, path, {new}, since)
        print(f"pg_dump: {len(before)} acknowledged before the dump, all restored")
    finally:
        server.kill()
        restored.kill()


def _expand_like_a_newer_release(server: HooklineServer, database_url: str) -> None:
    """What a newer release's expand migration does: add a column and a table, bump the version."""
    if database_url.startswith("postgresql:"):
        postgres._execute(
            database_url,
            "ALTER TABLE messages ADD COLUMN expanded text",
            "CREATE TABLE future_feature (id text PRIMARY KEY)",
            "INSERT INTO hookline_migrations (version, applied_at) VALUES (9999, 0)",
        )
        return
    conn = sqlite3.connect(server.db_path)
    try:
        conn.execute("ALTER TABLE messages ADD COLUMN expanded TEXT")
        conn.execute("CREATE TABLE future_feature (id TEXT PRIMARY KEY)")
        conn.commit()
        conn.execute("PRAGMA user_version = 9999")
    finally:
        conn.close()


def _schema_version(server: HooklineServer, database_url: str) -> int:
    if database_url.startswith("postgresql:"):
        import asyncio

        import asyncpg

        async def read() -> int:
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                version: int = await conn.fetchval("SELECT max(version) FROM hookline_migrations")
                return version
            finally:
                await conn.close()

        return asyncio.run(read())
    conn = sqlite3.connect(server.db_path)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


def test_this_release_opens_a_database_a_newer_release_expanded(
    tmp_path: Path, receiver: Receiver, backend_env: dict[str, str]
) -> None:
    path = receiver.new_path("rollback")
    server = HooklineServer(tmp_path / "hl", env={**FAST, **backend_env})
    database_url = server.environment()["HOOKLINE_DATABASE_URL"]
    try:
        server.start()
        app_id = _setup(server, receiver.url(path))
        old = _post_one(server, app_id)
        receiver.wait_for(path, 1)
        assert server.stop() == 0

        _expand_like_a_newer_release(server, database_url)
        since = time.monotonic()
        server.start()
        assert old in _message_ids(server, app_id)
        new = _post_one(server, app_id)
        _wait_delivered(receiver, path, {new}, since)
        assert server.stop() == 0
        assert _schema_version(server, database_url) == 9999
    finally:
        server.kill()
