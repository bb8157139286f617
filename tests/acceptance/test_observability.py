"""Logs and metrics as an operator meets them: real ``hookline`` processes, real sockets.

``hookline serve`` in JSON mode writes nothing but JSON lines (uvicorn's included) and never a
token or a payload; the first token goes to stdout. ``hookline api --processes 2`` answers one
``/metrics`` for both children; ``hookline worker`` serves ``/metrics`` on
``HOOKLINE_METRICS_LISTEN``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from hookline import metrics
from tests.acceptance.test_cli import FIRST_TOKEN_LINE, TOKEN, _env, _serve_once, hookline
from tests.support import wait
from tests.support.receiver import Receiver
from tests.support.server import HOST, HooklineServer, free_port

MARKER = "payload-marker-that-must-never-be-logged"
WAIT_SECONDS = 20.0


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON; fails naming the first line that is not."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
        assert isinstance(record, dict), line
        for field in ("event", "level", "timestamp", "logger"):
            assert field in record, line
        records.append(record)
    return records


def _invalid_http_request(port: int) -> bytes:
    with socket.create_connection((HOST, port), timeout=5.0) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        return conn.recv(1024)


def test_json_logs_are_json_lines_only_and_never_hold_a_token_or_a_payload(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = HooklineServer(tmp_path / "hl", env={"HOOKLINE_LOG_FORMAT": "json"}).start()
    wrong = "hl_a_wrong_token_that_must_never_be_logged"
    try:
        hook = receiver.new_path("logs")
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base_url + "/api/v1", headers=auth, timeout=10) as c:
            app = c.post("/app", json={"name": "logs"}).json()["id"]
            created = c.post(f"/app/{app}/endpoint", json={"url": receiver.url(hook)})
            assert created.status_code == 201, created.text
            for i in range(3):
                sent = c.post(
                    f"/app/{app}/msg",
                    json={"eventType": "e", "payload": {"m": MARKER, "i": i}},
                    headers={"X-Request-Id": f"acceptance-{i}"},
                )
                assert sent.status_code == 202, sent.text
                assert sent.headers["x-request-id"] == f"acceptance-{i}"
            refused = c.get("/app", headers={"Authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401
        receiver.wait_for(hook, 3, timeout=WAIT_SECONDS)
        assert b"400 Bad Request" in _invalid_http_request(server.port)  # uvicorn logs a warning
        wait.until(
            lambda: "Invalid HTTP request" in server.output(), bool, what="uvicorn's warning"
        )
    finally:
        assert server.stop() == 0
    output = server.output()
    records = _json_lines(output)
    events = {r["event"] for r in records}
    assert {"listening", "worker_started", "http_request", "auth_failed"} <= events, events
    (uvicorn,) = [r for r in records if r["event"] == "uvicorn_message"]
    assert uvicorn["logger"] == "uvicorn.error" and uvicorn["level"] == "warning"
    assert "Invalid HTTP request" in uvicorn["message"]
    ingests = [r for r in records if r["event"] == "http_request" and r["method"] == "POST"]
    by_id = {r["request_id"]: r for r in ingests}
    assert by_id["acceptance-1"]["route"] == "/api/v1/app/{app_id}/msg"
    assert by_id["acceptance-1"]["app_id"] == app and by_id["acceptance-1"]["status"] == 202
    assert server.token not in output  # the seeded admin token
    assert wrong not in output
    assert MARKER not in output
    assert not TOKEN.search(output), output


def test_the_first_token_goes_to_stdout_once_and_never_into_the_json_log(tmp_path: Path) -> None:
    env = _env(tmp_path / "h.db", HOOKLINE_LOG_FORMAT="json")
    code, out, err = _serve_once(env, tmp_path, free_port())
    assert code == 0, err
    assert out.count(FIRST_TOKEN_LINE) == 1, out
    (token,) = set(TOKEN.findall(out))
    assert token not in err
    (listening,) = [r for r in _json_lines(err) if r["event"] == "listening"]
    assert listening["url"].startswith("http://127.0.0.1:")
    assert listening["docs_url"] == listening["url"] + "/docs"
    assert listening["first_token"] == "printed on stdout"

    code, out, err = _serve_once(env, tmp_path, free_port())  # a later start shows none
    assert code == 0, err
    assert out == "" and not TOKEN.search(err)
    (listening,) = [r for r in _json_lines(err) if r["event"] == "listening"]
    assert "hookline token create" in listening["hint"]


# metrics -----------------------------------------------------------------------------------------


def _scrape(url: str) -> tuple[dict[tuple[str, str], float], str]:
    """``hookline_http_requests_total`` by (route, status class), and the answering child."""
    resp = httpx.get(url, timeout=10.0)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == metrics.CONTENT_TYPE
    counts = {
        (s.labels["route"], s.labels["status_class"]): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
        if s.name == "hookline_http_requests_total"
    }
    return counts, resp.headers["x-request-id"][:8]  # the id's prefix names the process


def _leftover_metric_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("hookline-metrics-*"))


def test_api_processes_answer_one_scrape_for_all_children(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # left by supervisors killed with SIGKILL: removed at start if theirs is gone, else kept
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale, alive = tmp / f"hookline-metrics-{gone.pid}-x", tmp / f"hookline-metrics-{os.getpid()}-y"
    stale.mkdir()
    alive.mkdir()
    api = HooklineServer(
        tmp_path / "hl", command="api", args=("--processes", "2"), env={"TMPDIR": str(tmp)}
    ).start()
    try:
        assert api.pid is not None
        wait.until(lambda: len(psutil.Process(api.pid).children()), lambda n: n == 2, what="2")
        assert not stale.exists() and alive.exists()
        alive.rmdir()
        assert len(_leftover_metric_dirs(tmp)) == 1  # the children's shared directory
        auth = {"Authorization": f"Bearer {api.token}"}
        served_by: set[str] = set()
        sent = 0
        deadline = time.monotonic() + WAIT_SECONDS
        # a new connection per request, so the kernel spreads them over the children
        while len(served_by) < 2 or sent < 20:
            assert time.monotonic() < deadline, f"only {served_by} answered"
            resp = httpx.get(f"{api.base_url}/api/v1/app", headers=auth, timeout=10.0)
            assert resp.status_code == 200, resp.text
            served_by.add(resp.headers["x-request-id"][:8])
            sent += 1
        scraped_by: set[str] = set()
        while scraped_by != served_by:
            assert time.monotonic() < deadline, f"only {scraped_by} scraped"
            counts, child = _scrape(f"{api.base_url}/metrics")
            assert counts[("/api/v1/app", "2xx")] == sent  # both children's requests, summed
            scraped_by.add(child)

        # a dead child's counts stay in the sum; its replacement adds to it
        victim = psutil.Process(api.pid).children()[0]
        victim.kill()
        wait.until(
            lambda: {c.pid for c in psutil.Process(api.pid).children()},  # type: ignore[arg-type]
            lambda pids: len(pids) == 2 and victim.pid not in pids,
            what="a replacement child",
        )
        assert httpx.get(f"{api.base_url}/api/v1/app", headers=auth).status_code == 200
        counts, _ = _scrape(f"{api.base_url}/metrics")
        assert counts[("/api/v1/app", "2xx")] == sent + 1
    finally:
        assert api.stop() == 0
    assert _leftover_metric_dirs(tmp) == []  # removed when the supervisor exits


def test_a_worker_serves_metrics_on_metrics_listen(tmp_path: Path) -> None:
    port = free_port()
    env = {"HOOKLINE_METRICS_LISTEN": f"{HOST}:{port}", "HOOKLINE_LOG_FORMAT": "json"}
    worker = HooklineServer(tmp_path / "hl", command="worker", env=env).start()
    try:
        wait.until(worker.output, lambda out: '"metrics_listening"' in out, what="metrics")
        resp = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10.0)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == metrics.CONTENT_TYPE
        assert 'hookline_info{version="' in resp.text
        assert "hookline_delivery_attempts_total" in resp.text
        assert httpx.get(f"http://{HOST}:{port}/", timeout=10.0).status_code == 404
    finally:
        assert worker.stop() == 0
    _json_lines(worker.output())
    with socket.socket() as probe:  # stopped cleanly: the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((HOST, port))


def test_worker_processes_share_one_metrics_port_and_clean_up(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {"HOOKLINE_METRICS_LISTEN": f"{HOST}:{port}", "TMPDIR": str(tmp)}
    worker = HooklineServer(
        tmp_path / "hl", command="worker", args=("--processes", "2"), env=env
    ).start()
    try:
        wait.until(
            worker.output, lambda out: out.count('"metrics_listening"') == 2, what="2 children"
        )
        for _ in range(4):
            resp = httpx.get(f"http://{HOST}:{port}/metrics", timeout=10.0)
            assert resp.status_code == 200 and "hookline_info" in resp.text
    finally:
        assert worker.stop() == 0
    assert _leftover_metric_dirs(tmp) == []


def test_a_metrics_port_clash_fails_the_worker_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(tmp_path / "h.db", HOOKLINE_METRICS_LISTEN=f"{HOST}:{port}")
        done = hookline("worker", env=env, cwd=tmp_path)
    assert done.returncode != 0
    assert f"cannot serve metrics on {HOST}:{port}" in done.stderr, done.stderr
    assert "address already in use" in done.stderr.lower()
    assert "Traceback" not in done.stderr
