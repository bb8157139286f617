"""Run ``hookline serve`` (or ``api`` / ``worker``) as a subprocess, the way an operator does.

::

    server = HooklineServer(tmp_path / "hl")
    server.start()          # returns once GET /api/v1/health answers 204
    ...                     # talk to server.base_url with server.token
    server.stop()           # SIGTERM: graceful drain, returns the exit status
    server.start()          # again, on the same database and port
    server.kill()           # SIGKILL: a crash

The split topology is several processes on one database directory, sharing the token::

    api = HooklineServer(data_dir, command="api").start()
    worker = HooklineServer(data_dir, command="worker", token=api.token, name="worker-1").start()

A worker listens on no port: ``start`` returns once it logged ``worker_started``.

Settings come from ``HOOKLINE_*`` variables only: inherited ones are dropped so a developer's
shell cannot change what the tests run against. Output goes to a log file next to the database
(one per process); failures quote its tail.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from hookline.bench.processes import free_port  # a loopback port free a moment ago

HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 15.0  # a graceful stop waits for in-flight deliveries (request timeout)
HEALTH_POLL_SECONDS = 0.05
COMMANDS = ("serve", "api", "worker")
WORKER_STARTED = '"worker_started"'  # the event of the log line Worker.run writes first
LOG_TAIL_CHARS = 6000

# Fast, loopback-friendly delivery: two retries 0.2 s apart (+/-20 % jitter) and a short timeout.
TEST_SETTINGS: Mapping[str, str] = {
    "HOOKLINE_RETRY_SCHEDULE": "0.2,0.2",
    "HOOKLINE_ALLOWED_SUBNETS": "127.0.0.0/8",  # the egress guard refuses loopback otherwise
    "HOOKLINE_REQUEST_TIMEOUT": "2",
    "HOOKLINE_LOG_LEVEL": "debug",  # every attempt in the log a failing test quotes
}


class ServerFailed(RuntimeError):
    """The server did not start, died, or did not stop; the message quotes its output."""


class HooklineServer:
    """One ``hookline <command>`` process on a free loopback port and a database in ``data_dir``.

    ``command`` is ``serve`` (API and worker), ``api`` or ``worker``; processes meant to share a
    database get the same ``data_dir`` and ``token``. ``name`` names the log file
    (``<name>.log``; default ``hookline`` for ``serve``, else ``hookline-<command>``), so give
    two workers on one directory different names. ``env`` overrides or adds ``HOOKLINE_*``
    settings on top of ``TEST_SETTINGS``; an empty value restores hookline's own default.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        command: str = "serve",
        name: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, not {command!r}")
        self.command = command
        self.args = tuple(args)  # after the command, e.g. ("--processes", "3")
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = data_dir / "hookline.db"
        if name is None:
            name = "hookline" if command == "serve" else f"hookline-{command}"
        self.log_path = data_dir / f"{name}.log"
        self.token = token or "hl_test_" + secrets.token_urlsafe(24)
        self.port = free_port()  # a worker binds nothing, but the setting must parse
        self._env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
        env.update(TEST_SETTINGS)
        env.update(
            {
                "HOOKLINE_DATABASE_URL": f"sqlite:///{self.db_path.resolve()}",
                "HOOKLINE_LISTEN": f"{HOST}:{self.port}",
                "HOOKLINE_ADMIN_TOKEN": self.token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self._env)
        return env

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> HooklineServer:
        """Start the process and wait until it is healthy (a worker: running), else raise."""
        if self.running:
            raise ServerFailed("hookline is already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- test harness: start #{self.starts} ---\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # The child keeps its own copy of the descriptor; ours closes with this block.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "hookline", self.command, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.data_dir,
            )
        try:
            if self.command == "worker":
                self._wait_worker_started(timeout)
            else:
                self._wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(base_url=self.base_url, timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ServerFailed(
                        f"hookline exited with status {code} during startup\n{self.output_tail()}"
                    )
                try:
                    response = client.get("/api/v1/health")
                    if response.status_code == 204:
                        return
                    last_error = f"health answered {response.status_code}: {response.text}"
                except httpx.TransportError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    raise ServerFailed(
                        f"hookline was not healthy on {self.base_url} within {timeout:g} s "
                        f"({last_error})\n{self.output_tail()}"
                    )
                time.sleep(HEALTH_POLL_SECONDS)

    def _wait_worker_started(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while WORKER_STARTED not in self.output():
            code = self._proc.poll()
            if code is not None:
                raise ServerFailed(
                    f"hookline worker exited with status {code} during startup\n"
                    f"{self.output_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"hookline worker did not log worker_started within {timeout:g} s\n"
                    f"{self.output_tail()}"
                )
            time.sleep(HEALTH_POLL_SECONDS)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM and wait for the graceful drain; return the exit status (None if not running).

        Kills the process and raises ``ServerFailed`` when it does not exit within ``timeout``.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerFailed(
                    f"hookline {self.command} did not stop within {timeout:g} s of SIGTERM\n"
                    f"{self.output_tail()}"
                ) from None
        self._proc = None
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (a crash) and reap; return the exit status (None if not running)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None
        return proc.returncode

    def assert_running(self) -> None:
        """Raise ``ServerFailed`` with the output when the process has died."""
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise ServerFailed(
                f"hookline {self.command} is not running (exit status {code})\n{self.output_tail()}"
            )

    def __enter__(self) -> HooklineServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    # output ------------------------------------------------------------------------------------
    def output(self, *, since_start: bool = True) -> str:
        """What the process wrote (since the latest ``start`` unless told otherwise)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset if since_start else 0)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def output_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        text = self.output()
        if len(text) > chars:
            text = "[...]" + text[-chars:]
        return (
            f"--- hookline {self.command} output ({self.log_path}) ---\n{text}--- end of output ---"
        )
