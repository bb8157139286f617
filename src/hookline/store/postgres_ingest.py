"""Message ingest for the PostgreSQL store: group commit of ``create_message`` calls.

Why: each message is one transaction, and a commit waits for the WAL flush. Calls that arrive
while ``LANES`` transactions are already running queue up, and the next free lane commits all
of them in one transaction (whatever queued meanwhile, at most ``MAX_BATCH``), so under load
one flush is shared by a batch; an idle store commits a lone message at once, with no window.

Each caller still gets its own answer. A message's checks come before its writes, so one that
is refused (``Conflict`` for a duplicate eventId or a taken-over idempotency key,
``NotFound`` for a deleted app) has written nothing and its neighbours commit: the app row is
locked ``FOR KEY SHARE`` before anything is written (it cannot be deleted until the commit),
the owner's key ``FOR UPDATE`` (it cannot be taken over), and the message is inserted with
``ON CONFLICT DO NOTHING`` in the same statement as its tasks (``message_insert``), so a
duplicate inserts neither. An error none of that foresaw aborts the transaction: then the
batch is run again one message per transaction, so the error reaches only its own caller. A
commit that fails, or a database that cannot be reached, fails every caller of the batch with
``errors.Unavailable``; none of them was acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hookline import errors
from hookline.models import Message, routes_to
from hookline.store import observer, queries
from hookline.store import postgres_rows as rows
from hookline.store.base import KEY_TAKEN_OVER, IdempotentWrite

Q = queries.load("postgres")
LANES = 4  # transactions committing messages at once (each holds a pooled connection)
MAX_BATCH = 256  # messages per transaction: bounds how long one batch holds its locks
Routes = list[tuple[str, bool, tuple[str, ...] | None, tuple[str, ...] | None]]


@dataclass(slots=True)
class _Write:
    message: Message
    idempotency: IdempotentWrite | None
    future: asyncio.Future[int] = field(repr=False)


class Ingest:
    """Queues ``create_message`` calls and commits them in batches (see the module docstring).

    ``transaction(fn)`` runs ``fn(conn)`` in one transaction on a pooled connection and raises
    ``errors.Unavailable`` when the database cannot be reached or the commit fails.
    """

    def __init__(
        self,
        transaction: Callable[..., Awaitable[Any]],
        origin: str,
        lanes: int = LANES,
    ) -> None:
        self._transaction = transaction
        self._origin = origin  # the NOTIFY payload: this store's own wake-up ignores it
        self._lanes = max(1, lanes)
        self._queue: list[_Write] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions committed (for the benchmark notes and tests)

    async def create(self, message: Message, idempotency: IdempotentWrite | None) -> int:
        """Commit one message with its tasks (and answer); return how many tasks it got."""
        loop = asyncio.get_running_loop()
        write = _Write(message, idempotency, loop.create_future())
        self._queue.append(write)
        if len(self._running) < self._lanes:
            task = loop.create_task(self._lane())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        # A cancelled caller cancels only its own wait: its batch goes on, and _answer skips
        # a future that is already done.
        return await write.future

    async def _lane(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            await self._commit(batch)

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            results = await self._transaction(
                lambda c: _write_all(c, batch, self._origin),
                operation=observer.INGEST,
                items=_written,
            )
        except errors.Unavailable as exc:
            for write in batch:
                _answer(write, exc)
            return
        except Exception as exc:
            # not foreseen by the checks (the transaction was rolled back): one at a time, so
            # the error reaches its own caller only
            if len(batch) == 1:
                _answer(batch[0], exc)
                return
            for write in batch:
                await self._commit([write])
            return
        except BaseException as exc:  # cancelled: the callers must still hear something
            for write in batch:
                _answer(write, errors.Unavailable("The write was interrupted; retry later"))
            raise exc
        self.batches += 1
        for write, result in zip(batch, results, strict=True):
            _answer(write, result)


def _written(results: list[int | Exception]) -> int:
    """Messages a batch committed: the refused ones wrote nothing."""
    return sum(1 for r in results if not isinstance(r, Exception))


def _answer(write: _Write, result: object) -> None:
    if write.future.done():
        return
    if isinstance(result, BaseException):
        write.future.set_exception(result)
    else:
        assert isinstance(result, int)
        write.future.set_result(result)


async def _write_all(c: Any, batch: list[_Write], origin: str) -> list[int | Exception]:
    """Every message of ``batch`` in connection ``c``'s transaction; refusals are results."""
    routes: dict[str, Routes | None] = {}  # per app, read (and the app locked) once per batch
    results: list[int | Exception] = []
    for write in batch:
        try:
            results.append(await _write_one(c, write, routes))
        except (errors.Conflict, errors.NotFound) as exc:
            results.append(exc)  # refused before it wrote anything
    if any(isinstance(r, int) and r > 0 for r in results):
        await c.execute(Q["notify"], origin)  # delivered to listeners on commit
    return results


async def _write_one(c: Any, write: _Write, routes: dict[str, Routes | None]) -> int:
    m, idempotency = write.message, write.idempotency
    if m.app_id not in routes:
        found = await c.fetch(Q["app_routes"], m.app_id)
        routes[m.app_id] = (
            None
            if not found
            else [
                (
                    r[0],
                    bool(r[1]),
                    None if r[2] is None else rows.str_tuple.decode(r[2]),
                    None if r[3] is None else rows.str_tuple.decode(r[3]),
                )
                for r in found
                if r[0] is not None
            ]
        )
    endpoints = routes[m.app_id]
    if endpoints is None:  # the app was deleted (by another process, while cached there)
        raise errors.NotFound()
    if (
        idempotency is not None
        and idempotency.owner is not None
        and await c.fetchval(Q["idempotency_owned"], idempotency.key, idempotency.owner) is None
    ):
        raise errors.Conflict(KEY_TAKEN_OVER)
    targets = [
        endpoint_id
        for endpoint_id, disabled, types, chans in endpoints
        if routes_to(disabled, types, chans, m.event_type, m.channels)
    ]
    inserted, tasks = await c.fetchrow(
        Q["message_insert"],
        m.id,
        m.app_id,
        m.event_type,
        m.event_id,
        rows.opt_json(m.channels),
        m.payload,
        m.created_at,
        rows.opt_json(m.tags),
        m.deliver_at,
        m.first_due_at,
        targets,
        m.expires_at,
        m.trace_context,
    )
    if not inserted:
        raise errors.Conflict(f"A message with eventId {m.event_id!r} already exists")
    if idempotency is not None:
        response = idempotency.response
        if idempotency.owner is None:
            await c.execute(
                Q["idempotency_finish"],
                idempotency.key,
                response.status,
                response.body,
                idempotency.expires_at,
            )
        else:  # the key is locked since idempotency_owned: this update cannot miss
            await c.execute(
                Q["idempotency_finish_owned"],
                idempotency.key,
                response.status,
                response.body,
                idempotency.expires_at,
                idempotency.owner,
            )
    return int(tasks)
