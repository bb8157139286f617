"""The one composition root: settings → store → egress policy → API and/or worker.

``hookline serve`` runs both roles in one process (the embedded mode); ``hookline api`` and
``hookline worker`` run one role each against a shared database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
import uvicorn
from starlette.types import ASGIApp

from hookline import api, delivery, egress, errors, metrics_server, retention
from hookline import metrics as metrics_
from hookline import operational as operational_
from hookline import store as store_
from hookline import tracing as tracing_
from hookline.api import connection, health, http
from hookline.api.backlog import Backlog
from hookline.api.health import Readiness
from hookline.api.services import Services
from hookline.cache import AppCache, TokenCache
from hookline.settings import POOL_SIZES, Settings
from hookline.store.base import Store
from hookline.wakeup import Wakeup
from hookline.worker import Heartbeat, Worker

DEFAULT_ORG = "default"
# The name of the token seeded from HOOKLINE_ADMIN_TOKEN; reserved, because seeding a different
# value revokes every other token of this name in DEFAULT_ORG (``seed_admin_token``).
ADMIN_TOKEN_NAME = "admin"  # noqa: S105  (a token label, not a secret)
FIRST_TOKEN_NAME = "first"  # noqa: S105  (a token label, not a secret)
PURGE_INTERVAL_SECONDS = 3600.0  # how often expired idempotency answers are deleted
TRACED_ROLES = ("api", "worker", "serve")  # commands (migrate, token ...) make no spans

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
    metrics: metrics_.Metrics | None  # None when metrics are off
    heartbeat: Heartbeat  # the worker loop's; never beats where no worker runs
    readiness: Readiness
    operational: operational_.OperationalWebhooks | None = None
    tracing: tracing_.Tracing | None = None  # None when OTEL_* ask for no traces

    @classmethod
    def build(cls, settings: Settings, role: str = "command") -> Hookline:
        """``role`` (api, worker, serve, command) picks the connection pool's default size."""
        pool = settings.database_pool_size or POOL_SIZES[role]
        metrics = (
            metrics_.Metrics(endpoint_labels=settings.metrics_endpoint_labels)
            if settings.metrics
            else None
        )
        store = store_.from_url(settings.database_url, pool_size=pool, metrics=metrics)
        heartbeat = Heartbeat()
        backlog = Backlog(
            store,
            store.now,
            settings.max_backlog,
            max_age=settings.ready_max_backlog_age,
            lease_seconds=settings.lease_seconds,
            metrics=metrics,
            heartbeat=heartbeat,
        )
        return cls(
            settings=settings,
            store=store,
            egress_policy=egress.EgressPolicy(allowed=settings.allowed_subnets),
            tokens=TokenCache(store, http.hash_token),
            apps=AppCache(store),
            backlog=backlog,
            metrics=metrics,
            heartbeat=heartbeat,
            readiness=Readiness(
                store,
                backlog,
                heartbeat,
                max_backlog_age=settings.ready_max_backlog_age,
                max_worker_stall=settings.ready_max_worker_stall,
            ),
            tracing=tracing_.configure(os.environ) if role in TRACED_ROLES else None,
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
            metrics=self.metrics,
            payload_retention_days=self.settings.payload_retention_days,
            tracing=self.tracing,
            readiness=self.readiness,
        )

    def worker(self, session: aiohttp.ClientSession) -> Worker:
        return Worker(
            self.store,
            session,
            self.settings,
            egress_policy=self.egress_policy,
            wakeup=self.wakeup,
            on_outcomes=None if self.operational is None else self.operational.after_outcomes,
            metrics=self.metrics,
            tracing=self.tracing,
            heartbeat=self.heartbeat,
        )


@contextlib.asynccontextmanager
async def opened(settings: Settings, role: str = "command") -> AsyncIterator[Hookline]:
    """Open the store (applying migrations) for the life of the block; ``role`` as in ``build``.

    A database that cannot be used (a directory, not a SQLite file, read-only, a directory that
    cannot be created) raises ``SystemExit`` with one line naming the setting and the problem.
    """
    hl = Hookline.build(settings, role)
    _refuse_read_only_file(settings)
    try:
        await hl.store.open()
    except (OSError, sqlite3.Error, errors.Unavailable) as exc:
        with contextlib.suppress(Exception):  # release what was opened; the cause is reported
            await hl.store.close()
        raise _database_unusable(settings, exc) from None
    try:
        try:
            await hl.store.migrate()
        except (OSError, sqlite3.Error, errors.Unavailable) as exc:
            raise _database_unusable(settings, exc) from None
        hl.operational = await operational_.OperationalWebhooks.configure(
            hl.store, settings, hl.wakeup
        )
        yield hl
    finally:
        await hl.tokens.drain()  # last-use times queued by API requests
        await hl.store.close()
        if hl.tracing is not None:
            hl.tracing.shutdown()  # the spans still buffered; nothing else runs by now


