"""HTTP limits against a real ``hookline serve``: slow and oversized clients, from outside.

Python's ``urllib`` and raw sockets stand in for clients hookline did not write: a body that
never finishes, a connection that never speaks, thousands of headers, bodies of 600 KiB to
100 MiB. Each gets a Svix-shaped answer (or a closed connection when it stalls) within the
read timeout, nothing is written, and the server keeps serving meanwhile.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import psutil
import pytest

from tests.support.server import HooklineServer

READ_TIMEOUT = 2.0  # HOOKLINE_REQUEST_READ_TIMEOUT in these tests, seconds
STALLED = 500  # connections that stop half-way through their body
SLACK = 3.0  # seconds of scheduling slack on a loaded 2-core machine


@pytest.fixture
def server(start_server: Callable[..., HooklineServer]) -> HooklineServer:
    return start_server(env={"HOOKLINE_REQUEST_READ_TIMEOUT": f"{READ_TIMEOUT:g}"})


def _post(server: HooklineServer, path: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        server.base_url + path,
        data=body,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _app(server: HooklineServer) -> str:
    status, body = _post(server, "/api/v1/app", b'{"name": "slow clients"}')
    assert status == 201, body
    return str(json.loads(body)["id"])


def _messages(server: HooklineServer, app_id: str) -> list[object]:
    req = urllib.request.Request(
        f"{server.base_url}/api/v1/app/{app_id}/msg",
        headers={"Authorization": f"Bearer {server.token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return list(json.loads(resp.read())["data"])


def _raw(server: HooklineServer, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT + SLACK) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("size", [600 * 1024, 10 * 2**20, 100 * 2**20])
def test_an_oversized_body_gets_a_readable_413_through_urllib(
    server: HooklineServer, size: int
) -> None:
    app_id = _app(server)
    body = b'{"eventType": "big", "payload": {"x": "' + b"a" * size + b'"}}'
    status, answer = _post(server, f"/api/v1/app/{app_id}/msg", body)
    assert status == 413
    assert json.loads(answer)["code"] == "payload_too_large"
    assert _messages(server, app_id) == []


@pytest.mark.parametrize(
    ("label", "headers"),
    [
        ("10,000 headers", b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))),
        ("a 1 MiB header", b"X-Big: " + b"a" * 2**20 + b"\r\n"),
    ],
)
def test_too_many_or_too_large_headers_get_a_431(
    server: HooklineServer, label: str, headers: bytes
) -> None:
    answer = _raw(server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), (label, answer[:200])
    assert set(json.loads(body)) == {"code", "detail"}
    # the server is fine afterwards (Connection: close, or it keeps the connection alive)
    healthy = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _raw(server, healthy).startswith(b"HTTP/1.1 204")


def test_stalled_headers_and_silent_connections_are_closed_within_the_read_timeout(
    server: HooklineServer,
) -> None:
    started = time.monotonic()
    answer = _raw(server, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert _raw(server, b"") == b""
    assert time.monotonic() - started < 2 * (READ_TIMEOUT + SLACK)


def test_stalled_uploads_are_closed_memory_returns_and_ingest_keeps_answering(
    server: HooklineServer,
) -> None:
    app_id = _app(server)
    process = psutil.Process(server._proc.pid)  # type: ignore[union-attr]
    before = process.memory_info().rss
    head = (
        f"POST /api/v1/app/{app_id}/msg HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    sockets = []
    try:
        opened = time.monotonic()
        for _ in range(STALLED):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.sendall(head + b'{"eventType": "stalled", "payload": {"x": "' + b"a" * 1000)
            sockets.append(s)
        # meanwhile ingest answers as usual
        body = b'{"eventType": "live", "payload": {"ok": true}}'
        for _ in range(20):
            status, answer = _post(server, f"/api/v1/app/{app_id}/msg", body)
            assert status == 202, answer
        # every stalled connection is closed by the server (an empty read), within the timeout
        for s in sockets:
            s.settimeout(max(0.1, opened + READ_TIMEOUT + SLACK - time.monotonic()))
            leftover = b""
            while chunk := s.recv(65536):
                leftover += chunk
            assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408 "), leftover[:200]
        closed_after = time.monotonic() - opened
    finally:
        for s in sockets:
            s.close()
    assert closed_after < READ_TIMEOUT + SLACK, closed_after
    time.sleep(0.5)
    grown = process.memory_info().rss - before
    print(f"stalled={STALLED} closed_after_s={closed_after:.2f} rss_growth_mib={grown / 2**20:.1f}")
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"
    events = [m["eventType"] for m in _messages(server, app_id)]  # type: ignore[index]
    assert events == ["live"] * 20  # none of the stalled bodies was stored
    server.assert_running()
    assert "Traceback" not in server.output()
