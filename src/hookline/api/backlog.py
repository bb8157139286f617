"""The due backlog, measured once a second: ingest backpressure, readiness and the gauges.

Backpressure: refuse new messages (429) while the due backlog is over its limit. Counting the
backlog costs a range read over the due index, so it is not done per request: a background task
re-reads it every ``CHECK_SECONDS`` (counting no further than the limit), and ingest only looks
at a flag. The flag goes up above ``max_backlog`` and down again below ``RESUME_SHARE`` of it,
so that a backlog hovering at the limit does not flap, and each change is logged once. Other
API calls are never refused for backlog.

Age: the same measurement reads when the oldest due task fell due (``next_due_at``, one index
seek), for the ``backlog_oldest_age`` gauge and readiness. That task may wait by design (an
endpoint's rate limit, its open circuit, its concurrency), so once it is older than
``ready_max_backlog_age`` readiness looks at what nothing explains instead, the oldest stalled
work (``Store.stalled_since``), read at most every ``STALLED_CHECK_SECONDS``: one slow or
throttled endpoint must not take every healthy instance out of its load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from hookline import errors, worker
from hookline.metrics import Metrics
from hookline.store.base import Store

CHECK_SECONDS = 1.0  # how often the backlog is counted
RESUME_SHARE = 0.9  # ingest resumes once the backlog is below this share of the limit
RETRY_AFTER_SECONDS = 5  # what a refused client is told to wait
# stalled_since reads every endpoint with waiting work: while the oldest due task stays old
# (a throttled endpoint's backlog can, for hours), read it this often, not every second
STALLED_CHECK_SECONDS = 5.0
# Stalled work is looked for once the oldest due task is older than this (or than the readiness
# limit, if that is smaller): the stall SLI (docs/slo.md) reads it at 300 s, readiness at its own.
STALLED_LOOK_AFTER_SECONDS = 60.0
# A measurement that hangs (a table lock, a dead connection) is given up after this long, so
# the loop goes on publishing what it can and retries.
MEASURE_TIMEOUT_SECONDS = 10.0

log = structlog.get_logger("hookline.api")


class Backlog:
    """``clock`` is the store's (due times); ``monotonic`` times the measurements themselves."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        max_backlog: int,
        *,
        max_age: float = 0.0,
        lease_seconds: float = 25.0,
        metrics: Metrics | None = None,
        heartbeat: worker.Heartbeat | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self.limit = max_backlog
        self.max_age = max_age  # ready_max_backlog_age; 0: stalled work is never looked for
        self._lease_seconds = lease_seconds
        self._metrics = metrics
        self._heartbeat = heartbeat
        self._monotonic = monotonic
        self.active = False
        self.due = 0
        self.oldest_age = 0.0  # seconds the oldest due task has waited; 0 when none is due
        # seconds the oldest stalled work has waited, read only while oldest_age > max_age
        # (None otherwise: no older than oldest_age, so within the limit)
        self.stalled_age: float | None = None
        self.measured_at: float | None = None  # monotonic; None before the first measurement
        self._stalled_read_at: float | None = None  # monotonic

    def check(self) -> None:
        """Raise ``TooManyRequests`` while backpressure is on (called by message creation)."""
        if self.active:
            raise errors.TooManyRequests(
                f"hookline has more than {self.limit} deliveries waiting; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    async def measure(self) -> None:
        """Count the due backlog and its age once, switch backpressure, set the gauges."""
        now = self._clock()
        self.due = await self._store.count_due(now, self.limit + 1)
        first = await self._store.next_due_at()
        self.oldest_age = max(0.0, now - first) if first is not None else 0.0
        await self._measure_stalled(now)
        self.measured_at = self._monotonic()
        if not self.active and self.due > self.limit:
            self.active = True
            log.warning("backpressure_on", backlog_due=self.due, max_backlog=self.limit)
        elif self.active and self.due < self.limit * RESUME_SHARE:
            self.active = False
            log.info("backpressure_off", backlog_due=self.due, max_backlog=self.limit)
        if self._metrics is not None:
            self._metrics.backlog_due.set(self.due)
            self._metrics.backlog_oldest_age.set(self.oldest_age)
            self._metrics.backlog_stalled_age.set(self.stalled_age or 0.0)
            self._metrics.backpressure_active.set(1 if self.active else 0)

    def measured_within(self, seconds: float) -> bool:
        """Whether the last measurement is at most ``seconds`` old."""
        return self.measured_at is not None and self._monotonic() - self.measured_at <= seconds

    async def _measure_stalled(self, now: float) -> None:
        look_after = STALLED_LOOK_AFTER_SECONDS
        if self.max_age > 0:
            look_after = min(look_after, self.max_age)
        if self.oldest_age <= look_after:
            self.stalled_age = self._stalled_read_at = None
            return
        read_at = self._monotonic()
        if self._stalled_read_at is not None and read_at - self._stalled_read_at < (
            STALLED_CHECK_SECONDS
        ):
            return
        since = await self._store.stalled_since(now, self._lease_seconds)
        self.stalled_age = max(0.0, now - since) if since is not None else 0.0
        self._stalled_read_at = read_at

    def publish_heartbeat(self) -> None:
        """Set the heartbeat-age gauge from this process's worker loop, if it runs one."""
        if self._metrics is None or self._heartbeat is None:
            return
        age = self._heartbeat.age()
        if age is not None:
            self._metrics.worker_heartbeat_age.set(age)

    async def run(self, stop: asyncio.Event) -> None:
        # The worker's throttle for a failing store: one line per new error, then a count every
        # 10 s, and checks backing off, rather than a traceback a second through an outage.
        failures = worker.StoreErrors("backlog_check_failed")
        while not stop.is_set():
            self.publish_heartbeat()  # first: a failing store must not freeze the gauge
            pause = CHECK_SECONDS
            try:
                try:
                    await asyncio.wait_for(self.measure(), MEASURE_TIMEOUT_SECONDS)
                except TimeoutError:  # a wait, not a bug: one line, no traceback
                    raise errors.Unavailable(
                        f"the backlog could not be read within {MEASURE_TIMEOUT_SECONDS:g} s"
                    ) from None
                failures.succeeded()
            except Exception as exc:
                # The store is failing; its writes answer 503 on their own meanwhile.
                pause = max(pause, failures.failed(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
