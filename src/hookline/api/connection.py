"""HTTP connection limits uvicorn's httptools protocol does not have.

A client that opens a connection and sends nothing, or sends its headers or body a byte at a
time, would otherwise hold a connection, a request task and its buffers for as long as it
likes (3,000 such connections held the API for 70 s and more). And httptools accepts any number
and size of headers. So each request must arrive whole within ``request_read_timeout`` seconds
of its first byte (and a new connection must start one within that time), with at most
``MAX_HEADERS`` headers, ``MAX_HEADER_BYTES`` of them in all and a target of at most
``MAX_TARGET_BYTES``. A refusal is answered with a Svix-shaped JSON body and the connection is
closed; the request never reaches the application.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_READ_SECONDS = 10.0  # from a request's first byte to its last, headers and body
MAX_HEADERS = 100  # header lines per request
MAX_HEADER_BYTES = 64 * 1024  # bytes of header names and values per request
MAX_TARGET_BYTES = 8 * 1024  # bytes of the request target (path and query)

_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}
_CODES = {408: "request_timeout", 414: "uri_too_long", 431: "request_header_fields_too_large"}


def _answer(status: int, detail: str) -> bytes:
    body = msgspec.json.encode({"code": _CODES[status], "detail": detail})
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    )
    return head + body


def limited(read_seconds: float = DEFAULT_READ_SECONDS) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with this read deadline."""
    return type(
        "LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"read_seconds": read_seconds}
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a read deadline per request and header limits."""

    read_seconds = DEFAULT_READ_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = False  # a request has begun and not yet been read whole
        self._refused = False
        self._header_count = 0
        self._header_bytes = 0
        self._target_bytes = 0

    # the deadline ------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if self._reading and (
            cycle is None or cycle.response_complete or not cycle.response_started
        ):
            # Nothing has been answered for this request (its headers or body stalled): say
            # why. The application's read then ends as a disconnect, and what it would answer
            # is dropped by uvicorn.
            self.transport.write(
                _answer(408, f"The request was not received within {self.read_seconds:g} s")
            )
        self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_answer(status, detail))
            self.transport.close()

    # uvicorn's callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True
        self._header_count = self._header_bytes = self._target_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refuse(414, f"The request target exceeds {MAX_TARGET_BYTES} bytes")
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > MAX_HEADERS:
            self._refuse(431, f"More than {MAX_HEADERS} request headers")
            return
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, f"Request headers exceed {MAX_HEADER_BYTES} bytes")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._reading = False
        self._disarm()
        super().on_message_complete()
