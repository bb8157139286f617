"""Which kind of failure ``delivery.send`` reports, from real failures on local sockets.

The kind (``Response.failure``) becomes the attempt's ``outcome`` label in the metrics and the
attempt log, so it must come from what actually failed, never from parsing the error text: a
closed port is a connection error, a receiver that never answers a timeout, an address the
egress guard refuses is ``egress_refused`` (a literal IP and a host name that resolves to it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest

from hookline import delivery, delivery_report, egress

LOOPBACK = egress.EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),))
REQUEST = dict(headers={"content-type": "application/json"}, body=b"{}")


def _request(url: str) -> delivery.Request:
    return delivery.Request(url=url, **REQUEST)  # type: ignore[arg-type]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never answers; its port."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep it open, say nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def answering_server() -> AsyncIterator[int]:
    """A server that answers each request with the status code in its path (``/503``)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        status = int(head.split(b" ")[1].strip(b"/"))
        writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _send(url: str, policy: egress.EgressPolicy, timeout: float = 5.0) -> delivery.Response:
    session = delivery.new_session(policy, 4)
    try:
        return await delivery.send(session, _request(url), timeout_seconds=timeout, policy=policy)
    finally:
        await session.close()


async def test_a_closed_port_is_a_connect_error() -> None:
    response = await _send(f"http://127.0.0.1:{_closed_port()}/hook", LOOPBACK)
    assert response.status == 0
    assert response.failure is delivery.Failure.CONNECT_ERROR
    assert delivery_report.outcome(response) == "connect_error"


async def test_a_receiver_that_never_answers_is_a_timeout(silent_server: int) -> None:
    response = await _send(f"http://127.0.0.1:{silent_server}/hook", LOOPBACK, timeout=0.3)
    assert response.failure is delivery.Failure.TIMEOUT
    assert delivery_report.outcome(response) == "timeout"
    assert 0.3 <= response.seconds < 5
    assert response.duration_ms == int(response.seconds * 1000)


async def test_an_address_outside_the_allowed_subnets_is_egress_refused() -> None:
    # loopback is not allowed by default: refused before any connection is tried
    response = await _send(f"http://127.0.0.1:{_closed_port()}/hook", egress.EgressPolicy())
    assert response.failure is delivery.Failure.EGRESS_REFUSED
    assert delivery_report.outcome(response) == "egress_refused"
    assert response.error is not None and response.error.startswith("egress refused")


async def test_a_host_name_the_resolver_refuses_is_egress_refused() -> None:
    # "localhost" resolves to loopback only; the guarded resolver drops every address
    response = await _send(f"http://localhost:{_closed_port()}/hook", egress.EgressPolicy())
    assert response.failure is delivery.Failure.EGRESS_REFUSED
    assert delivery_report.outcome(response) == "egress_refused"


async def test_an_invalid_url_is_a_connect_error_not_a_crash() -> None:
    response = await _send("http://127.0.0.1:99999/hook", LOOPBACK)
    assert response.failure is delivery.Failure.CONNECT_ERROR


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "success"), (204, "success"), (302, "http_4xx"), (410, "http_4xx"), (503, "http_5xx")],
)
async def test_an_answer_is_classified_by_its_status(
    answering_server: int, status: int, expected: str
) -> None:
    response = await _send(f"http://127.0.0.1:{answering_server}/{status}", LOOPBACK)
    assert response.status == status
    assert response.failure is None
    assert delivery_report.outcome(response) == expected
