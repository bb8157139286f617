"""Retention: the background cleaner, and the batch loop ``hookline prune`` shares with it.

Two kinds of deletion, both in bounded batches (``BATCH_SIZE`` messages, one transaction each):

- **Payload expiry** (Svix's ``payloadRetentionPeriod``): once a message's ``expires_at`` has
  passed, its payload and its attempts' response bodies are deleted; the message, its
  deliveries and its attempts stay, and the API shows the payload as ``{"expired":true}``.
- **Message pruning** (``message_retention_days``, and ``hookline prune --older-than``): the
  whole message goes, with its deliveries and attempts.

Neither takes anything from under a delivery that is still pending or being sent: such a
message keeps its payload (and its row) until its deliveries end, which the retry schedule
bounds (about 28 hours by default). Retention is a promise about stored data, but dropping a
delivery that was accepted would break the one promise hookline makes first, that an
acknowledged message is delivered or its failure recorded (docs/retention.md).

Between batches the cleaner pauses at least ``MIN_PAUSE_SECONDS`` and at least as long as the
batch took, so it holds SQLite's one write lock at most about half the time while it catches
up, and ingest and claims queue behind one batch at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from hookline.settings import Settings
from hookline.store.base import PruneBatch, Store

log = structlog.get_logger("hookline.retention")
BATCH_SIZE = 1000  # messages per transaction
MIN_PAUSE_SECONDS = 0.05  # between two batches, at the least
ERROR_PAUSE_SECONDS = 10.0  # after a failed pass, before the next one
DAY_SECONDS = 86400.0

Nap = Callable[[float], Awaitable[bool]]  # sleep up to this long; True: stop was asked for


@dataclass(frozen=True, slots=True)
class Totals:
    """What a run of batches did (one pass of the cleaner, or one ``prune``)."""

    done: int = 0  # payloads expired, or messages deleted
    skipped: int = 0  # left for a delivery still pending or being sent
    batches: int = 0
    interrupted: bool = False  # stopped between two batches before the end

    def add(self, done: int, skipped: int) -> Totals:
        return Totals(self.done + done, self.skipped + skipped, self.batches + 1)


def pause_after(batch_seconds: float) -> float:
    """How long to wait after a batch that took ``batch_seconds``."""
    return max(MIN_PAUSE_SECONDS, batch_seconds)


async def prune(
    store: Store,
    before: float,
    *,
    include_pending: bool = False,
    batch_size: int = BATCH_SIZE,
    nap: Nap,
    on_batch: Callable[[PruneBatch], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> Totals:
    """Delete the messages created before ``before``, batch by batch, until none is left.

    ``nap`` waits between batches and says whether to stop (the current batch has committed
    by then, so a stop leaves nothing half-done). ``on_batch`` sees every batch (a progress bar).
    """
    totals, after = Totals(), None
    while True:
        started = monotonic()
        batch = await store.prune_messages(
            before, store.now(), batch_size, include_pending=include_pending, after=after
        )
        totals = totals.add(batch.deleted, batch.skipped)
        if on_batch is not None:
            on_batch(batch)
        if batch.cursor is None:
            return totals
        after = batch.cursor
        if await nap(pause_after(monotonic() - started)):
            return Totals(totals.done, totals.skipped, totals.batches, interrupted=True)


async def expire(
    store: Store,
    default_days: float,
    *,
    batch_size: int = BATCH_SIZE,
    nap: Nap,
    monotonic: Callable[[], float] = time.monotonic,
) -> Totals:
    """Delete every payload whose time has come (see ``Store.expire_payloads``)."""
    totals, after = Totals(), None
    while True:
        started = monotonic()
        batch = await store.expire_payloads(
            store.now(), default_days * DAY_SECONDS, batch_size, after=after
        )
        totals = totals.add(batch.expired, batch.skipped)
        if batch.cursor is None:
            return totals
        after = batch.cursor
        if await nap(pause_after(monotonic() - started)):
            return Totals(totals.done, totals.skipped, totals.batches, interrupted=True)


class Cleaner:
    """The background task: a pass every ``interval`` seconds, expiring then pruning."""

    def __init__(
        self,
        store: Store,
        *,
        payload_retention_days: float,
        message_retention_days: float | None = None,
        interval: float = 60.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._store = store
        self._payload_days = payload_retention_days
        self._message_days = message_retention_days
        self._interval = interval
        self._batch_size = batch_size

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Cleaner:
        return cls(
            store,
            payload_retention_days=settings.payload_retention_days,
            message_retention_days=settings.message_retention_days,
            interval=settings.retention_interval,
        )

    async def sweep(self, nap: Nap) -> tuple[Totals, Totals]:
        """One pass: expire what is due, then prune what is old enough; what each did."""
        started = time.monotonic()
        expired = await expire(
            self._store, self._payload_days, batch_size=self._batch_size, nap=nap
        )
        pruned = Totals()
        if self._message_days is not None and not expired.interrupted:
            before = self._store.now() - self._message_days * DAY_SECONDS
            pruned = await prune(self._store, before, batch_size=self._batch_size, nap=nap)
        if expired.done or expired.skipped or pruned.done or pruned.skipped:
            log.info(
                "retention_pass",
                payloads_expired=expired.done,
                payloads_kept_for_deliveries=expired.skipped,
                messages_pruned=pruned.done,
                messages_kept_for_deliveries=pruned.skipped,
                batches=expired.batches + pruned.batches,
                took_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return expired, pruned

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set; a failed pass is logged and tried again."""

        async def nap(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            return stop.is_set()

        while not stop.is_set():
            wait = self._interval
            try:
                await self.sweep(nap)
            except Exception:
                log.exception("retention_failed")
                wait = max(wait, ERROR_PAUSE_SECONDS)
            await nap(wait)