def _database_unusable(settings: Settings, exc: BaseException | None = None) -> SystemExit:
    """The one line a bad ``database_url`` gets instead of a traceback (None: read-only)."""
    if settings.database_url.startswith(store_.POSTGRES_SCHEMES):
        from hookline.store import postgres

        # the store says what failed (PostgresStore.open, migrate); never the password
        problem = exc.detail if isinstance(exc, errors.HooklineError) else str(exc)
        return SystemExit(
            "hookline: invalid database_url "
            f"(HOOKLINE_DATABASE_URL={postgres.redact(settings.database_url)}): {problem}"
        )
    from hookline.store import sqlite  # only SQLite URLs get here: memory:// cannot fail

    path = sqlite.path_from_url(settings.database_url)
    problem = _READ_ONLY.format(path=path) if exc is None else _database_problem(path, exc)
    return SystemExit(
        f"hookline: invalid database_url (HOOKLINE_DATABASE_URL={settings.database_url}): "
        + problem
    )


_READ_ONLY = "{path} is read-only (hookline writes to it and to its directory)"


def _refuse_read_only_file(settings: Settings) -> None:
    """Refuse an existing database file this process may not write.

    SQLite opens such a file for reading without complaint, and with no migration pending
    nothing would fail until the first API write answered 503.
    """
    if not settings.database_url.startswith("sqlite:"):
        return
    from hookline.store import sqlite

    path = sqlite.path_from_url(settings.database_url)
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        raise _database_unusable(settings)


