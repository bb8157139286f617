"""The HTTP API: Svix-compatible resources under ``/api/v1``, the OpenAPI document and docs UI."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline import errors
from hookline.api import (  # noqa: F401  (importing a resource module registers its routes)
    applications,
    attempts,
    endpoints,
    event_types,
    health,
    http,
    messages,
    observe,
    openapi,
)

if TYPE_CHECKING:
    from hookline.api.services import Services

# Requests this API process works on at once; more are answered 503 with Retry-After.
MAX_REQUESTS_IN_FLIGHT = 2048

# Swagger UI 5, vendored (no CDN, no build step): version, licence and hashes in its README.md.
DOCS_STATIC = Path(__file__).with_name("docs_static")

# validatorUrl: null stops Swagger UI from loading a badge from validator.swagger.io, the one
# request it would otherwise make off this host.
DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hookline API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#ui", validatorUrl: null});</script>
</body></html>"""


def build(services: Services, *, access_log: bool = True) -> ASGIApp:
    """The ASGI app: every ``@route`` operation plus ``/api/v1/openapi.json`` and ``/docs``.

    With metrics on, also ``GET /metrics``: the Prometheus text format, without
    authentication (like ``/api/v1/health``), and not in the OpenAPI document, which describes
    the Svix API. ``access_log`` writes an ``http_request`` event per request.
    """
    spec = openapi.encoded()
    metrics = services.metrics

    async def openapi_json(_: Request) -> Response:
        return Response(spec, media_type=http.JSON)

    async def docs(_: Request) -> Response:
        return HTMLResponse(DOCS_PAGE)

    async def not_found(_: Request, __: Exception) -> Response:
        return http.error_response(_NoRoute())

    async def not_allowed(_: Request, exc: Exception) -> Response:
        response = http.error_response(_MethodNotAllowed())
        # Starlette's 405 names the path's methods in its Allow header (RFC 9110 requires it)
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    by_path: dict[str, dict[str, ASGIApp]] = {}
    for op in http.OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = op.endpoint
    # One route per path, so that a 405 lists every method of the path, not only the first
    # route's.
    routes: list[Route | Mount] = [
        Route(path, _ByMethod(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]
    routes += [
        Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=DOCS_STATIC)),
    ]
    if metrics is not None:

        async def metrics_text(_: Request) -> Response:
            # In multiprocess mode this reads every child's files: off the event loop.
            body, content_type = await asyncio.to_thread(metrics.render)
            return Response(body, headers={"content-type": content_type})

        routes.append(Route("/metrics", metrics_text, methods=["GET"]))
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    app.state.services = services
    app.state.refusals = observe.Refusals()
    ingest = next(op.endpoint for op in http.OPERATIONS if op.name == "create_message")
    return _IngestFirst(app, ingest, observe.Observer(metrics, access_log=access_log))


class _ByMethod:
    """The handlers of one path, chosen by method (Starlette has refused other methods)."""

    __slots__ = ("_handlers",)

    def __init__(self, handlers: dict[str, ASGIApp]) -> None:
        self._handlers = handlers
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])  # Starlette allows HEAD with GET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handlers[scope["method"]](scope, receive, send)


class _IngestFirst:
    """Send message ingest, the one route that carries real traffic, straight to its handler.

    Starlette matches routes one by one with a regular expression each and adds two middleware
    layers; on the ingest path that was a sizeable share of the CPU per message. Everything
    else goes through Starlette unchanged.

    Every HTTP request passes here, so this is also where each gets its request id (bound as
    the ``request_id`` context variable for every log line it causes, and returned as
    ``X-Request-Id``), its metrics and its access-log line (``observe``).
    """

    _PATH = re.compile(r"/api/v1/app/([^/]+)/msg/?")

    def __init__(self, app: Starlette, ingest: ASGIApp, observer: observe.Observer) -> None:
        self._app = app
        self._ingest = ingest
        self._observer = observer
        self._ids = observe.RequestIds()
        self._refusals: observe.Refusals = app.state.refusals
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        # uvicorn runs each request in a task of its own, whose context is a copy; cleared
        # anyway, at both ends, so that nothing bound elsewhere leaks into a request's lines or
        # out of them (an in-process caller such as a test shares its context with the app).
        structlog.contextvars.clear_contextvars()
        request_id = self._ids.of(scope["headers"])
        structlog.contextvars.bind_contextvars(request_id=request_id)
        answer = observe.Answer(send, request_id)
        match = self._PATH.fullmatch(scope["path"]) if scope["method"] == "POST" else None
        route = observe.UNMATCHED if match is None else observe.INGEST_ROUTE
        try:
            if self._in_flight >= MAX_REQUESTS_IN_FLIGHT and scope["path"] != health.LIVE_PATH:
                # Each request in flight holds its body (up to max_payload_bytes) and a slot in
                # the store's writer queue: past this many, answer at once rather than queue.
                # Not liveness: a busy process is alive, and restarting it would not help.
                busy = _Busy()
                self._refusals.note(busy, route)
                await http.error_response(busy)(scope, receive, answer.send)
                return
            self._in_flight += 1
            try:
                if match is not None:
                    scope["app"] = self._app
                    scope["path_params"] = {"app_id": match.group(1)}
                    await self._ingest(scope, receive, answer.send)
                else:
                    await self._app(scope, receive, answer.send)
            finally:
                self._in_flight -= 1
        finally:
            if match is None and (matched := scope.get("route")) is not None:
                route = getattr(matched, "path", route)  # the template Starlette's router matched
            # no response started: the exception goes on to uvicorn, which answers 500
            status = answer.status or 500
            self._observer.answered(scope["method"], route, status, time.perf_counter() - started)
            if match is not None:
                self._observer.ingested(status)
            structlog.contextvars.clear_contextvars()


class _Busy(errors.Unavailable):
    def __init__(self) -> None:
        super().__init__(
            f"More than {MAX_REQUESTS_IN_FLIGHT} requests in flight; retry later", retry_after=1
        )


class _NoRoute(errors.NotFound):
    def __init__(self) -> None:
        super().__init__("No such route")


class _MethodNotAllowed(errors.HooklineError):
    status = 405
    code = "method_not_allowed"
