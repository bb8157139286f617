"""The benchmark's webhook receiver: a lean asyncio + httptools HTTP server in its own process.

It must cost far less CPU per request than hookline, or the benchmark would measure the
receiver. Behaviour is chosen by the path, so one receiver serves every endpoint of a run:

- ``POST /ok/<n>``   answers 200 and records the delivery (seq and ingest timestamp from the body)
- ``POST /fail/<n>`` answers 500 (a retry storm)
- ``POST /slow/<n>`` never answers; the sender's timeout ends the request
- ``GET /_stats``    counters as JSON (``?latency=1`` adds ingest→delivery percentiles,
                     ``?endpoints=1`` the count and first/last arrival per ``/ok/<n>``)
- ``POST /_reset``   forgets everything (between the raw-pipe phase and the hookline phase)

Run as ``python -m hookline.bench.receiver``; it prints its port on stdout once listening.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import cast

import httptools
import msgspec

from hookline.bench.stats import Arrivals, Stats, percentiles

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
FAIL = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Probe(msgspec.Struct):
    """What the load generator puts in every payload (other fields are ignored)."""

    seq: int
    ts: float


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stats = Stats()
        self.seen: set[int] = set()
        self.latencies = array.array("d")
        # path after /ok/ -> [requests, first_at, last_at]: a plain list, cheap to bump per request
        self.arrivals: dict[bytes, list[float]] = {}

    def record_ok(self, path: bytes, body: bytes) -> None:
        now = time.time()
        s = self.stats
        s.ok += 1
        if s.first_at is None:
            s.first_at = now
        s.last_at = now
        arrivals = self.arrivals.get(path)
        if arrivals is None:
            self.arrivals[path] = [1, now, now]
        else:
            arrivals[0] += 1
            arrivals[2] = now
        try:
            probe = _probe.decode(body)
        except msgspec.DecodeError:
            return
        if probe.seq not in self.seen:
            self.seen.add(probe.seq)
            s.unique += 1
            self.latencies.append((now - probe.ts) * 1000.0)

    def snapshot(self, latency: bool, endpoints: bool = False) -> bytes:
        s = self.stats
        if latency and self.latencies:
            s.latency_ms = percentiles(self.latencies)
        if endpoints:
            s.endpoints = {
                path.decode(errors="replace"): Arrivals(
                    requests=int(n), first_at=first, last_at=last
                )
                for path, (n, first, last) in self.arrivals.items()
            }
        out = _encoder.encode(s)
        s.latency_ms = s.endpoints = None
        return out


_probe = msgspec.json.Decoder(Probe)
_encoder = msgspec.json.Encoder()


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests are parsed by httptools as bytes arrive."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(BAD)
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None:
            return
        url, state = self._url, self._state
        if url.startswith(b"/ok/"):
            state.record_ok(url[4:], b"".join(self._body))
            transport.write(OK)
        elif url.startswith(b"/fail/"):
            state.stats.fail += 1
            transport.write(FAIL)
        elif url.startswith(b"/slow/"):
            state.stats.slow += 1  # no answer: the client's timeout closes the connection
        elif url.startswith(b"/_stats"):
            body = state.snapshot(latency=b"latency=1" in url, endpoints=b"endpoints=1" in url)
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n"
            transport.write(head.encode() + b"content-type: application/json\r\n\r\n" + body)
        elif url.startswith(b"/_reset"):
            state.reset()
            transport.write(OK)
        else:
            transport.write(NOT_FOUND)


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; prints the bound port once listening."""
    loop = asyncio.get_running_loop()
    state = State()
    server = await loop.create_server(lambda: Connection(state), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(bound, flush=True)
        await _until_stopped_or_orphaned(stop)


async def _until_stopped_or_orphaned(stop: asyncio.Event) -> None:
    """Return on SIGTERM/SIGINT, or once the benchmark that started us is gone (killed hard)."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    try:
        import uvloop

        uvloop.run(serve("127.0.0.1", port))
    except ImportError:
        asyncio.run(serve("127.0.0.1", port))


if __name__ == "__main__":
    main()
