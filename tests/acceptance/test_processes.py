"""``hookline api --processes N`` and ``hookline worker --processes N``: one command, N processes.

Run as an operator runs them (subprocesses on one SQLite database, a real receiver): the API
children share one listening socket, the worker children share the work; a child that dies is
started again; SIGTERM drains them all; a parent killed with SIGKILL leaves no child behind.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psutil

from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

MESSAGES = 300
WAIT_SECONDS = 20.0


def _children(server: HooklineServer) -> list[psutil.Process]:
    assert server.pid is not None
    return psutil.Process(server.pid).children()


def _wait_for(predicate: object, what: str, timeout: float = WAIT_SECONDS) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_three_api_and_two_worker_processes_deliver_every_message_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "hl"
    api = HooklineServer(data, command="api", args=("--processes", "3")).start()
    worker = HooklineServer(
        data, command="worker", token=api.token, args=("--processes", "2")
    ).start()
    try:
        _wait_for(lambda: len(_children(api)) == 3, "three API processes")
        _wait_for(lambda: len(_children(worker)) == 2, "two worker processes")
        hook = receiver.new_path("many")
        with httpx.Client(
            base_url=api.base_url + "/api/v1",
            headers={"Authorization": f"Bearer {api.token}"},
            timeout=10.0,
        ) as client:
            app = client.post("/app", json={"name": "many"}).json()["id"]
            assert (
                client.post(f"/app/{app}/endpoint", json={"url": receiver.url(hook)}).status_code
                == 201
            )
            sent = set()
            for i in range(MESSAGES):
                # a new connection per request, so the kernel spreads them over the children
                with httpx.Client(timeout=10.0) as one:
                    resp = one.post(
                        f"{api.base_url}/api/v1/app/{app}/msg",
                        headers={"Authorization": f"Bearer {api.token}"},
                        json={"eventType": "e", "payload": {"i": i}},
                    )
                assert resp.status_code == 202, resp.text
                sent.add(resp.json()["id"])
        got = receiver.wait_for(hook, MESSAGES, timeout=WAIT_SECONDS)
        ids = [r.headers["webhook-id"] for r in got]
        assert sorted(ids) == sorted(sent)  # each once, none lost
        receiver.assert_no_more(hook, MESSAGES, seconds=0.5)
        assert len(_children(api)) == 3 and len(_children(worker)) == 2  # none died
    finally:
        assert worker.stop() == 0
        assert api.stop() == 0


def test_a_dead_child_is_restarted_and_sigterm_drains_them_all(tmp_path: Path) -> None:
    api = HooklineServer(tmp_path / "hl", command="api", args=("--processes", "2")).start()
    try:
        _wait_for(lambda: len(_children(api)) == 2, "two API processes")
        victim = _children(api)[0]
        victim.send_signal(signal.SIGKILL)
        _wait_for(
            lambda: len(_children(api)) == 2 and victim.pid not in {c.pid for c in _children(api)},
            "a replacement for the killed child",
        )
        with httpx.Client(base_url=api.base_url, timeout=5.0) as client:
            for _ in range(20):
                assert client.get("/api/v1/health").status_code == 204
        children = _children(api)
        started = time.monotonic()
        assert api.stop() == 0
        assert time.monotonic() - started < 10.0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert "process_restarting" in api.output()
    finally:
        api.kill()


def test_killing_the_parent_leaves_no_child_serving(tmp_path: Path) -> None:
    # its metrics directory outlives it (SIGKILL): keep that in the test's own directory
    worker = HooklineServer(
        tmp_path / "hl", command="worker", args=("--processes", "2"), env={"TMPDIR": str(tmp_path)}
    ).start()
    _wait_for(lambda: len(_children(worker)) == 2, "two worker processes")
    children = _children(worker)
    worker.kill()

    def gone() -> bool:
        return not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)

    _wait_for(gone, "the children to exit after their parent was killed")
