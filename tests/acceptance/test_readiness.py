"""``/health/ready`` of a real ``hookline serve`` on PostgreSQL, as an orchestrator sees it.

- The database stops (``pg_ctl stop -m fast`` on a cluster of this test's own): within a few
  seconds the probe answers 503 naming ``store``, never hangs, and ``/health/live`` stays 200;
  once the database is back it answers 200 again without a restart.
- The worker loop is wedged: a session holds ``LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE``
  (what ``VACUUM FULL`` or a long ``ALTER TABLE`` take), so the worker's next store call waits
  with no timeout. The API still answers, and once the heartbeat is older than
  ``READY_MAX_WORKER_STALL`` (shortened to ``STALL_SECONDS`` here) the probe names ``worker``;
  releasing the lock makes it ready again.

The full disk (``writable``) is in ``test_disk_full.py``, on its tmpfs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from hookline.api import health
from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.server import HooklineServer

UNREADY_WITHIN_SECONDS = 5.0  # a stopped database is noticed at the next probe
READY_AGAIN_WITHIN_SECONDS = 20.0  # reconnecting, then a write probe (reused up to 5 s)
POLL_SECONDS = 0.25
# the heartbeat goes stale after STALL_SECONDS (the setting, 30 s by default, shortened so that
# the test waits less; still above the worker's 1 s longest idle wait); this much slack for the
# probe to see it
STALL_SECONDS = 6.0
STALE_SLACK_SECONDS = 10.0


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster for this test alone (it is stopped); skips without one, fails under CI."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def _ready(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    response = client.get("/health/ready")
    # every check is bounded: the probe answers within the timeout, whatever the database does
    assert time.monotonic() - started < health.CHECK_TIMEOUT_SECONDS + 1.0
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _until(
    client: httpx.Client,
    server: HooklineServer,
    wanted: Callable[[int, dict[str, Any]], bool],
    within: float,
    what: str,
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        status, body = _ready(client)
        if wanted(status, body):
            return body
        assert time.monotonic() < deadline, f"{what}: {status} {body}\n{server.output_tail()}"
        time.sleep(POLL_SECONDS)


def _ready_again(status: int, _: dict[str, Any]) -> bool:
    return status == 200


def test_ready_names_the_store_while_postgres_is_down_and_recovers_on_its_own(
    tmp_path: Path, own_cluster: PostgresCluster
) -> None:
    env = {"HOOKLINE_DATABASE_URL": own_cluster.url(own_cluster.create_database("ready"))}
    server = HooklineServer(tmp_path / "hl", env=env).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            body = _until(client, server, _ready_again, READY_AGAIN_WITHIN_SECONDS, "not ready")
            assert list(body["checks"]) == ["store", "writable", "worker", "backlog"], body

            own_cluster.shut_down()
            body = _until(
                client,
                server,
                lambda status, b: status == 503 and "store" in b["failed"],
                UNREADY_WITHIN_SECONDS,
                "store not named while PostgreSQL is down",
            )
            assert body["checks"]["store"]["detail"], body
            assert client.get("/health/live").status_code == 200  # alive: no restart wanted

            own_cluster.start_again()
            _until(
                client,
                server,
                _ready_again,
                READY_AGAIN_WITHIN_SECONDS,
                "not ready again after PostgreSQL came back",
            )
        server.assert_running()
    finally:
        server.kill()


class _TableLock:
    """``LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE`` held by a session of its own."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._locked = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(),), daemon=True)

    async def _hold(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        conn = await asyncpg.connect(self._url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                await self._release.wait()
        finally:
            await conn.close()

    def __enter__(self) -> _TableLock:
        self._thread.start()
        assert self._locked.wait(10.0), "could not take the table lock"
        return self

    def release(self) -> None:
        if not self._thread.is_alive():
            return
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(10.0)

    def __exit__(self, *_: object) -> None:
        self.release()


def test_ready_names_the_worker_while_its_loop_is_stuck_behind_a_table_lock(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {
        "HOOKLINE_DATABASE_URL": postgres_url,
        "HOOKLINE_READY_MAX_WORKER_STALL": f"{STALL_SECONDS:g}",
    }
    server = HooklineServer(tmp_path / "hl", env=env).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            _until(client, server, _ready_again, READY_AGAIN_WITHIN_SECONDS, "not ready")
            with _TableLock(postgres_url) as lock:
                locked_at = time.monotonic()
                body = _until(
                    client,
                    server,
                    lambda status, b: status == 503 and "worker" in b["failed"],
                    STALL_SECONDS + STALE_SLACK_SECONDS,
                    "worker not named while its loop is stuck",
                )
                # not before the heartbeat was stale: waiting 2 s is no reason to be unready
                assert time.monotonic() - locked_at >= STALL_SECONDS - 1.0
                assert "has not gone round" in body["checks"]["worker"]["detail"], body
                assert body["checks"]["store"]["ok"], body  # the database itself answers
                assert client.get("/health/live").status_code == 200
                lock.release()
                _until(
                    client,
                    server,
                    _ready_again,
                    READY_AGAIN_WITHIN_SECONDS,
                    "not ready again after the lock was released",
                )
        server.assert_running()
        assert server.output().count('"health_unready"') >= 1
    finally:
        server.kill()
