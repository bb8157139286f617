"""Pre-fork supervision: ``--processes N`` runs N processes of one role under one command.

One Python process uses one core. ``hookline api --processes N`` binds the listening socket
once, then forks N children that all accept on it (the kernel spreads the connections), as
gunicorn and ``uvicorn --workers`` do; ``hookline worker --processes N`` forks N claimers of one
database. The parent only supervises:

- a child that dies is started again, after a pause that doubles (up to
  ``MAX_RESTART_DELAY_SECONDS``) while children keep dying young, so a broken database does not
  become a crash loop that fills the log;
- SIGTERM or SIGINT is passed on once to every child, which drains as a single process does
  (``app.run``); children still running ``grace`` seconds later are killed. A second signal is
  passed on too, and children exit at once, as a single process does on a second signal.

Children run in their own process group, so Ctrl-C in a terminal reaches them only through the
parent (once, not twice), and they are sent SIGTERM by the kernel if the parent dies (Linux
``PR_SET_PDEATHSIG``), so killing the parent with SIGKILL leaves no orphans serving.

Nothing may run in the parent before the fork that a child could inherit half-done: no event
loop is running and no thread is alive when ``run`` is called. So the parent serves nothing
itself: with metrics on, the children record them in one directory (``metrics``' multiprocess
mode, set up by the caller before ``run``), a dead child's live gauges are dropped from it
(``metrics.process_exited``), and any child's ``/metrics`` answers for all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from hookline import metrics

log = structlog.get_logger("hookline.supervisor")

# A child that lived shorter than this is "dying young": the next restart waits longer.
YOUNG_SECONDS = 10.0
FIRST_RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 30.0
# Beyond the children's own shutdown grace: their API and store need a moment to close.
STOP_MARGIN_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass
class _Child:
    index: int
    pid: int
    started: float = field(default_factory=time.monotonic)


def run(count: int, child: Callable[[int, bool], int], *, grace: float) -> int:
    """Fork ``count`` children running ``child(index, restarted)``; supervise them until stopped.

    ``child`` runs in the forked process and returns its exit status; it never returns into the
    parent's code. ``restarted`` is True when it replaces a child that died. Returns the
    parent's exit status: 0 after a requested stop, else the status of the last child to end.
    """
    supervisor = _Supervisor(count, child, grace)
    return supervisor.loop()


class _Supervisor:
    def __init__(self, count: int, child: Callable[[int, bool], int], grace: float) -> None:
        self._count = count
        self._child = child
        self._grace = grace
        self._children: dict[int, _Child] = {}
        self._signals = 0
        self._delay = FIRST_RESTART_DELAY_SECONDS
        self._parent = os.getpid()

    def loop(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        signal.signal(signal.SIGALRM, self._on_deadline)
        status = 0
        try:
            for index in range(self._count):
                self._start(index)
            while self._children:
                try:
                    pid, wait_status = os.wait()
                except ChildProcessError:  # none left (reaped elsewhere)
                    break
                gone = self._children.pop(pid, None)
                if gone is None:
                    continue
                status = os.waitstatus_to_exitcode(wait_status)
                lived = time.monotonic() - gone.started
                metrics.process_exited(pid)  # its live gauges leave the merged /metrics
                log.info(
                    "process_exited",
                    index=gone.index,
                    pid=pid,
                    status=status,
                    seconds=round(lived, 3),
                )
                if self._signals:
                    continue
                self._delay = (
                    min(self._delay * 2, MAX_RESTART_DELAY_SECONDS)
                    if lived < YOUNG_SECONDS
                    else FIRST_RESTART_DELAY_SECONDS
                )
                log.warning("process_restarting", index=gone.index, after_seconds=self._delay)
                self._pause(self._delay)
                if not self._signals:
                    self._start(gone.index, restarted=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if self._signals else status

    def _start(self, index: int, *, restarted: bool = False) -> None:
        pid = os.fork()
        if pid == 0:  # the child: never returns from here
            status = 1
            try:
                _detach_from_terminal_signals(self._parent)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                    signal.signal(sig, signal.SIG_DFL)
                status = self._child(index, restarted)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
                if exc.code is not None and not isinstance(exc.code, int):
                    os.write(2, f"{exc.code}\n".encode())
            except BaseException:
                log.exception("process_failed", index=index)
            finally:
                os._exit(status)
        self._children[pid] = _Child(index=index, pid=pid)
        log.info("process_started", index=index, pid=pid)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._signals and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        log.info(
            "shutdown_started", signal=signal.Signals(signum).name, children=len(self._children)
        )
        self._forward(signal.SIGTERM)
        if self._signals == 1:
            signal.setitimer(signal.ITIMER_REAL, self._grace + STOP_MARGIN_SECONDS)

    def _on_deadline(self, _signum: int, _frame: object) -> None:
        log.warning("shutdown_forced", children=len(self._children))
        self._forward(signal.SIGKILL)

    def _forward(self, sig: signal.Signals) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _detach_from_terminal_signals(parent: int) -> None:
    """Own process group (Ctrl-C reaches the parent only); SIGTERM when the parent dies."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(name, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(0)
