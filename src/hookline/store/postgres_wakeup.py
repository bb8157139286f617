"""Wake-ups across processes for the PostgreSQL store: LISTEN/NOTIFY on one connection.

Every transaction that adds due work (ingest, resend, recover, release) sends
``pg_notify('hookline_work', origin)``, which PostgreSQL delivers to listeners when it commits.
``PgWakeup`` listens on a connection of its own (not a pooled one: a pooled connection goes
back to other uses) and wakes the worker of this process. It starts listening on the first
``wait``, so API-only processes open no listening connection. When that connection drops it
reconnects with backoff (``BACKOFF_SECONDS`` doubling to ``BACKOFF_MAX_SECONDS``) and wakes
the worker once, since notifications sent meanwhile are lost. A lost notification only adds
latency: the worker still polls ``next_due_at`` every ``worker.IDLE_POLL_SECONDS``.

A notification this store sent itself is ignored (its payload is the store's ``origin``): the
API of this process already calls ``notify`` after its commit, which wakes the worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from hookline.store import postgres_rows as rows
from hookline.wakeup import LocalWakeup

CHANNEL = "hookline_work"  # keep in step with the notify query in sql/postgres/queries.sql
BACKOFF_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
KEEPALIVE_SECONDS = 30.0  # how often an idle listening connection is checked
log = structlog.get_logger("hookline.postgres")


class PgWakeup:
    """A ``wakeup.Wakeup`` fed by this process's ``notify`` and by other processes' NOTIFY."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], origin: str) -> None:
        self._connect = connect  # a new, unpooled connection
        self._origin = origin
        self._local = LocalWakeup()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the LISTEN is in place (tests wait on it)

    def notify(self) -> None:
        self._local.notify()

    async def wait(self, seconds: float) -> bool:
        self.start()
        return await self._local.wait(seconds)

    def start(self) -> None:
        """Begin listening (idempotent); ``wait`` calls it."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="pg-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload != self._origin:
            self._local.notify()

    async def _listen(self) -> None:
        pause = BACKOFF_SECONDS
        failing = False
        while True:
            conn = None
            try:
                conn = await self._connect()
                lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def ended(_conn: Any, lost: asyncio.Future[None] = lost) -> None:
                    if not lost.done():
                        lost.set_result(None)

                conn.add_termination_listener(ended)
                await conn.add_listener(CHANNEL, self._heard)
                self.listening.set()
                if failing:
                    log.info("postgres_listen_recovered")
                    self._local.notify()  # notifications sent while we were away are lost
                failing = False
                pause = BACKOFF_SECONDS
                while not lost.done():
                    # a dropped socket ends `lost` at once; a silent network needs a probe
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(lost), KEEPALIVE_SECONDS)
                    if not lost.done():
                        await conn.execute("SELECT 1", timeout=KEEPALIVE_SECONDS)
            except rows.UNREACHABLE as exc:
                if not failing:
                    log.warning("postgres_listen_lost", error=str(exc))
                failing = True
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=1))
            if not failing:  # the connection ended without an error we saw
                log.warning("postgres_listen_lost", error="connection closed")
                failing = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, BACKOFF_MAX_SECONDS)
