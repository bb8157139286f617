"""The delivery worker: claim due tasks in batches, deliver them concurrently, record outcomes.

A claim is a lease (``Settings.lease_seconds``, longer than any request may take). If the process
dies, the lease runs out and any worker claims the task again, so delivery is at-least-once.
On a graceful stop the worker stops claiming, lets in-flight deliveries finish (bounded by the
request timeout) and records them before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import structlog

from hookline import delivery
from hookline.models import Claim, Completion, MessageStatus

if TYPE_CHECKING:
    from hookline.app import Hookline

CLAIM_BATCH = 256  # tasks per claim transaction
IDLE_POLL_SECONDS = 0.02  # how often an idle worker looks for work another process queued
COALESCE_SECONDS = 0.002  # wait this long to batch claims and outcomes (adds ≤ 2 ms latency)
ERROR_BACKOFF_SECONDS = 1.0  # pause after the store failed, so a broken disk is not hammered

log = structlog.get_logger("hookline.worker")


class Worker:
    """Runs deliveries for one process; ``run`` returns after ``stop`` is set and work drained."""

    def __init__(
        self,
        hl: Hookline,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._hl = hl
        self._session = session
        self._clock = clock
        self._rand = rand
        self._inflight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # set when enough deliveries finished to claim a batch
        # Claim again only once a worthwhile batch fits: refilling one slot at a time would cost
        # a write transaction per delivery when the worker is saturated.
        concurrency = hl.settings.worker_concurrency
        self._refill_at = max(1, min(CLAIM_BATCH, concurrency) // 4)
        self._completed: list[Completion] = []
        self._recorder: asyncio.Task[None] | None = None
        self._debug = hl.settings.log_level.lower() == "debug"

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._hl.settings.worker_concurrency - len(self._inflight) >= self._refill_at:
            self._room.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._hl.settings
        log.info("worker_started", concurrency=settings.worker_concurrency)
        concurrency = settings.worker_concurrency
        wake = self._hl.wake
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: wake.set())  # an idle wait ends on stop too
        while not stop.is_set():
            free = concurrency - len(self._inflight)
            if free < self._refill_at:
                self._room.clear()
                await self._room.wait()
                continue
            wake.clear()  # before claiming: any commit from here on sets it again
            try:
                claims = await self._hl.store.claim_due(
                    self._clock(), min(free, CLAIM_BATCH), settings.lease_seconds
                )
            except Exception:
                log.exception("claim_failed")
                await _wait(stop, ERROR_BACKOFF_SECONDS)
                continue
            for claim in claims:
                task = asyncio.create_task(self._deliver(claim))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
            if len(claims) < min(free, CLAIM_BATCH):
                await self._idle(stop)
        stopping.cancel()
        if self._inflight:
            log.info("worker_draining", inflight=len(self._inflight))
            await asyncio.wait(self._inflight)
        while self._recorder is not None:
            await self._recorder
        log.info("worker_stopped")

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait until new work is signalled, the next task falls due, or the poll interval.

        This process's own ingest sets ``wake`` at once; no read is needed then. Only when the
        wait times out does the worker read ``next_due_at`` (retries falling due, another
        process's ingest), and only when something is due does it go back to ``claim_due``, a
        write transaction. Another process's ingest is noticed within ``IDLE_POLL_SECONDS``.
        """
        timeout = IDLE_POLL_SECONDS
        while not stop.is_set():
            if await self._woken_within(timeout):
                # Let a few more messages land before claiming: one claim transaction per
                # message would cost more CPU than the messages themselves at moderate rates.
                await asyncio.sleep(COALESCE_SECONDS)
                return
            try:
                due = await self._hl.store.next_due_at()
            except Exception:
                log.exception("next_due_failed")
                due = None
            now = self._clock()
            if due is not None and due <= now:
                return
            timeout = IDLE_POLL_SECONDS if due is None else min(IDLE_POLL_SECONDS, due - now)

    async def _woken_within(self, seconds: float) -> bool:
        """Wait for ``wake`` (set by ingest, and by ``stop``); False if ``seconds`` passed first.

        A timer handle rather than ``asyncio.wait``/``wait_for``: those create tasks and
        callbacks on every call, and an idle worker under moderate load calls this hundreds of
        times a second.
        """
        wake = self._hl.wake
        if wake.is_set():
            return True
        rang = False

        def ring() -> None:
            nonlocal rang
            rang = True
            wake.set()

        alarm = asyncio.get_running_loop().call_later(seconds, ring)
        try:
            await wake.wait()
        finally:
            alarm.cancel()
        if rang:
            wake.clear()
        return not rang

    async def _deliver(self, claim: Claim) -> None:
        settings = self._hl.settings
        try:
            request = delivery.prepare(claim, self._clock())
            response = await delivery.send(
                self._session,
                request,
                timeout_seconds=settings.request_timeout,
                policy=self._hl.egress_policy,
            )
            now = self._clock()
            done = delivery.classify(
                claim,
                request,
                response,
                schedule=settings.retry_schedule,
                now=now,
                rand=self._rand,
            )
        except Exception:
            # The lease will run out and the task be claimed again: at-least-once, never lost.
            log.exception("delivery_failed", msg_id=claim.message.id, endpoint_id=claim.endpoint.id)
            return
        self._record(done)
        if self._debug:
            a = done.attempt
            log.debug(
                "attempt_sent",
                msg_id=a.msg_id,
                endpoint_id=a.endpoint_id,
                attempt_id=a.id,
                status_code=a.response_status_code,
                next_status=MessageStatus(done.next_status).text,
                duration_ms=a.duration_ms,
            )

    def _record(self, done: Completion) -> None:
        """Queue an outcome; one writer task commits whatever queued up, in one call.

        One store call per delivery cost more than the delivery itself at high rates. An
        outcome not yet committed when the process dies is simply delivered again once its
        lease runs out (at-least-once), so batching loses nothing.
        """
        self._completed.append(done)
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._flush_completed())

    async def _flush_completed(self) -> None:
        try:
            await asyncio.sleep(COALESCE_SECONDS)  # gather the outcomes of a whole claim
            while self._completed:
                batch, self._completed = self._completed, []
                try:
                    await self._hl.store.complete(batch, self._clock())
                except Exception:
                    log.exception("record_failed", attempts=len(batch))
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
        finally:
            self._recorder = None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
