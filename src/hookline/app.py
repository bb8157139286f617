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
from dataclasses import dataclass

import aiohttp
import structlog
import uvicorn
from starlette.types import ASGIApp

from hookline import api, delivery, egress, errors
from hookline import operational as operational_
from hookline import store as store_
from hookline.api import http
from hookline.api.backlog import Backlog
from hookline.api.services import Services
from hookline.cache import AppCache, TokenCache
from hookline.settings import Settings
from hookline.store.base import Store
from hookline.wakeup import Wakeup
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
    backlog: Backlog
    operational: operational_.OperationalWebhooks | None = None

    @classmethod
    def build(cls, settings: Settings) -> Hookline:
        store = store_.from_url(settings.database_url)
        return cls(
            settings=settings,
            store=store,
            egress_policy=egress.EgressPolicy(allowed=settings.allowed_subnets),
            tokens=TokenCache(store, http.hash_token),
            apps=AppCache(store),
            backlog=Backlog(store, store.now, settings.max_backlog),
        )

    @property
    def wakeup(self) -> Wakeup:
        return self.store.wakeup()

    def services(self) -> Services:
        """What the API handlers get (they never see this root)."""
        return Services(
            store=self.store,
            clock=self.store.now,
            wakeup=self.wakeup,
            tokens=self.tokens,
            apps=self.apps,
            egress_policy=self.egress_policy,
            max_payload_bytes=self.settings.max_payload_bytes,
            backlog=self.backlog,
            on_endpoint_change=(
                None if self.operational is None else self.operational.endpoint_changed
            ),
        )

    def worker(self, session: aiohttp.ClientSession) -> Worker:
        return Worker(
            self.store,
            session,
            self.settings,
            egress_policy=self.egress_policy,
            wakeup=self.wakeup,
            on_outcomes=None if self.operational is None else self.operational.after_outcomes,
        )


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Hookline]:
    """Open the store (applying migrations) for the life of the block."""
    hl = Hookline.build(settings)
    await hl.store.open()
    try:
        await hl.store.migrate()
        hl.operational = await operational_.OperationalWebhooks.configure(
            hl.store, settings, hl.wakeup
        )
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
    return api.build(hl.services())


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
    """Run the chosen roles until SIGINT/SIGTERM, then stop within the shutdown grace.

    On the first signal the API stops accepting connections and finishes the requests in
    flight; the worker stops claiming and gives its deliveries ``shutdown_grace`` seconds,
    then releases the rest. A second signal exits at once (see ``_install_stop_signals``).
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
            timeout_graceful_shutdown=max(1, int(hl.settings.shutdown_grace)),
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
        announce = asyncio.create_task(_announce(server, on_listening), name="announce")
        tasks.append(asyncio.create_task(hl.backlog.run(stop), name="backlog"))
    if worker_role:
        session = delivery.new_session(hl.egress_policy, hl.settings.worker_concurrency)
        tasks.append(asyncio.create_task(hl.worker(session).run(stop), name="worker"))
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
    """First SIGINT/SIGTERM: graceful stop. Second: exit at once.

    Exiting without cleanup is safe for the store: every acknowledged write is committed, and
    SQLite's journal makes an interrupted transaction roll back on the next open (as after
    SIGKILL). Deliveries in flight are then claimed again when their leases run out.
    """
    import os
    import signal

    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info("shutdown_started", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
