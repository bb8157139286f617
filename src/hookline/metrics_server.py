"""``GET /metrics`` where no API runs: ``hookline worker`` on ``metrics_listen``.

``hookline serve`` and ``hookline api`` answer ``/metrics`` on the API's own port
(``api.build``); a worker alone has no HTTP server, so with ``HOOKLINE_METRICS_LISTEN`` it runs
this one: ``application`` (a bare ASGI app) under a second uvicorn server in the worker's event
loop, which needs no thread and stops with the process. Being ASGI, it composes with other
small apps on the same port (the health probes' ``probe_app(readiness, application(...))``).
Without the setting a worker-only process serves no metrics.

Under ``hookline worker --processes N`` the supervisor binds the socket once, before forking,
and every child serves on it, as API children share the API's socket: the kernel hands each
scrape to one child, and each answers for all of them (``Metrics.render`` in multiprocess mode).
The supervisor itself serves nothing: it forks again whenever a child dies, and a process that
forks must have no other thread or event loop running.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline import errors
from hookline.api import http
from hookline.metrics import Metrics

log = structlog.get_logger("hookline.metrics")

PATH = "/metrics"
STOP_SECONDS = 1  # a scrape in flight at shutdown gets this long (uvicorn counts whole seconds)
_POLL_SECONDS = 0.02


def bind(listen: str) -> socket.socket:
    """A listening socket on ``listen`` (host:port), or ``SystemExit`` with one line."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"hookline: cannot serve metrics on {listen} (HOOKLINE_METRICS_LISTEN): {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def application(metrics: Metrics) -> ASGIApp:
    """``GET /metrics`` in the Prometheus text format; other paths 404, other methods 405."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response: Response
        if scope["path"] != PATH:
            response = http.error_response(errors.NotFound("No such route"))
        elif scope["method"] not in ("GET", "HEAD"):
            response = http.error_response(_MethodNotAllowed())
        else:
            # In multiprocess mode this reads every child's files: off the event loop.
            body, content_type = await asyncio.to_thread(metrics.render)
            response = Response(body, headers={"content-type": content_type})
        await response(scope, receive, send)

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # app.run owns SIGINT/SIGTERM (see app._Server)


async def serve(app: ASGIApp, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` (``application``, or a composition of it) on ``sock`` until ``stop``."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's log format (logs.py)
        access_log=False,
        proxy_headers=False,
        lifespan="off",
        loop="none",
        timeout_graceful_shutdown=STOP_SECONDS,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-server")
    try:
        while not server.started and not serving.done():  # noqa: ASYNC110  (uvicorn has no event)
            await asyncio.sleep(_POLL_SECONDS)
        if server.started:
            host, port = sock.getsockname()[:2]
            log.info("metrics_listening", url=f"http://{_host(host)}:{port}{PATH}")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        server.should_exit = True
        await serving


class _MethodNotAllowed(errors.HooklineError):
    status = 405
    code = "method_not_allowed"

    def headers(self) -> dict[str, str]:
        return {"Allow": "GET, HEAD"}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
