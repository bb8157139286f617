"""What the PostgreSQL store promises beyond the shared contract.

Its clock is the server's; other processes' commits wake this one's worker (LISTEN/NOTIFY),
also after the listening connection dropped; a database that cannot be reached answers
``errors.Unavailable`` (503) and writes resume once it is back, also when a shutdown's notice
reached an idle pooled connection (before a statement: 503 and a new connection; after a
COMMIT: the write holds); messages arriving together share transactions (group commit) and
still each get their own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hookline import errors
from hookline.models import Application
from hookline.store import postgres

from .conftest import add_endpoint, make_app, make_message


@pytest.fixture
def url(postgres_url: str) -> str:
    """A fresh, empty database."""
    return postgres_url


@contextlib.asynccontextmanager
async def opened(url: str, **options: object) -> AsyncIterator[postgres.PostgresStore]:
    store = postgres.PostgresStore(url, **options)  # type: ignore[arg-type]
    await store.open()
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


async def app_of(store: postgres.PostgresStore) -> Application:
    org = await store.ensure_org("acme", time.time())
    application = make_app(org.id)
    await store.create_app(application)
    return application


async def database_clock(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    finally:
        await conn.close()


# the clock -------------------------------------------------------------------------------------


async def test_now_is_the_database_clock_even_when_this_hosts_clock_is_off(url: str) -> None:
    # This host's clock runs an hour ahead: leases it wrote would expire early for everyone.
    async with opened(url, local_clock=lambda: time.time() + 3600) as store:
        assert abs(store.now() - await database_clock(url)) < 0.5
        await store.sync_clock()  # the periodic refresh keeps following the server
        assert abs(store.now() - await database_clock(url)) < 0.5


# wake-ups --------------------------------------------------------------------------------------


async def listening(store: postgres.PostgresStore) -> None:
    wakeup = store.wakeup()
    await wakeup.wait(0)  # the first wait starts the listener
    assert isinstance(wakeup, postgres.postgres_wakeup.PgWakeup)
    await asyncio.wait_for(wakeup.listening.wait(), 5)


async def test_a_commit_in_another_process_wakes_this_worker(url: str) -> None:
    async with opened(url) as api, opened(url) as worker:
        application = await app_of(api)
        await add_endpoint(api, application.id)
        await listening(worker)
        await listening(api)
        started = time.monotonic()
        await api.create_message(make_message(application.id))
        assert await worker.wakeup().wait(5)
        assert time.monotonic() - started < 1
        # the API process's own worker is woken by its API's notify(), not by its echo
        assert not await api.wakeup().wait(0.2)


async def test_the_listener_reconnects_after_its_connection_dropped(url: str) -> None:
    async with opened(url) as api, opened(url) as worker:
        application = await app_of(api)
        await add_endpoint(api, application.id)
        await listening(worker)
        conn = await asyncpg.connect(url)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        finally:
            await conn.close()
        assert killed == 1
        # back after the backoff; notifications sent meanwhile are lost, so it wakes once
        assert await worker.wakeup().wait(5)
        await listening(worker)
        await api.create_message(make_message(application.id))
        assert await worker.wakeup().wait(5)


# an unreachable database -----------------------------------------------------------------------


async def test_an_unreachable_database_is_one_clear_error_at_open() -> None:
    store = postgres.PostgresStore("postgresql://hookline:secret@127.0.0.1:1/hookline")
    with pytest.raises(errors.Unavailable) as refused:
        await store.open()
    assert refused.value.detail == (
        "cannot connect to PostgreSQL at 127.0.0.1:1/hookline: "
        "connection refused (is PostgreSQL running there?)"
    )
    await store.close()


COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for a COMMIT


class Proxy:
    """A TCP proxy to the database that the test can cut, as a network or a restart would."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._clients: set[asyncio.StreamWriter] = set()  # the store's side of each link
        self._after_commit: bytes | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.transport.abort()
        await self._server.wait_closed()

    def say_to_clients(self, data: bytes) -> None:
        """Send ``data`` to the store on every open link, as if the server had sent it."""
        for writer in list(self._clients):
            writer.write(data)

    def say_after_next_commit(self, data: bytes) -> None:
        """Send ``data`` to the store right behind the server's answer to its next COMMIT."""
        self._after_commit = data

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links.update((writer, up_writer))
        self._clients.add(writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if dst is writer and self._after_commit and COMMITTED in data:
                        data, self._after_commit = data + self._after_commit, None
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links.difference_update((writer, up_writer))
        self._clients.discard(writer)


@contextlib.asynccontextmanager
async def proxied(
    url: str, **options: object
) -> AsyncIterator[tuple[Proxy, postgres.PostgresStore]]:
    """A store opened through a ``Proxy`` to the database at ``url``; the proxy is cut after."""
    parts = urllib.parse.urlsplit(url)
    assert parts.port is not None
    proxy = Proxy(parts.port)
    await proxy.start()
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    try:
        async with opened(via_proxy, **options) as store:
            yield proxy, store
    finally:
        await proxy.cut()


async def test_writes_while_the_database_is_gone_answer_503_and_resume_after(url: str) -> None:
    async with proxied(url) as (proxy, store):
        application = await app_of(store)
        await proxy.cut()
        with pytest.raises(errors.Unavailable) as refused:
            await store.create_message(make_message(application.id))
        assert refused.value.headers() == {"Retry-After": "1"}
        with pytest.raises(errors.Unavailable):
            await store.check_writable()  # the health check answers 503 meanwhile

        await proxy.start()  # the database is back: the pool reconnects by itself
        message = make_message(application.id)
        await store.create_message(message)
        await store.check_writable()
        assert await store.get_message(application.id, message.id) == message


def shutdown_notice() -> bytes:
    """The ErrorResponse a fast shutdown sends to each idle session before it closes them."""
    fields = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


async def test_a_connection_the_server_is_shutting_down_is_a_503_then_replaced(url: str) -> None:
    # A shutdown tells idle pooled connections FATAL 57P01 before it closes their sockets; a
    # statement sent in between finds asyncpg mid-error (InternalClientError, not a
    # disconnect). It must read as "unreachable", and the connection must not be used again.
    async with proxied(url, pool_size=1) as (proxy, store):
        application = await app_of(store)
        proxy.say_to_clients(shutdown_notice())
        await asyncio.sleep(0.1)  # read by the idle connection; its socket stays open
        with pytest.raises(errors.Unavailable) as refused:
            await store.create_message(make_message(application.id))
        assert refused.value.headers() == {"Retry-After": "1"}

        message = make_message(application.id)
        await asyncio.wait_for(store.create_message(message), timeout=10)  # a new connection
        assert await store.get_message(application.id, message.id) == message


async def test_a_commit_the_server_confirmed_holds_when_the_connection_dies_after(
    url: str,
) -> None:
    # The same shutdown, read just after the COMMIT's answer: the message is stored, so its
    # caller hears success, although the pool cannot reset the connection afterwards.
    async with proxied(url, pool_size=1) as (proxy, store):
        application = await app_of(store)
        proxy.say_after_next_commit(shutdown_notice())
        message = make_message(application.id)
        await store.create_message(message)
        assert await store.get_message(application.id, message.id) == message


# group commit ----------------------------------------------------------------------------------


async def test_messages_arriving_together_share_commits_and_keep_their_own_answers(
    url: str,
) -> None:
    async with opened(url, pool_size=3) as store:
        application = await app_of(store)
        gone = await app_of(store)
        await add_endpoint(store, application.id)
        await store.delete_app(gone.org_id, gone.id)
        good = [make_message(application.id) for _ in range(60)]
        twins = [make_message(application.id, event_id="evt-1") for _ in range(2)]
        orphan = make_message(gone.id)
        before = store._ingest.batches

        answers = await asyncio.gather(
            *(store.create_message(m) for m in [*good[:30], *twins, orphan, *good[30:]]),
            return_exceptions=True,
        )

        assert answers.count(1) == 61  # 60 messages and one of the twins, one task each
        assert sum(isinstance(a, errors.Conflict) for a in answers) == 1
        assert sum(isinstance(a, errors.NotFound) for a in answers) == 1
        assert store._ingest.batches - before < 20  # 63 messages in a few transactions
        for message in good:
            assert await store.get_message(application.id, message.id) == message
        assert await store.get_message(gone.id, orphan.id) is None
