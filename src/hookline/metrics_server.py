"""``GET /metrics`` where no API runs: ``hookline worker`` on ``metrics_listen``.

``hookline serve`` and ``hookline api`` answer ``/metrics`` on the API's own port
(``api.build``); a worker alone has no HTTP server, so with ``HOOKLINE_METRICS_LISTEN`` it runs
this one, a small aiohttp application in the worker's event loop (aiohttp is already there for
deliveries, and in the loop it needs no thread and stops with the process). Without the setting
a worker-only process serves no metrics.

Under ``hookline worker --processes N`` the supervisor binds the socket once, before forking,
and every child serves on it, as API children share the API's socket: the kernel hands each
scrape to one child, and each answers for all of them (``Metrics.render`` in multiprocess mode).
The supervisor itself serves nothing: it forks again whenever a child dies, and a process that
forks must have no other thread or event loop running.
"""

from __future__ import annotations

import asyncio
import socket

import structlog
from aiohttp import web

from hookline.metrics import Metrics

log = structlog.get_logger("hookline.metrics")

PATH = "/metrics"


def bind(listen: str) -> socket.socket:
    """A listening socket on ``listen`` (host:port), or ``SystemExit`` with one line."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"hookline: cannot serve metrics on {listen} (HOOKLINE_METRICS_LISTEN): {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def application(metrics: Metrics) -> web.Application:
    async def scrape(_: web.Request) -> web.Response:
        # In multiprocess mode this reads every child's files: off the event loop.
        body, content_type = await asyncio.to_thread(metrics.render)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get(PATH, scrape)
    return app


async def serve(metrics: Metrics, sock: socket.socket, stop: asyncio.Event) -> None:
    """Answer ``GET /metrics`` on ``sock`` until ``stop`` is set."""
    runner = web.AppRunner(application(metrics), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        log.info("metrics_listening", url=f"http://{_host(host)}:{port}{PATH}")
        await stop.wait()
    finally:
        await runner.cleanup()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
