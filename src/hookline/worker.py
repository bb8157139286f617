"""The delivery worker: claim due tasks in batches, deliver them concurrently, record outcomes.

A claim is a lease (``Settings.lease_seconds``, longer than any request may take). If the process
dies, the lease runs out and any worker claims the task again, so delivery is at-least-once.
The store hands out only tasks that may go now (``ClaimPolicy``: free slots overall and per
endpoint; the store adds rate limits and circuits), so nothing claimed waits in memory while its
lease ticks. On a graceful stop the worker stops claiming, gives in-flight deliveries up to
``shutdown_grace`` seconds, then cancels the rest and releases them for immediate re-claim.

Faults: a task that cannot be prepared (say, an undecodable stored secret) is recorded as a
failed attempt and retried on the schedule like any other failure. A batch of outcomes the store
would not take is kept and written again with backoff while the tasks' leases last (after that
another worker may deliver them again, so it is dropped, with one log line). A failing store is
called again with backoff, and the same error is logged once per ``REPEAT_LOG_SECONDS`` with a
count, not once per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import aiohttp
import structlog

from hookline import circuit, delivery, delivery_report, egress, errors, ids
from hookline.metrics import Metrics
from hookline.models import (
    Claim,
    ClaimPolicy,
    Completion,
    HealthChange,
    HealthEvent,
    Release,
)
from hookline.settings import Settings
from hookline.store.base import Store
from hookline.tracing import Tracing
from hookline.wakeup import Wakeup

CLAIM_BATCH = 256  # tasks per claim transaction
IDLE_POLL_SECONDS = 0.02  # how often an idle worker looks for work another process queued
# While the oldest due work must wait (rate limit, open circuit), claim again at most this
# often unless new work is signalled (ingest, or a full endpoint's slot coming free).
HELD_BACK_POLL_SECONDS = 0.05
COALESCE_SECONDS = 0.002  # wait this long to batch claims and outcomes (adds ≤ 2 ms latency)
ERROR_BACKOFF_SECONDS = 1.0  # pause after the store failed, so a broken disk is not hammered
ERROR_BACKOFF_MAX_SECONDS = 8.0  # the pause doubles while the store keeps failing, up to this
REPEAT_LOG_SECONDS = 10.0  # the same store error is logged at most this often (with a count)
# A saturated worker waits for a free slot at most this long before its loop goes round (and
# beats) again: waiting for room is work, not a wedge.
ROOM_WAIT_SECONDS = 1.0
# When readiness calls a worker loop stuck (seconds without a round), unless the setting
# ready_max_worker_stall says otherwise: 3 x the longest single wait of a healthy loop, a store
# call bounded by its own timeouts (SQLite's 10 s busy timeout, PostgreSQL's 10 s pool
# acquire); a failed call's backoff (ERROR_BACKOFF_MAX_SECONDS) added to it still stays well
# below.
HEARTBEAT_STALE_SECONDS = 30.0
# How often the endpoint gauges (open circuits, disabled endpoints) are read from the store.
ENDPOINT_SUMMARY_SECONDS = 5.0

log = structlog.get_logger("hookline.worker")

# Called with each committed batch of outcomes and the endpoint state changes it caused.
OutcomeHook = Callable[[Sequence[Completion], Sequence[HealthEvent]], Awaitable[None]]


class Heartbeat:
    """When a worker loop last went round (``time.monotonic``), for readiness and the gauge.

    A plain timestamp, readable from any thread: a loop that is blocked, or awaits something
    that never comes, stops beating while whoever reads this still can.
    """

    __slots__ = ("_clock", "at")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at: float | None = None  # None until a worker loop runs in this process

    def beat(self) -> None:
        self.at = self._clock()

    def age(self) -> float | None:
        """Seconds since the last beat; None when no worker loop has run here."""
        return None if self.at is None else self._clock() - self.at


class Worker:
    """Runs deliveries for one process; ``run`` returns after ``stop`` is set and work drained."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        egress_policy: egress.EgressPolicy,
        wakeup: Wakeup,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        on_outcomes: OutcomeHook | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.heartbeat = heartbeat or Heartbeat()
        self._store = store
        self._session = session
        self._settings = settings
        self._egress = egress_policy
        self._wakeup = wakeup
        self._clock = clock or store.now
        self._rand = rand
        self._on_outcomes = on_outcomes
        self._metrics = metrics
        self._tracing = tracing
        self._report = delivery_report.DeliveryReport(metrics)
        self._circuit = circuit.CircuitPolicy(
            failures=settings.circuit_failures,
            cooldown=settings.circuit_cooldown,
            cooldown_max=settings.circuit_cooldown_max,
            disable_after=settings.endpoint_disable_after,
        )
        self._inflight: dict[asyncio.Task[Completion | None], Claim] = {}
        self._per_endpoint: dict[str, int] = {}  # endpoint id -> deliveries in flight
        self._room = asyncio.Event()  # set when enough deliveries finished to claim a batch
        # Claim again only once a worthwhile batch fits: refilling one slot at a time would cost
        # a write transaction per delivery when the worker is saturated.
        self._refill_at = max(1, min(CLAIM_BATCH, settings.worker_concurrency) // 4)
        # outcomes not yet committed, each with the end of its claim's lease (store clock)
        self._completed: list[tuple[Completion, float]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._last_claim_at = 0.0
        # Deferrals are counted for tasks that fell due after this (the previous claim): each
        # task is so counted once however many claims it waits through. From the start, not
        # before: a restart must not count again the backlog it found (a spike in the rate).
        self._deferred_since = 0.0
        # The context of run(), without any delivery's ids: the recorder starts from it.
        self._context = contextvars.copy_context()
        self._summary_errors = StoreErrors("endpoint_summary_failed")
        self._stopping_at: float | None = None  # store clock when stop was seen, for the drain
        self._claim_errors = StoreErrors("claim_failed")
        self._due_errors = StoreErrors("next_due_failed")
        self._record_errors = StoreErrors("record_failed")

    def _wake_for_stop(self, _: object) -> None:
        # an idle wait and a wait for room both end on stop
        self._stopping_at = self._clock()
        self._wakeup.notify()
        self._room.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _finished(self, task: asyncio.Task[Completion | None]) -> None:
        claim = self._inflight.pop(task, None)
        if claim is not None:
            endpoint_id = claim.endpoint.id
            held = self._per_endpoint.get(endpoint_id, 1)
            if held > 1:
                self._per_endpoint[endpoint_id] = held - 1
            else:
                self._per_endpoint.pop(endpoint_id, None)
            self._report.in_flight(len(self._inflight))
            if held >= self._settings.endpoint_concurrency:
                # The endpoint was full, so the last claim may have held its work back: claim
                # again now rather than at the next held-back poll, or a busy endpoint with a
                # fast receiver would be served one batch of slots per poll.
                self._wakeup.notify()
        if self._settings.worker_concurrency - len(self._inflight) >= self._refill_at:
            self._room.set()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._settings
        log.info(
            "worker_started",
            concurrency=settings.worker_concurrency,
            endpoint_concurrency=settings.endpoint_concurrency,
        )
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(self._wake_for_stop)
        self._context = contextvars.copy_context()
        self._deferred_since = self._clock()
        gauges = (
            asyncio.create_task(self._watch_endpoints(stop), name="endpoint-gauges")
            if self._metrics is not None
            else None
        )
        while not stop.is_set():
            self.heartbeat.beat()
            free = settings.worker_concurrency - len(self._inflight)
            if free < self._refill_at:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ROOM_WAIT_SECONDS):
                        await self._room.wait()
                continue
            policy = ClaimPolicy(
                limit=min(free, CLAIM_BATCH),
                endpoint_slots=settings.endpoint_concurrency,
                in_flight=dict(self._per_endpoint),
                deferred_since=self._deferred_since if self._report.counts_deferrals else None,
            )
            self._last_claim_at = self._clock()
            try:
                claims = await self._store.claim_due(
                    self._last_claim_at, policy, settings.lease_seconds
                )
            except Exception as exc:
                await _wait(stop, self._claim_errors.failed(exc))
                continue
            self._claim_errors.succeeded()
            self._deferred_since = self._last_claim_at
            if policy.deferred:
                self._report.deferred(policy.deferred)
            lease_ends = self._last_claim_at + settings.lease_seconds
            for claim in claims:
                task = asyncio.create_task(self._deliver(claim, lease_ends))
                self._inflight[task] = claim
                endpoint_id = claim.endpoint.id
                self._per_endpoint[endpoint_id] = self._per_endpoint.get(endpoint_id, 0) + 1
                task.add_done_callback(self._finished)
            if claims:
                self._report.in_flight(len(self._inflight))
            if len(claims) < policy.limit:
                await self._idle(stop)
        stopping.cancel()
        if gauges is not None:
            gauges.cancel()
            await asyncio.wait([gauges])
        await self._drain(stop)
        log.info("worker_stopped")

    async def _watch_endpoints(self, stop: asyncio.Event) -> None:
        """Refresh the endpoint gauges every ``ENDPOINT_SUMMARY_SECONDS`` (two small reads)."""
        while not stop.is_set():
            try:
                summary = await self._store.endpoint_summary()
            except Exception as exc:
                await _wait(stop, self._summary_errors.failed(exc))
                continue
            self._summary_errors.succeeded()
            self._report.endpoints(summary)
            await _wait(stop, ENDPOINT_SUMMARY_SECONDS)

    async def _drain(self, stop: asyncio.Event) -> None:
        """Give in-flight deliveries the grace period, then cancel and release the rest."""
        if self._inflight:
            grace = self._settings.shutdown_grace
            log.info("worker_draining", inflight=len(self._inflight), grace_seconds=grace)
            _, pending = await asyncio.wait(list(self._inflight), timeout=grace)
            if pending:
                claims = {task: self._inflight.get(task) for task in pending}
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                now = self._clock()
                releases = [
                    Release(
                        msg_id=c.message.id, endpoint_id=c.endpoint.id, lease=c.lease, due_at=now
                    )
                    for task, c in claims.items()
                    if c is not None and task.cancelled()
                ]
                try:
                    released = await self._store.release(releases, now)
                except Exception:
                    log.exception("release_failed", deliveries=len(releases))
                else:
                    log.info("worker_released", deliveries=released)
        while self._recorder is not None:
            await self._recorder

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait until new work is signalled, the next task falls due, or the poll interval.

        This process's own ingest notifies at once; no read is needed then. Only when the wait
        times out does the worker read ``next_due_at`` (retries falling due, another process's
        ingest), and only when something is due does it go back to ``claim_due``, a write
        transaction. Another process's ingest is noticed within ``IDLE_POLL_SECONDS``. Due work
        that the last claim held back (its endpoints may not send yet) is looked at again every
        ``HELD_BACK_POLL_SECONDS``.
        """
        timeout = IDLE_POLL_SECONDS
        while not stop.is_set():
            self.heartbeat.beat()
            if await self._wakeup.wait(timeout):
                # Let a few more messages land before claiming: one claim transaction per
                # message would cost more CPU than the messages themselves at moderate rates.
                await asyncio.sleep(COALESCE_SECONDS)
                return
            try:
                due = await self._store.next_due_at()
            except Exception as exc:
                # not the poll interval: a broken store would be asked (and logged) 50 times a
                # second; a notify from ingest meanwhile still ends the next wait at once
                await _wait(stop, self._due_errors.failed(exc))
                timeout = IDLE_POLL_SECONDS
                continue
            self._due_errors.succeeded()
            now = self._clock()
            if due is not None and due <= now:
                wait_more = self._last_claim_at + HELD_BACK_POLL_SECONDS - now
                if due > self._last_claim_at or wait_more <= 0:
                    return
                timeout = wait_more
                continue
            timeout = IDLE_POLL_SECONDS if due is None else min(IDLE_POLL_SECONDS, due - now)

    async def _deliver(
        self, claim: Claim, lease_ends: float, trace: Mapping[str, str] | None = None
    ) -> Completion | None:
        """Deliver one claim; returns the outcome it queued (None: none, the lease runs out).

        With tracing on it runs again inside the attempt's span, ``trace`` being the span's
        headers for the receiver (``hookline.tracing``).
        """
        if self._tracing is not None and trace is None:
            deliver = functools.partial(self._deliver, claim, lease_ends)
            return await self._tracing.attempt(claim, deliver)
        settings = self._settings
        attempt_id = ids.new(ids.ATTEMPT)
        # Every line logged during this delivery carries its ids. Bound without unbinding: a
        # delivery runs as a task of its own, in a copy of run()'s context that ends with it.
        structlog.contextvars.bind_contextvars(
            msg_id=claim.message.id,
            endpoint_id=claim.endpoint.id,
            app_id=claim.message.app_id,
            attempt_id=attempt_id,
        )
        try:
            request = delivery.prepare(claim, self._clock(), trace)
        except Exception as exc:
            # Retried every lease period forever, with nothing recorded, if let through: record
            # a failed attempt instead, so the task follows the schedule and ends.
            problem = (
                str(exc)
                if isinstance(exc, delivery.Unpreparable)
                else f"the request could not be prepared ({type(exc).__name__})"
            )
            log.warning("delivery_unprepared", error=problem)
            unsent = delivery.not_sent(
                claim,
                problem,
                schedule=settings.retry_schedule,
                now=self._clock(),
                rand=self._rand,
                attempt_id=attempt_id,
            )
            self._record(unsent, lease_ends)
            self._report.unprepared(unsent)
            return unsent
        try:
            response = await delivery.send(
                self._session,
                request,
                timeout_seconds=settings.request_timeout,
                policy=self._egress,
            )
            now = self._clock()
            done = delivery.classify(
                claim,
                request,
                response,
                schedule=settings.retry_schedule,
                now=now,
                rand=self._rand,
                attempt_id=attempt_id,
            )
        except asyncio.CancelledError:
            raise  # a shutdown past its grace: the drain releases the task
        except Exception:
            # The lease will run out and the task be claimed again: at-least-once, never lost.
            log.exception("delivery_failed")
            return None
        self._record(done, lease_ends)
        self._report.attempt(claim, done, response)
        return done

    def _record(self, done: Completion, lease_ends: float) -> Completion:
        """Queue an outcome (returned); one writer task commits whatever queued up, in one call.

        One store call per delivery cost more than the delivery itself at high rates. An
        outcome not yet committed when the process dies is simply delivered again once its
        lease runs out (at-least-once), so batching loses nothing. The queue holds at most one
        outcome per delivery in flight, so it is bounded by ``worker_concurrency``, plus, while
        the store refuses them, the outcomes of the leases still running.
        """
        self._completed.append((done, lease_ends))
        if self._recorder is None:
            # started from run()'s context, not this delivery's: its lines are about a batch
            self._recorder = asyncio.create_task(
                self._flush_completed(), context=self._context.copy()
            )
        return done

    async def _flush_completed(self) -> None:
        try:
            await asyncio.sleep(COALESCE_SECONDS)  # gather the outcomes of a whole claim
            while self._completed:
                pending, self._completed = self._completed, []
                batch = [done for done, _ in pending]
                try:
                    events = await self._store.complete(batch, self._clock(), self._circuit)
                except Exception as exc:
                    delay = self._record_errors.failed(exc, attempts=len(batch))
                    # Keep what can still be written before its lease ends: dropped, its attempt
                    # would be lost and the task delivered again.
                    self._completed = self._keep(pending, self._clock() + delay) + self._completed
                    if self._completed:
                        await asyncio.sleep(delay)
                    continue
                self._record_errors.succeeded()
                _log_changes(batch, events)
                if self._on_outcomes is not None:
                    try:
                        await self._on_outcomes(batch, events)
                    except Exception:
                        log.exception("outcome_hook_failed", attempts=len(batch))
        finally:
            self._recorder = None

    def _keep(
        self, pending: list[tuple[Completion, float]], retry_at: float
    ) -> list[tuple[Completion, float]]:
        """The outcomes worth writing again at ``retry_at``; logs the others, in one line.

        Past its lease a task may be claimed by another worker, whose outcome wins (the store
        fences by lease), and a stopping worker gives the store its grace period, no more.
        """
        limit = float("inf")
        if self._stopping_at is not None:
            limit = self._stopping_at + self._settings.shutdown_grace
        kept = [(done, ends) for done, ends in pending if retry_at < min(ends, limit)]
        if len(kept) < len(pending):
            log.error("record_dropped", attempts=len(pending) - len(kept))
        return kept


class StoreErrors:
    """Backoff and log throttling for one store call that keeps failing (claim, record, ...).

    ``failed`` returns how long to wait before calling again: ``ERROR_BACKOFF_SECONDS``,
    doubling up to ``ERROR_BACKOFF_MAX_SECONDS`` until a call succeeds. A new error is logged
    at once (with its traceback unless the store refused on purpose, ``errors.Unavailable``,
    whose episode the store logged already); the same error again is counted and logged at most
    once per ``REPEAT_LOG_SECONDS`` with ``repeated``, the number of occurrences since the line
    before. A full disk under an idle worker logs a line per 10 s, not 50 tracebacks a second.
    """

    def __init__(self, event: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._event = event
        self._clock = clock
        self._failures = 0  # in a row
        self._last: str | None = None
        self._logged_at = 0.0
        self._repeated = 0  # occurrences of _last not logged yet

    def failed(self, exc: Exception, **fields: object) -> float:
        """Log ``exc`` (or count it) and return the pause before the next call, in seconds."""
        self._failures += 1
        text = (
            str(exc.detail)
            if isinstance(exc, errors.Unavailable)
            else f"{type(exc).__name__}: {exc}"
        )
        now = self._clock()
        if text != self._last:
            self._last, self._logged_at, self._repeated = text, now, 0
            if isinstance(exc, errors.Unavailable):
                log.warning(self._event, error=text, **fields)
            else:
                log.error(self._event, error=text, exc_info=exc, **fields)
        elif now - self._logged_at >= REPEAT_LOG_SECONDS:
            log.warning(self._event, error=text, repeated=self._repeated + 1, **fields)
            self._logged_at, self._repeated = now, 0
        else:
            self._repeated += 1
        return min(
            ERROR_BACKOFF_SECONDS * 2.0 ** min(self._failures - 1, 16), ERROR_BACKOFF_MAX_SECONDS
        )

    def succeeded(self) -> None:
        """The call worked: the backoff starts over, and the next error is logged at once."""
        if self._last is not None and self._repeated:
            log.warning(self._event, error=self._last, repeated=self._repeated)
        self._failures, self._last, self._repeated = 0, None, 0


def _log_changes(batch: Sequence[Completion], events: Sequence[HealthEvent]) -> None:
    """One log event per endpoint state change, with the ids, never one per request.

    The store reports each change once (``complete``): ``circuit_opened``, ``circuit_closed``
    and ``endpoint_disabled``, whose ``reason`` tells a 410 answer (``gone``) from failing
    for ``endpoint_disable_after`` (``failing``).
    """
    if not events:
        return
    apps = {done.attempt.endpoint_id: done.attempt.app_id for done in batch}
    gone = {done.attempt.endpoint_id for done in batch if done.disable_endpoint}
    for event in events:
        emit = log.info if event.change is HealthChange.CIRCUIT_CLOSED else log.warning
        why = {}
        if event.change is HealthChange.DISABLED:
            why["reason"] = "gone" if event.endpoint_id in gone else "failing"
        emit(
            event.change.value,
            endpoint_id=event.endpoint_id,
            app_id=apps.get(event.endpoint_id),
            failures=event.failures,
            failing_since=event.failing_since,
            paused_until=event.paused_until,
            **why,
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