def _database_problem(path: Path, exc: BaseException) -> str:
    # The writer reports a refused write as Unavailable; the SQLite error is its cause.
    cause = exc.__cause__ if isinstance(exc, errors.Unavailable) and exc.__cause__ else exc
    code = getattr(cause, "sqlite_errorcode", 0) & 0xFF if isinstance(cause, sqlite3.Error) else 0
    if path.is_dir():
        return f"{path} is a directory, not a database file"
    if isinstance(cause, OSError):  # SqliteStore.open creates the missing directories
        blocking = next((p for p in path.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            return f"cannot create the directory {path.parent}: {blocking} is not a directory"
        return f"cannot create the directory {path.parent}: {cause.strerror or cause}"
    if code == sqlite3.SQLITE_NOTADB:
        return f"{path} is not a SQLite database"
    if code == sqlite3.SQLITE_READONLY:
        return _READ_ONLY.format(path=path)
    if code == sqlite3.SQLITE_CANTOPEN:
        if path.exists():
            return f"cannot open {path} for writing: its directory must be writable too (-wal)"
        return f"cannot create {path}: its directory {path.parent} is not writable"
    return f"cannot use {path}: {cause}"


async def create_token(hl: Hookline, org: str = DEFAULT_ORG, name: str = "api") -> str:
    """Create and return a new API token; only its hash is stored."""
    token = "hl_" + secrets.token_urlsafe(32)
    owner = await hl.store.ensure_org(org, time.time())
    await hl.store.create_token(owner.id, name, http.hash_token(token), time.time())
    return token


async def seed_admin_token(hl: Hookline) -> None:
    """Store ``HOOKLINE_ADMIN_TOKEN`` (as token "admin" of org "default") and revoke its forerunner.

    When the seeded value changes, the token seeded before must stop working: every other
    "admin" token of the default org is revoked, after the new one is stored (so there is no
    moment without one). Unsetting the variable revokes nothing: ``hookline token revoke`` does.
    """
    seeded = hl.settings.admin_token
    if not seeded:
        return
    token_hash = http.hash_token(seeded)
    current = await hl.store.find_token(token_hash)
    if current is None:
        owner = await hl.store.ensure_org(DEFAULT_ORG, time.time())
        # `hookline api` and `hookline worker` starting together both get here on a new
        # database; the one that commits second finds the token there, which is fine.
        with contextlib.suppress(errors.Conflict):
            await hl.store.create_token(owner.id, ADMIN_TOKEN_NAME, token_hash, time.time())
        current = await hl.store.find_token(token_hash)
    if current is None:  # revoked by someone else in between: keep what is there
        return
    for info in await hl.store.list_tokens():
        if (
            info.name == ADMIN_TOKEN_NAME
            and info.org_name == DEFAULT_ORG
            and info.id != current.id
            and await hl.store.revoke_token(info.id)
        ):
            log.info("admin_token_replaced", revoked_token_id=info.id, token_id=current.id)


async def first_token(hl: Hookline) -> str | None:
    """Create and return a token when the database has none at all (the first start).

    ``hookline serve`` and ``hookline api`` call this once the API is listening, not before: a
    start that fails (a port clash) then stores no token that nobody was shown.
    """
    if await hl.store.count_tokens() == 0:
        return await create_token(hl, name=FIRST_TOKEN_NAME)
    return None


async def bootstrap_token(hl: Hookline) -> str | None:
    """Seed ``HOOKLINE_ADMIN_TOKEN``, then create a first token if none exists; return that one."""
    await seed_admin_token(hl)
    return await first_token(hl)


def asgi(hl: Hookline) -> ASGIApp:
    """The ASGI application of the API role."""
    return api.build(hl.services(), access_log=hl.settings.access_log)


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
    on_listening: Callable[[], Awaitable[None]] | None = None,
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Run the chosen roles until SIGINT/SIGTERM, then stop within the shutdown grace.

    ``sock`` is a listening socket bound already (``bind_socket``: the supervisor binds once
    for all its API processes); without it the API binds its own. ``metrics_sock`` is the same
    for a worker's ``metrics_listen`` (``metrics_server.bind``).

    On the first signal the API stops accepting connections and finishes the requests in
    flight; the worker stops claiming and gives its deliveries ``shutdown_grace`` seconds,
    then releases the rest. A second signal exits at once (see ``_install_stop_signals``).
    ``on_listening`` is awaited once the API is serving (not before, so a port clash is
    reported instead of a misleading "listening" line, and creates no first token); a stop
    waits for it to finish rather than cutting it off between storing and printing a token.
    """
    listen = hl.settings.metrics_listen
    if api_role and listen:
        log.warning("metrics_listen_unused", metrics_listen=listen, reason="served on the API port")
    elif metrics_sock is None and listen:  # metrics and the health probes
        metrics_sock = metrics_server.bind(listen)  # fail fast and clearly on a port clash
    stop = asyncio.Event()
    _install_stop_signals(stop)
    tasks: list[asyncio.Task[None]] = []
    server: _Server | None = None
    session = None
    announce: asyncio.Task[None] | None = None
    if api_role:
        if sock is None:
            sock = bind_socket(hl.settings)  # fail fast and clearly on a port clash
        config = uvicorn.Config(
            asgi(hl),
            host=hl.settings.host,
            port=hl.settings.port,
            log_level="warning",
            # uvicorn's loggers propagate to the root handler (logs.configure), so its lines
            # come out in the process's log format; its own access log stays off (http_request)
            log_config=None,
            access_log=False,
            proxy_headers=False,  # client addresses are not used; the middleware costs per request
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=max(1, int(hl.settings.shutdown_grace)),
            http=connection.limited(hl.settings.request_read_timeout),  # read deadline, header caps
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="api"))
        announce = asyncio.create_task(_announce(server, on_listening), name="announce")
    if api_role or hl.settings.metrics_listen is not None:
        # Backpressure for ingest; backlog and heartbeat gauges and fresh figures for readiness
        # wherever /metrics or /health/ready is served (a worker: on metrics_listen).
        tasks.append(asyncio.create_task(hl.backlog.run(stop), name="backlog"))
    if worker_role:
        session = delivery.new_session(hl.egress_policy, hl.settings.worker_concurrency)
        tasks.append(asyncio.create_task(hl.worker(session).run(stop), name="worker"))
        # beside the worker, so an API process keeps its event loop for requests; several
        # worker processes share the work (each batch rechecks, PostgreSQL skips locked rows)
        cleaner = retention.Cleaner.from_settings(hl.store, hl.settings)
        tasks.append(asyncio.create_task(cleaner.run(stop), name="retention"))
    if metrics_sock is not None:
        # /health/live and /health/ready beside /metrics: a worker-only process has no API port
        metrics_app = None if hl.metrics is None else metrics_server.application(hl.metrics)
        probes = health.probe_app(hl.readiness, metrics_app)
        serving = metrics_server.serve(probes, metrics_sock, stop)
        tasks.append(asyncio.create_task(serving, name="metrics"))
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
            if server is not None:
                server.should_exit = True  # ends _announce's wait if the API never started
            await announce
        if session is not None:
            await session.close()


def bind_socket(settings: Settings) -> socket.socket:
    """The API's listening socket, or ``SystemExit`` with one line on a port clash."""
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


async def _announce(
    server: uvicorn.Server, on_listening: Callable[[], Awaitable[None]] | None
) -> None:
    while not server.started and not server.should_exit:  # noqa: ASYNC110  (uvicorn has no event)
        await asyncio.sleep(0.02)
    if server.started and on_listening is not None:
        try:
            await on_listening()
        except Exception:  # the API serves on; the next start tries again
            log.exception("on_listening_failed")


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
