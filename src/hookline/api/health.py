"""Health: the svix SDK's ``/api/v1/health``, and the probes load balancers and orchestrators call.

- ``GET /api/v1/health``: 204 when the database answers and is not refusing writes (what
  ``health.get()`` of the svix SDK expects), else 503 in the Svix error shape.
- ``GET /health/live``: 200 ``{"status": "ok"}`` whenever the process answers. It touches
  nothing else: restarting a process because its database is down would not bring it back.
- ``GET /health/ready``: 200 when every check passes, else 503 naming the failed checks, each
  with a short reason. ``store``: the database answers. ``writable``: a write would succeed now
  (``Store.probe_write`` at most every ``WRITE_PROBE_SECONDS``, and no refusal reported by
  ``Store.check_writable``). ``worker``, in a process that runs one: its loop went round within
  ``ready_max_worker_stall`` (``worker.HEARTBEAT_STALE_SECONDS`` by default). ``backlog``: no
  due delivery has waited for a worker longer than ``ready_max_backlog_age`` (``api/backlog.py``
  says what counts as waiting).

Every check is bounded by ``CHECK_TIMEOUT_SECONDS``, so a database that does not answer makes
the probe fail, not hang; nothing is cached for good, so each check recovers on its own once its
cause is gone. The probes need no token. A process without the API's server (``hookline worker``)
can serve them with ``probe_app`` beside whatever else it serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec
import structlog
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline import errors, worker
from hookline.api import http
from hookline.api.backlog import Backlog
from hookline.api.http import Call, route
from hookline.store.base import Store

CHECK_TIMEOUT_SECONDS = 2.0  # per check: a probe answers within this, whatever the database does
# A write probe's answer is reused this long: each probe is a commit (an fsync on SQLite), and
# orchestrators probe every few seconds, from several places.
WRITE_PROBE_SECONDS = 5.0
# The backlog is measured once a second by the Backlog task; an older measurement (that task is
# not running here, or is stuck) is taken again by the probe itself.
BACKLOG_FRESH_SECONDS = 3.0
RETRY_AFTER_SECONDS = 5  # what a 503 from /health/ready says: about when the checks run again
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"

log = structlog.get_logger("hookline.api")


class HealthCheckOut(msgspec.Struct, kw_only=True):
    ok: bool
    detail: str  # what was found, in a few words


class LivenessOut(msgspec.Struct, kw_only=True):
    status: Literal["ok"]


class ReadinessOut(msgspec.Struct, kw_only=True):
    status: Literal["ready", "unready"]
    failed: list[str]  # the names of the checks that failed, in ``checks`` order
    checks: dict[str, HealthCheckOut]  # store, writable, worker (if it runs here), backlog


_LIVE = msgspec.json.encode(LivenessOut(status="ok"))


class Readiness:
    """The readiness checks of one process, with what they reuse between probes.

    ``heartbeat``: the worker loop's (its check is left out while no loop has run here, as in
    ``hookline api``); ``max_backlog_age`` 0 leaves the backlog check out.
    """

    def __init__(
        self,
        store: Store,
        backlog: Backlog | None = None,
        heartbeat: worker.Heartbeat | None = None,
        *,
        max_backlog_age: float = 0.0,
        max_worker_stall: float = worker.HEARTBEAT_STALE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._backlog = backlog
        self.heartbeat = heartbeat
        self._max_backlog_age = max_backlog_age
        self._max_worker_stall = max_worker_stall
        self._monotonic = monotonic
        self._probed: tuple[float, str | None] | None = None  # (monotonic, failure or None)
        self._probing: asyncio.Task[str | None] | None = None  # one probe at a time
        self._failed: list[str] = []  # what the last answer named, to log each change once

    async def check(self) -> ReadinessOut:
        """Run every check (concurrently, each bounded) and log when the outcome changes."""
        checks: dict[str, Callable[[], Awaitable[HealthCheckOut]]] = {
            "store": self._reachable,
            "writable": self._writable,
        }
        if self.heartbeat is not None and self.heartbeat.at is not None:
            checks["worker"] = self._worker
        if self._backlog is not None and self._max_backlog_age > 0:
            checks["backlog"] = self._backlog_age
        results = await asyncio.gather(*(_bounded(check) for check in checks.values()))
        outcome = dict(zip(checks, results, strict=True))
        failed = [name for name, result in outcome.items() if not result.ok]
        if failed != self._failed:
            if failed:
                details = {name: outcome[name].detail for name in failed}
                log.warning("health_unready", failed=failed, details=details)
            else:
                log.info("health_ready", was=self._failed)
            self._failed = failed
        return ReadinessOut(status="unready" if failed else "ready", failed=failed, checks=outcome)

    async def response(self) -> Response:
        """The answer to ``GET /health/ready``: 200, or 503 with ``Retry-After``."""
        out = await self.check()
        if out.failed:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return Response(msgspec.json.encode(out), 503, headers, media_type=http.JSON)
        return Response(msgspec.json.encode(out), 200, media_type=http.JSON)

    # the checks --------------------------------------------------------------------------------
    async def _reachable(self) -> HealthCheckOut:
        await self._store.ping()
        return HealthCheckOut(ok=True, detail="the database answers")

    async def _writable(self) -> HealthCheckOut:
        failure = await self._write_probe()
        if failure is not None:
            return HealthCheckOut(ok=False, detail=failure)
        await self._store.check_writable()  # refusals that writes met since (under load)
        return HealthCheckOut(ok=True, detail="writes succeed")

    async def _write_probe(self) -> str | None:
        """The last probe's failure (None: it wrote), probing again once it is too old."""
        probed = self._probed
        if probed is not None and self._monotonic() - probed[0] < WRITE_PROBE_SECONDS:
            return probed[1]
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe_once())
        # shielded: a probe that gave up waiting must not cancel the write the others await
        return await asyncio.shield(self._probing)

    async def _probe_once(self) -> str | None:
        try:
            probe = self._store.probe_write(self._store.now())
            await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS)
            failure = None
        except Exception as exc:
            failure = _why(exc)
        finally:
            self._probing = None
        self._probed = (self._monotonic(), failure)
        return failure

    async def _worker(self) -> HealthCheckOut:
        assert self.heartbeat is not None
        age = self.heartbeat.age() or 0.0
        if age > self._max_worker_stall:
            return HealthCheckOut(
                ok=False,
                detail=f"the worker loop has not gone round for {age:.0f} s "
                f"(stuck after {self._max_worker_stall:g} s)",
            )
        return HealthCheckOut(ok=True, detail=f"the worker loop went round {age:.1f} s ago")

    async def _backlog_age(self) -> HealthCheckOut:
        backlog = self._backlog
        assert backlog is not None
        if not backlog.measured_within(BACKLOG_FRESH_SECONDS):
            await backlog.measure()
        limit = self._max_backlog_age
        oldest, stalled = backlog.oldest_age, backlog.stalled_age
        if stalled is None or oldest <= limit:  # the oldest is within the limit: so is the rest
            return HealthCheckOut(
                ok=True, detail=f"the oldest due delivery waited {oldest:.0f} s (limit {limit:g} s)"
            )
        if stalled > limit:
            return HealthCheckOut(
                ok=False,
                detail=f"due deliveries have waited {stalled:.0f} s for a worker "
                f"(limit {limit:g} s)",
            )
        return HealthCheckOut(
            ok=True,
            detail=f"the oldest due delivery waited {oldest:.0f} s, held back by its endpoint; "
            f"the oldest nothing holds back {stalled:.0f} s (limit {limit:g} s)",
        )


