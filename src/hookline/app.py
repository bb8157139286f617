"""The one composition root: settings → store → egress policy → API and/or worker.

``hookline serve`` runs both roles in one process (the embedded mode); ``hookline api`` and
``hookline worker`` run one role each against a shared database.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import structlog
import uvicorn
from starlette.types import ASGIApp

from hookline import api, delivery, egress, errors
from hookline import store as store_
from hookline.api import http
from hookline.cache import AppCache, TokenCache
from hookline.settings import Settings
from hookline.store.base import Store
from hookline.worker import Worker

DEFAULT_ORG = "default"
PURGE_INTERVAL_SECONDS = 3600.0  # how often expired idempotency answers are deleted

log = structlog.get_logger("hookline")


@dataclass
class Hookline:
    """Everything a run mode needs, built once from settings."""

    settings: Settings
    store: Store
    egress_policy: egress.EgressPolicy
    tokens: TokenCache
    apps: AppCache
    # set by the API after an ingest commits, so an in-process worker wakes at once
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, settings: Settings) -> Hookline:
        store = store_.from_url(settings.database_url)
        return cls(
            settings=settings,
            store=store,
            egress_policy=egress.EgressPolicy(allowed=settings.allowed_subnets),
            tokens=TokenCache(store, http.hash_token),
            apps=AppCache(store),
        )


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Hookline]:
    """Open the store (applying migrations) for the life of the block."""
    hl = Hookline.build(settings)
    await hl.store.open()
    try:
        await hl.store.migrate()
        yield hl
    finally:
        await hl.store.close()


async def create_token(hl: Hookline, org: str = DEFAULT_ORG, name: str = "api") -> str:
    """Create and return a new API token; only its hash is stored."""
    token = "hl_" + secrets.token_urlsafe(32)
    owner = await hl.store.ensure_org(org, time.time())
    await hl.store.create_token(owner.id, name, http.hash_token(token), time.time())
    return token


async def bootstrap_token(hl: Hookline) -> str | None:
    """Seed ``HOOKLINE_ADMIN_TOKEN``, or on first start create a token; return a new one."""
    seeded = hl.settings.admin_token
    if seeded:
        if await hl.store.find_token(http.hash_token(seeded)) is None:
            owner = await hl.store.ensure_org(DEFAULT_ORG, time.time())
            # `hookline api` and `hookline worker` starting together both get here on a new
            # database; the one that commits second finds the token there, which is fine.
            with contextlib.suppress(errors.Conflict):
                await hl.store.create_token(owner.id, "admin", http.hash_token(seeded), time.time())
        return None
    if await hl.store.count_tokens() == 0:
        return await create_token(hl, name="first")
    return None


def asgi(hl: Hookline) -> ASGIApp:
    """The ASGI application of the API role."""
    return api.build(hl)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # hookline installs its own handlers: uvicorn's re-raise the signal after the API
        # stops, which would kill the process before the worker has drained.
        yield


async def run(
    hl: Hookline,
    *,
    api_role: bool,
    worker_role: bool,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Run the chosen roles until SIGINT/SIGTERM, then drain deliveries and return.

    ``on_listening`` is called once the API socket is bound (not before, so a port clash is
    reported instead of a misleading "listening" line).
    """
    stop = asyncio.Event()
    _install_stop_signals(stop)
    tasks: list[asyncio.Task[None]] = []
    server: _Server | None = None
    session = None
    announce: asyncio.Task[None] | None = None
    if api_role:
        sock = _bind(hl.settings)  # fail fast and clearly on a port clash
        config = uvicorn.Config(
            asgi(hl),
            host=hl.settings.host,
            port=hl.settings.port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # client addresses are not used; the middleware costs per request
            lifespan="off",
            loop="none",
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
        announce = asyncio.create_task(_announce(server, on_listening), name="announce")
    if worker_role:
        session = delivery.new_session(hl.egress_policy, hl.settings.worker_concurrency)
        tasks.append(asyncio.create_task(Worker(hl, session).run(stop), name="worker"))
    tasks.append(asyncio.create_task(_housekeeping(hl, stop), name="housekeeping"))
    stopping = asyncio.create_task(stop.wait())
    try:
        _done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if server is not None:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        stop.set()
        stopping.cancel()
        if announce is not None:
            announce.cancel()
        if session is not None:
            await session.close()


def _bind(settings: Settings) -> socket.socket:
    host, port = settings.host, settings.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"hookline: cannot listen on {settings.listen}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


async def _announce(server: uvicorn.Server, on_listening: Callable[[], None] | None) -> None:
    while not server.started and not server.should_exit:  # noqa: ASYNC110  (uvicorn has no event)
        await asyncio.sleep(0.02)
    if server.started and on_listening is not None:
        on_listening()


async def _housekeeping(hl: Hookline, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await hl.store.purge_expired(time.time())
        except Exception:
            log.exception("purge_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PURGE_INTERVAL_SECONDS)


def _install_stop_signals(stop: asyncio.Event) -> None:
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
