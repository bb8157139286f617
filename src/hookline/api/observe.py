"""What every API request leaves behind: its request id, its access-log line, its metrics.

``_IngestFirst`` (``api/__init__.py``) sees every HTTP request, the ingest fast path and
Starlette's routes alike, and calls into this module around each one; nothing here costs a
store round trip or more than a few microseconds. Labels stay bounded: ``route`` is a route
template (``/api/v1/app/{app_id}/msg``), ``unmatched`` for a path no route matched (and for a
request refused before routing), never a path with ids in it.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import TYPE_CHECKING

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import Message, Send

from hookline import errors, logs
from hookline.metrics import INGEST_OUTCOMES

if TYPE_CHECKING:
    from hookline.metrics import Metrics

INGEST_ROUTE = "/api/v1/app/{app_id}/msg"
UNMATCHED = "unmatched"
HEADER = b"x-request-id"
# A client's own X-Request-Id is kept when it is 1 to 64 visible ASCII characters (no spaces or
# control characters: it goes into log lines and back into a response header as it came).
_CLIENT_ID = re.compile(rb"[!-~]{1,64}")
# The events of refusals the client is told to retry; each at most once a second (``Refusals``).
REFUSAL_EVENTS = {429: "request_throttled", 503: "request_unavailable"}
REFUSAL_LOG_SECONDS = 1.0
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

log = structlog.get_logger("hookline.api")


class RequestIds:
    """Request ids for one process: a random prefix and a counter, 16 hex digits in all.

    Unique across processes (the prefix is drawn when the API is built, after any fork) and
    cheaper than ``secrets.token_hex`` per request, which reads ``os.urandom`` each time.
    """

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFF:08x}"

    def of(self, headers: list[tuple[bytes, bytes]]) -> str:
        """The client's ``X-Request-Id`` when it is usable, else a new id."""
        for name, value in headers:
            if name == HEADER:
                if _CLIENT_ID.fullmatch(value):
                    return value.decode("ascii")
                break
        return self.new()


class Answer:
    """Wraps ``send``: adds ``X-Request-Id`` to the response and keeps its status."""

    __slots__ = ("_header", "_send", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._header = request_id.encode("ascii")
        self.status = 0  # no response started (yet)

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            # a new list: a response object's header list is not this request's to change
            message["headers"] = [*message.get("headers", ()), (HEADER, self._header)]
        await self._send(message)


class Observer:
    """Counts, times and logs each answered request (see the module docstring)."""

    __slots__ = ("_access_log", "_children", "_ingest", "_log", "_metrics")

    def __init__(self, metrics: Metrics | None, *, access_log: bool) -> None:
        self._metrics = metrics
        self._access_log = access_log
        # bound once: the module's lazy proxy costs an attribute lookup chain on every line
        self._log = log.bind()
        # The labelled children, made once: ``labels()`` builds and checks a label tuple on
        # every call, a cost the hot path does not need to pay per request.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._ingest: dict[str, Counter] = {}
        if metrics is not None:
            self._ingest = {o: metrics.messages_ingested.labels(o) for o in INGEST_OUTCOMES}

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        if self._metrics is not None:
            key = (route, status // 100)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = self._make(route, status // 100)
            children[0].inc()
            children[1].observe(seconds)
        if self._access_log:
            self._log.info(
                "http_request",
                method=method,
                route=route,
                status=status,
                duration_ms=round(seconds * 1000.0, 3),
            )

    def ingested(self, status: int) -> None:
        """``hookline_messages_ingested`` by the ingest route's answer."""
        if self._metrics is not None:
            self._ingest[ingest_outcome(status)].inc()

    def _make(self, route: str, status_class: int) -> tuple[Counter, Histogram]:
        assert self._metrics is not None
        label = _STATUS_CLASSES[status_class - 1] if 1 <= status_class <= 5 else "5xx"
        return (
            self._metrics.http_requests.labels(route, label),
            self._metrics.http_request_duration.labels(route),
        )


def ingest_outcome(status: int) -> str:
    """202: accepted; 429: throttled (backpressure); 5xx: unavailable; other 4xx: rejected."""
    if status < 400:
        return "accepted"
    if status == 429:
        return "throttled"
    return "unavailable" if status >= 500 else "rejected"


class Refusals:
    """Logs 429 and 503 refusals at most once a second each, with how many it stands for.

    Under backpressure or through a store outage every request is refused; a line per refusal
    would be thousands of lines a second saying the same thing.
    """

    __slots__ = ("_throttles",)

    def __init__(self, seconds: float = REFUSAL_LOG_SECONDS, clock: logs.Clock = time.monotonic):
        self._throttles = {status: logs.Throttle(seconds, clock) for status in REFUSAL_EVENTS}

    def note(self, exc: errors.HooklineError, route: str) -> None:
        throttle = self._throttles.get(exc.status)
        if throttle is None:
            return
        count = throttle.hit()
        if count:
            log.info(
                REFUSAL_EVENTS[exc.status],
                route=route,
                status=exc.status,
                detail=exc.detail,
                retry_after=getattr(exc, "retry_after", None),
                count=count,
            )