async def _bounded(check: Callable[[], Awaitable[HealthCheckOut]]) -> HealthCheckOut:
    """``check()`` within ``CHECK_TIMEOUT_SECONDS``; any failure becomes a failed check."""
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return HealthCheckOut(ok=False, detail=_why(exc))


def _why(exc: Exception) -> str:
    """A failed check's reason. A store's refusal is worded for clients already; anything
    else is named by its type only (the probes need no token: internals stay out of them)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, errors.HooklineError):
        return str(exc.detail)
    return f"failed: {type(exc).__name__}"


# routes ----------------------------------------------------------------------------------------


@route("GET", "/health", status=204, auth=False, tag="Health")
async def health(call: Call) -> None:
    """204 when the API can read its database and writes are not being refused, 503 otherwise.

    The write side is what recent writes found (``Store.check_writable``), so a check costs a
    read, never a write: a full disk answers 503 here, not only to the writes it refuses.
    """
    store = call.api.store
    try:
        await store.ping()
    except Exception as exc:
        raise errors.Unavailable(f"database unreachable: {type(exc).__name__}") from None
    try:
        await store.check_writable()
    except errors.Unavailable:
        raise
    except Exception as exc:
        raise errors.Unavailable(f"database cannot write: {type(exc).__name__}") from None


@route("GET", LIVE_PATH, prefix="", auth=False, tag="Health", response=LivenessOut)
async def health_live(call: Call) -> Response:
    """Liveness: 200 whenever the process answers (nothing else is looked at)."""
    return Response(_LIVE, 200, media_type=http.JSON)


@route("GET", READY_PATH, prefix="", auth=False, tag="Health", response=ReadinessOut, also=(503,))
async def health_ready(call: Call) -> Response:
    """Readiness: 200 when every check passes, 503 naming the ones that failed."""
    readiness = call.api.readiness
    if readiness is None:  # Services built without one: the checks that need no state
        readiness = Readiness(call.api.store)
    return await readiness.response()


def probe_app(readiness: Readiness, fallback: ASGIApp | None = None) -> ASGIApp:
    """``/health/live`` and ``/health/ready`` as a bare ASGI app, other paths to ``fallback``.

    For a server that is not the API's, such as ``hookline worker``'s on ``metrics_listen``
    (``probe_app(readiness, metrics_app)``). Without a fallback other paths answer 404.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in (LIVE_PATH, READY_PATH):
            if fallback is not None:
                await fallback(scope, receive, send)
                return
            response = http.error_response(errors.NotFound("No such route"))
        elif scope["method"] not in ("GET", "HEAD"):
            response = http.error_response(_MethodNotAllowed())
        elif path == LIVE_PATH:
            response = Response(_LIVE, 200, media_type=http.JSON)
        else:
            response = await readiness.response()
        await response(scope, receive, send)

    return app


class _MethodNotAllowed(errors.HooklineError):
    status = 405
    code = "method_not_allowed"

    def headers(self) -> dict[str, str]:
        return {"Allow": "GET, HEAD"}
