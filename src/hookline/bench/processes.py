"""The benchmark's child processes: the receiver and hookline itself, measured from outside.

Every child is started with a log file in the run's temporary directory, measured with psutil
(CPU seconds, resident memory), and stopped with SIGTERM, then SIGKILL if it does not exit in
time, so a run never leaves a process behind. A child that supervises processes of its own
(``hookline api --processes N``) is measured with all of them: its CPU is the whole tree's,
its peak memory that of its largest process.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 20.0


class ChildFailed(RuntimeError):
    """A child did not start or died; the message quotes the end of its log."""


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One subprocess with its log; ``cpu_seconds`` and ``peak_rss`` read it from outside."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str],
        *,
        capture_stdout: bool = False,
        processes: int = 1,
    ) -> None:
        self.name = name
        self.processes = processes  # serving processes (a supervisor's children, or itself)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603  (our own interpreter and module)
            argv,
            stdout=subprocess.PIPE if capture_stdout else self._log,
            stderr=self._log,
            env=dict(env),
        )
        self._ps = psutil.Process(self.proc.pid)
        self._rss_seen = 0  # the largest resident set of any one process of the tree

    def read_line(self, timeout: float = START_TIMEOUT_SECONDS) -> str:
        """The first line the child prints on stdout (the receiver prints its port)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ChildFailed(f"{self.name} exited early:\n{self.log_tail()}")
            # wait with a timeout: a bare readline() would block for ever on a silent child
            readable, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if readable:
                line = self.proc.stdout.readline()
                if line:
                    return line.decode().strip()
        raise ChildFailed(f"{self.name} printed nothing in {timeout:g} s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ChildFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the child and every process under it, exited ones included."""
        return tree_cpu_seconds(self._ps)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.Error:
            return [self._ps]

    def sample_rss(self) -> int:
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                self._rss_seen = max(self._rss_seen, proc.memory_info().rss)
        return self._rss_seen

    def peak_rss(self) -> int:
        """The kernel's high-water mark (VmHWM) of the tree's largest process, else samples."""
        peak = self._rss_seen
        for proc in self._tree():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except OSError:
                peak = max(peak, self.sample_rss())
        return peak

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def tree_cpu_seconds(root: psutil.Process) -> float:
    """User + system CPU seconds of ``root`` and its descendants, exited ones included.

    A process's ``children_user`` / ``children_system`` hold the CPU of its children that exited
    and were reaped, which are no longer in the tree; live descendants are read one by one. A
    child reaped between the two reads can be missed once; CPU is never counted twice.
    """
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = [root]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def start_receiver(workdir: Path) -> tuple[Child, int]:
    argv = [sys.executable, "-m", "hookline.bench.receiver", "0"]
    child = Child("receiver", argv, workdir / "receiver.log", os.environ, capture_stdout=True)
    try:
        return child, int(child.read_line())
    except BaseException:
        child.stop()
        raise


def hookline_env(
    database_url: str,
    port: int,
    token: str,
    *,
    request_timeout: float,
    retry_schedule: str | None,
    worker_concurrency: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, str]:
    """A clean environment: the caller's HOOKLINE_* variables must not change the benchmark.

    ``extra`` holds ``name=value`` settings given on the bench's command line (``--setting``),
    applied last.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update(
        HOOKLINE_DATABASE_URL=database_url,
        HOOKLINE_LISTEN=f"{HOST}:{port}",
        HOOKLINE_ADMIN_TOKEN=token,
        HOOKLINE_ALLOWED_SUBNETS="127.0.0.0/8",  # the receiver is on loopback
        HOOKLINE_LOG_LEVEL="warning",
        HOOKLINE_REQUEST_TIMEOUT=f"{request_timeout:g}",
    )
    if retry_schedule is not None:
        env["HOOKLINE_RETRY_SCHEDULE"] = retry_schedule
    if worker_concurrency is not None:
        env["HOOKLINE_WORKER_CONCURRENCY"] = str(worker_concurrency)
    for item in extra:
        name, _, value = item.partition("=")
        env[f"HOOKLINE_{name.strip().upper()}"] = value.strip()
    return env


def start_hookline(
    role: str, workdir: Path, env: Mapping[str, str], *, processes: int = 1
) -> Child:
    """``hookline serve|api|worker [--processes N]`` as a child process (readiness is the
    caller's to check)."""
    argv = [sys.executable, "-m", "hookline", role]
    if processes > 1:
        argv += ["--processes", str(processes)]
    log_path = workdir / f"hookline-{role}.log"
    return Child(f"hookline {role}", argv, log_path, env, processes=processes)
