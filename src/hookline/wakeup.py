"""The wake-up seam: how a worker learns that new work was committed.

In one process (``hookline serve``) the API calls ``notify`` after each commit and the worker
wakes at once. A worker in another process is not reached by ``notify``; it finds new work by
polling the store when ``wait`` times out. A store backed by a database server can offer a
``Wakeup`` that notifies across processes (PostgreSQL LISTEN/NOTIFY); the worker does not
change.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Wakeup(Protocol):
    def notify(self) -> None:
        """Say that work was committed (cheap; called on every ingest)."""
        ...

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a notification; True if one came (and consume it)."""
        ...


class LocalWakeup:
    """An ``asyncio.Event`` with a timed wait that costs one timer handle per call."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        # A timer handle rather than ``asyncio.wait_for``: that creates a task per call, and an
        # idle worker under moderate load calls this hundreds of times a second.
        event = self._event
        if event.is_set():
            event.clear()
            return True
        rang = False

        def ring() -> None:
            nonlocal rang
            rang = True
            event.set()

        alarm = asyncio.get_running_loop().call_later(seconds, ring)
        try:
            await event.wait()
        finally:
            alarm.cancel()
        event.clear()
        return not rang
