"""On a full filesystem writes answer 503 with Retry-After, and succeed again once space returns.

A real ``hookline serve`` keeps its database on a small tmpfs mounted for this test (mounting
needs root: CI runs as root and fails the test if it cannot mount; elsewhere it is skipped). The
server's log stays on the ordinary disk, so only the store runs out of space. Messages are
ingested, the filesystem is filled, ingest goes on and must be refused with 503 (a 202 is allowed
only for a write that really committed, which is checked at the end), the filler is deleted and
ingest must succeed again without a restart. After a graceful stop the database must pass
``PRAGMA integrity_check`` and hold every acknowledged message, and every acknowledged message
must have reached the receiver.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline.api.health import WRITE_PROBE_SECONDS
from hookline.store import sqlite_writer
from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

TMPFS_SIZE = "8m"  # small enough to fill in a moment, big enough for the schema and a WAL
FILLER_CHUNK_BYTES = 64 * 1024
MOUNT_TIMEOUT_SECONDS = 10.0
BEFORE_FULL = 30  # messages acknowledged before the filesystem fills up
REFUSED_IN_A_ROW = 30  # consecutive 503s that show the store is refusing, not just unlucky
FULL_PHASE_SECONDS = 20.0  # at most this long to reach REFUSED_IN_A_ROW
RECOVERY_SECONDS = 10.0  # writes must succeed again within this long after space returns
AFTER_RECOVERY = 20  # messages that must all be acknowledged once writes succeed again
# the writer logs store_writable after RECOVERED_AFTER_SECONDS (5 s) of writes without a refusal
RECOVERED_LOG_SECONDS = 15.0
DELIVERY_TIMEOUT_SECONDS = 30.0
SETTINGS = {"HOOKLINE_LOG_LEVEL": "info"}  # debug logs two lines per delivery attempt


def _mount_tmpfs(where: Path) -> None:
    """Mount the tmpfs, or fail (under CI) or skip (elsewhere) the test when that is impossible."""
    mount = shutil.which("mount")
    problem = "no mount command" if mount is None else None
    if mount is not None:
        result = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=MOUNT_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            problem = result.stderr.strip() or f"mount exited with status {result.returncode}"
    if problem is not None:
        message = f"cannot mount a tmpfs (size={TMPFS_SIZE}) at {where}: {problem}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _unmount(where: Path) -> None:
    result = subprocess.run(
        ["umount", str(where)], capture_output=True, timeout=MOUNT_TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:  # still busy (a process we could not reap): detach it anyway
        subprocess.run(["umount", "-l", str(where)], timeout=MOUNT_TIMEOUT_SECONDS, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on a freshly mounted small tmpfs, unmounted after the test, pass or fail."""
    where = tmp_path / "small-fs"
    where.mkdir()
    _mount_tmpfs(where)
    try:
        yield where
    finally:
        _unmount(where)


@pytest.fixture
def server(tmp_path: Path, small_fs: Path) -> Iterator[HooklineServer]:
    """``hookline serve`` with its database on ``small_fs``; killed before the unmount."""
    env = {**SETTINGS, "HOOKLINE_DATABASE_URL": f"sqlite:///{small_fs / 'hookline.db'}"}
    hl = HooklineServer(tmp_path / "hookline", env=env)
    try:
        yield hl.start()
    finally:
        hl.kill()


def _fill(directory: Path) -> Path:
    """Write a file into ``directory`` until the filesystem has no space left."""
    filler = directory / "filler"
    chunk = b"\0" * FILLER_CHUNK_BYTES
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler


def _post_message(client: httpx.Client, app_id: str, seq: int) -> httpx.Response:
    body = {"eventType": "disk.full", "payload": {"seq": seq}}
    return client.post(f"/api/v1/app/{app_id}/msg", json=body)


