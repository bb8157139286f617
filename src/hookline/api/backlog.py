"""Backpressure on ingest: refuse new messages (429) while the due backlog is over its limit.

Counting the backlog costs a range read over the due index, so it is not done per request: a
background task re-reads it every ``CHECK_SECONDS`` (counting no further than the limit), and
ingest only looks at a flag. The flag goes up above ``max_backlog`` and down again below
``RESUME_SHARE`` of it, so that a backlog hovering at the limit does not flap, and each change
is logged once. Other API calls are never refused for backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from hookline import errors, worker
from hookline.store.base import Store

CHECK_SECONDS = 1.0  # how often the backlog is counted
RESUME_SHARE = 0.9  # ingest resumes once the backlog is below this share of the limit
RETRY_AFTER_SECONDS = 5  # what a refused client is told to wait

log = structlog.get_logger("hookline.api")


class Backlog:
    def __init__(self, store: Store, clock: Callable[[], float], max_backlog: int) -> None:
        self._store = store
        self._clock = clock
        self.limit = max_backlog
        self.active = False
        self.due = 0

    def check(self) -> None:
        """Raise ``TooManyRequests`` while backpressure is on (called by message creation)."""
        if self.active:
            raise errors.TooManyRequests(
                f"hookline has more than {self.limit} deliveries waiting; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )

    async def measure(self) -> None:
        """Count the due backlog once and switch backpressure on or off."""
        self.due = await self._store.count_due(self._clock(), self.limit + 1)
        if not self.active and self.due > self.limit:
            self.active = True
            log.warning("backpressure_on", backlog_due=self.due, max_backlog=self.limit)
        elif self.active and self.due < self.limit * RESUME_SHARE:
            self.active = False
            log.info("backpressure_off", backlog_due=self.due, max_backlog=self.limit)

    async def run(self, stop: asyncio.Event) -> None:
        # The worker's throttle for a failing store: one line per new error, then a count every
        # 10 s, and checks backing off, rather than a traceback a second through an outage.
        failures = worker.StoreErrors("backlog_check_failed")
        while not stop.is_set():
            pause = CHECK_SECONDS
            try:
                await self.measure()
                failures.succeeded()
            except Exception as exc:
                # The store is failing; its writes answer 503 on their own meanwhile.
                pause = max(pause, failures.failed(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
