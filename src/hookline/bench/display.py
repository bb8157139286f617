"""Live progress (rich): one bar per phase with messages sent, delivered and the delivery rate."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

Show = Callable[[int, int], None]


class Display:
    def __init__(self, console: Console, *, enabled: bool) -> None:
        self.console = console
        self._enabled = enabled

    @contextlib.contextmanager
    def phase(self, label: str, total: int) -> Iterator[Show]:
        """A bar for one phase; the caller reports (sent, delivered) as often as it likes."""
        progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            TextColumn("sent {task.fields[sent]:>9,}"),
            TextColumn("delivered {task.completed:>9,.0f}/{task.total:,.0f}"),
            TextColumn("{task.fields[rate]:>8,.0f} msg/s"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self._enabled,
            transient=False,
        )
        last = [time.monotonic(), 0]
        with progress:
            task = progress.add_task(label, total=total, sent=0, rate=0.0)

            def show(sent: int, delivered: int) -> None:
                now = time.monotonic()
                elapsed = now - last[0]
                rate = (delivered - last[1]) / elapsed if elapsed > 0 else 0.0
                last[:] = [now, delivered]
                progress.update(task, completed=delivered, sent=sent, rate=rate)

            yield show