def _assert_refused(response: httpx.Response) -> None:
    """A 503 the way a client can act on it: Retry-After and a Svix-shaped JSON body."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1, response.headers
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "detail"}, body
    assert body["code"] == "unavailable", body


def test_a_full_disk_refuses_writes_with_503_and_they_succeed_again_once_space_returns(
    server: HooklineServer, small_fs: Path, receiver: Receiver
) -> None:
    path = receiver.new_path("disk-full")
    headers = {"Authorization": f"Bearer {server.token}"}
    acked: dict[str, int] = {}  # every message id answered 202 -> its seq
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        app = client.post("/api/v1/app", json={"name": "disk-full"})
        assert app.status_code == 201, app.text
        app_id = app.json()["id"]
        endpoint = client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": receiver.url(path)})
        assert endpoint.status_code == 201, endpoint.text

        seq = 0

        def ingest() -> httpx.Response:
            nonlocal seq
            seq += 1
            response = _post_message(client, app_id, seq)
            if response.status_code == 202:
                acked[response.json()["id"]] = seq
            return response

        for _ in range(BEFORE_FULL):
            assert ingest().status_code == 202

        filler = _fill(small_fs)
        # Writes that still fit into space the WAL file already has may commit (and are then
        # acknowledged, checked below); everything else must be refused, never a 500.
        refused = in_a_row = 0
        deadline = time.monotonic() + FULL_PHASE_SECONDS
        while in_a_row < REFUSED_IN_A_ROW:
            assert time.monotonic() < deadline, (
                f"only {in_a_row} writes in a row refused after {FULL_PHASE_SECONDS:g} s "
                f"on a full disk\n{server.output_tail()}"
            )
            response = ingest()
            if response.status_code == 202:
                in_a_row = 0
                continue
            _assert_refused(response)
            refused += 1
            in_a_row += 1
        # every write is refused alike, not only ingest
        _assert_refused(client.post("/api/v1/app", json={"name": "no room"}))
        # the health check says so (reads still work, but a load balancer must know)
        health = client.get("/api/v1/health")
        assert health.status_code == 503, health.text
        assert health.json()["code"] == "unavailable" and "retry-after" in health.headers

        filler.unlink()
        deadline = time.monotonic() + RECOVERY_SECONDS
        while (response := ingest()).status_code != 202:
            _assert_refused(response)
            assert time.monotonic() < deadline, (
                f"writes still refused {RECOVERY_SECONDS:g} s after space returned\n"
                f"{server.output_tail()}"
            )
            time.sleep(0.1)
        recovered_at = seq
        for _ in range(AFTER_RECOVERY):
            assert ingest().status_code == 202
        # once writes have gone on succeeding for a while, the recovery is logged, once
        deadline = time.monotonic() + RECOVERED_LOG_SECONDS
        while '"store_writable"' not in server.output():
            assert time.monotonic() < deadline, f"no store_writable\n{server.output_tail()}"
            assert ingest().status_code == 202
            time.sleep(0.2)
        assert client.get("/api/v1/health").status_code == 204  # healthy again
        server.assert_running()  # no restart was needed
        # the episode is a few log lines, not one per refused request
        episode = [ln for ln in server.output().splitlines() if "store_unwritable" in ln]
        assert len(episode) == 1, episode

    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while missing := set(acked) - {r.headers["webhook-id"] for r in receiver.requests(path)}:
        assert time.monotonic() < deadline, (
            f"{len(missing)} of {len(acked)} acknowledged messages not delivered, "
            f"e.g. {sorted(missing)[:3]}\n{server.output_tail()}"
        )
        time.sleep(0.1)

    assert server.stop() == 0, server.output_tail()
    log = server.output()
    assert "request_failed" not in log  # no request ended in the catch-all 500
    # the store's state changes are logged, not every refused request
    unwritable = log.count('"store_unwritable"')
    assert 1 <= unwritable <= 3, server.output_tail()
    assert log.count('"store_writable"') == unwritable, server.output_tail()

    with sqlite3.connect(small_fs / "hookline.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {msg_id for (msg_id,) in db.execute("SELECT id FROM messages")}
    assert set(acked) <= stored, sorted(set(acked) - stored)[:5]
    # nothing was stored that the API did not acknowledge (a refusal means not written)
    assert stored == set(acked), sorted(stored - set(acked))[:5]
    print(  # visible with -s / -rP
        f"acked={len(acked)} refused={refused} recovered_at_seq={recovered_at} "
        f"store_unwritable_lines={unwritable}"
    )


READY_TIMEOUT_SECONDS = 15.0  # a write probe is reused 5 s; the probe itself takes milliseconds
READY_AGAIN_SECONDS = 30.0  # a refusal the writer saw is reported until writes succeed for 5 s


def _readiness(client: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/health/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


def test_an_idle_server_turns_unready_naming_writable_on_a_full_disk_and_ready_again(
    server: HooklineServer, small_fs: Path
) -> None:
    """No request writes anything meanwhile: only readiness's own probe can notice.

    Messages go in first and the WAL is checkpointed, so the WAL file holds space a small write
    can commit into on the full disk; the probe must not be fooled by that.
    """
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        app_id = client.post("/api/v1/app", json={"name": "idle"}).json()["id"]
        for seq in range(BEFORE_FULL):
            assert _post_message(client, app_id, seq).status_code == 202
        time.sleep(2 * sqlite_writer.CHECKPOINT_SECONDS + WRITE_PROBE_SECONDS)  # then idle
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while (ready := _readiness(client))[0] != 200:
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert ready[1]["checks"]["writable"]["ok"], ready

        filler = _fill(small_fs)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while (ready := _readiness(client))[0] != 503:
            assert time.monotonic() < deadline, (
                f"still ready {READY_TIMEOUT_SECONDS:g} s after the disk filled: {ready}\n"
                f"{server.output_tail()}"
            )
            time.sleep(0.2)
        _, body = ready
        assert body["status"] == "unready" and body["failed"] == ["writable"], body
        assert "disk" in body["checks"]["writable"]["detail"], body
        assert body["checks"]["store"]["ok"], body  # reads still work
        assert client.get("/health/live").status_code == 200  # alive: no restart wanted

        filler.unlink()
        deadline = time.monotonic() + READY_AGAIN_SECONDS
        while (ready := _readiness(client))[0] != 200:
            assert time.monotonic() < deadline, (
                f"still unready {READY_AGAIN_SECONDS:g} s after space returned: {ready}\n"
                f"{server.output_tail()}"
            )
            time.sleep(0.2)
    server.assert_running()
    log = server.output()
    assert log.count('"health_unready"') == 1, server.output_tail()
    assert log.count('"health_ready"') == 1, server.output_tail()
    assert "request_failed" not in log
