"""A real PostgreSQL server for the tests: a throwaway cluster, or the developer's own.

::

    cluster = PostgresCluster().start()     # initdb in a temporary directory, then postgres
    name = cluster.create_database("t")     # a fresh, empty database with a unique name
    cluster.url(name)                       # postgresql://postgres@127.0.0.1:<port>/<name>
    cluster.drop_database(name)
    cluster.stop()                          # fast shutdown, then the directory is removed

``server_from_env()`` returns ``PostgresServer(url)`` instead when ``HOOKLINE_TEST_POSTGRES_URL``
names a server the developer runs: databases are created and dropped on it the same way, and it
is never started or stopped. The binaries come from Debian's ``postgresql`` package, which
``scripts/test-deps`` installs; ``find_bindir`` looks for any major version, highest first.

The cluster listens on 127.0.0.1 only, with its unix socket inside the temporary directory, and
trusts every connection: nothing else on the machine can reach it, and it holds only test data.
Postgres refuses to run as root, so under root the directory is handed to the ``postgres`` user
and the server processes run as it. Every wait is bounded; anything that goes wrong raises
``PostgresUnavailable`` with the server's log tail, which the fixtures turn into a skip (or a
failure when ``CI`` is set).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

from hookline.bench.processes import free_port  # a loopback port free a moment ago

ENV_URL = "HOOKLINE_TEST_POSTGRES_URL"  # a developer's own server, used instead of a cluster
HOST = "127.0.0.1"
SUPERUSER = "postgres"
OS_USER = "postgres"  # the account Debian's package creates; the server runs as it under root
STARTUP_TIMEOUT_SECONDS = 30.0
INITDB_TIMEOUT_SECONDS = 60.0  # initdb writes a few thousand files; --no-sync keeps it ~1 s
STOP_TIMEOUT_SECONDS = 30.0
SQL_TIMEOUT_SECONDS = 30.0  # one connect or statement against the server
POLL_SECONDS = 0.05
LOG_TAIL_CHARS = 4000
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
# postmaster.pid's eighth line is the server's state; "ready" once it accepts connections.
PID_FILE_STATUS_LINE = 7
# Server settings for a disposable test database. fsync and full-page writes only matter when
# the machine or the database crashes mid-write; the tests kill hookline, never the database,
# and the cluster is thrown away afterwards, so they buy nothing here but cost every commit.
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "full_page_writes": "off",
}


class PostgresUnavailable(RuntimeError):
    """No server could be started or reached; the message says why and quotes its log."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None when no server is installed.

    Tries ``pg_config --bindir``, then the directory of an ``initdb`` on PATH, then Debian's
    ``/usr/lib/postgresql/<major>/bin`` from the highest major down. Debian's ``pg_config``
    belongs to libpq, whose version need not match an installed server's, so every candidate
    is checked for both programs.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            result = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            )
            if result.returncode == 0 and result.stdout.strip():
                candidates.append(Path(result.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    candidates.extend(sorted(map(Path, glob.glob(DEBIAN_BINDIRS)), key=_major, reverse=True))
    for bindir in candidates:
        if all(os.access(bindir / program, os.X_OK) for program in ("initdb", "postgres")):
            return bindir
    return None


def _major(bindir: Path) -> int:
    """The major version in ``/usr/lib/postgresql/<major>/bin`` (0 when it is not a number)."""
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


def server_from_env() -> PostgresServer:
    """The developer's server when ``HOOKLINE_TEST_POSTGRES_URL`` is set, else a new cluster."""
    url = os.environ.get(ENV_URL)
    return PostgresServer(url) if url else PostgresCluster()


def database_name(label: str) -> str:
    """A unique database name that still says which test made it (63 bytes at most)."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40]
    return f"test_{slug}_{uuid.uuid4().hex[:12]}"


class PostgresServer:
    """A running server reached through ``admin_url``; creates and drops databases on it.

    ``admin_url`` names the database to connect to for ``CREATE DATABASE`` (usually
    ``postgres``) as a role allowed to create databases. This class starts and stops nothing:
    ``start`` checks that the server answers, ``stop`` does nothing.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def start(self) -> PostgresServer:
        """Check that the server answers; raise ``PostgresUnavailable`` when it does not."""
        try:
            _execute(self.admin_url, "SELECT 1")
        except Exception as exc:
            raise PostgresUnavailable(
                f"the PostgreSQL server at {ENV_URL} ({self.admin_url}) does not answer: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return self

    def stop(self) -> None:
        """Nothing to stop: the server is not ours."""

    def url(self, dbname: str) -> str:
        """The URL of database ``dbname`` on this server (same user, host, port and options)."""
        return urlsplit(self.admin_url)._replace(path=f"/{dbname}").geturl()

    def create_database(self, label: str = "db") -> str:
        """Create a fresh, empty database and return its name (``label`` plus a unique suffix).

        Copied from template0, so nothing added to template1 on a developer's server leaks in;
        UTF-8 with the C collation, so text sorts by bytes, as it does in SQLite and the memory
        store, and the contract suite's ordering checks mean the same on every backend.
        """
        name = database_name(label)
        _execute(
            self.admin_url,
            f"CREATE DATABASE {_quote(name)} TEMPLATE template0 ENCODING 'UTF8' "
            "LC_COLLATE 'C' LC_CTYPE 'C'",
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending the sessions still connected to it (PostgreSQL 13+)."""
        _execute(self.admin_url, f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")

    def log_tail(self) -> str:
        return ""


class PostgresCluster(PostgresServer):
    """A cluster of our own: initdb in a temporary directory, one ``postgres`` on a free port.

    The directory (``data/``, ``socket/``, ``postgres.log``) and the server go away on ``stop``,
    which also runs from a finalizer at interpreter exit should a test run end without it.
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.port = free_port()
        super().__init__(f"postgresql://{SUPERUSER}@{HOST}:{self.port}/postgres")
        self._bindir = bindir
        self.base_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., PostgresCluster] | None = None

    @property
    def log_path(self) -> Path | None:
        return None if self.base_dir is None else self.base_dir / "postgres.log"

    def start(self) -> PostgresCluster:
        """Create and start the cluster; raise ``PostgresUnavailable`` (and clean up) if not."""
        if self.base_dir is not None:
            raise RuntimeError("the cluster was already started")
        bindir = self._bindir = self._bindir or find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "no PostgreSQL server binaries (initdb, postgres) found: run scripts/test-deps "
                f"as root, apt-get install postgresql, or set {ENV_URL}"
            )
        run_as = _server_user()
        self.base_dir = Path(tempfile.mkdtemp(prefix="hookline-pg-"))
        self._finalizer = weakref.finalize(self, _cleanup, None, self.base_dir)
        try:
            data, sockets = self.base_dir / "data", self.base_dir / "socket"
            sockets.mkdir()
            if run_as is not None:
                for path in (self.base_dir, sockets):
                    os.chown(path, run_as.pw_uid, run_as.pw_gid)
            self._initdb(bindir, data, run_as)
            self._spawn(bindir, data, sockets, run_as)
            self._wait_ready(data)
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self, bindir: Path, data: Path, run_as: pwd.struct_passwd | None) -> None:
        argv = [
            str(bindir / "initdb"),
            f"--pgdata={data}",
            f"--username={SUPERUSER}",
            "--auth=trust",  # loopback and a private socket directory only: see the docstring
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # nothing is durable here anyway (see SERVER_SETTINGS)
        ]
        assert self.log_path is not None
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=INITDB_TIMEOUT_SECONDS,
                    check=False,
                    **_as_user(run_as),
                )
            except subprocess.TimeoutExpired:
                raise PostgresUnavailable(
                    f"initdb did not finish within {INITDB_TIMEOUT_SECONDS:g} s\n{self.log_tail()}"
                ) from None
            except OSError as exc:
                raise PostgresUnavailable(f"cannot run {argv[0]}: {exc}") from exc
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"initdb exited with status {result.returncode}\n{self.log_tail()}"
            )

    def _spawn(
        self, bindir: Path, data: Path, sockets: Path, run_as: pwd.struct_passwd | None
    ) -> None:
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(sockets),
        }
        argv = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        assert self.log_path is not None and self.base_dir is not None
        with self.log_path.open("ab") as log:
            # The postmaster itself is our child (no runuser or pg_ctl in between), so the
            # signals stop() sends reach it and mean what postgres documents.
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **_as_user(run_as),
                )
            except OSError as exc:
                raise PostgresUnavailable(f"cannot run {argv[0]}: {exc}") from exc
        assert self._finalizer is not None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self._proc, self.base_dir)

    def _wait_ready(self, data: Path) -> None:
        assert self._proc is not None
        pid_file = data / "postmaster.pid"
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            code = self._proc.poll()
            if code is not None:
                raise PostgresUnavailable(
                    f"postgres exited with status {code} during startup\n{self.log_tail()}"
                )
            try:
                lines = pid_file.read_text().splitlines()
            except (FileNotFoundError, UnicodeDecodeError):
                lines = []  # not written yet, or caught half-written
            if len(lines) > PID_FILE_STATUS_LINE and lines[PID_FILE_STATUS_LINE].strip() == "ready":
                return
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"postgres did not accept connections within {STARTUP_TIMEOUT_SECONDS:g} s"
                    f"\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    def shut_down(self) -> None:
        """Fast shutdown keeping the data (``pg_ctl stop -m fast``); ``start_again`` follows."""
        assert self._proc is not None, "the cluster is not running"
        self._proc.send_signal(signal.SIGINT)  # postgres's fast shutdown
        self._proc.wait(STOP_TIMEOUT_SECONDS)

    def start_again(self) -> None:
        """Start the server that ``shut_down`` stopped, on the same data directory and port."""
        assert self.base_dir is not None and self._bindir is not None
        data, sockets = self.base_dir / "data", self.base_dir / "socket"
        self._spawn(self._bindir, data, sockets, _server_user())
        self._wait_ready(data)

    def stop(self) -> None:
        """Fast shutdown (connected sessions are ended), then remove the directory; idempotent."""
        if self._finalizer is not None:
            self._finalizer()  # runs _cleanup once; a second call or interpreter exit does nothing
        self._proc = None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        path = self.log_path
        try:
            text = "" if path is None else path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if len(text) > chars:
            text = "[...]" + text[-chars:]
        return f"--- postgres log ({path}) ---\n{text}--- end of log ---"


def _cleanup(proc: subprocess.Popen[bytes] | None, base_dir: Path) -> None:
    """Stop ``proc`` (fast, then immediate, then SIGKILL, each bounded) and remove ``base_dir``.

    A function of its arguments alone, so that the finalizer holding it keeps no cluster alive.
    """
    if proc is not None and proc.poll() is None:
        # SIGINT is postgres's fast shutdown; SIGQUIT the immediate one, for a server stuck in it.
        for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_SECONDS), (signal.SIGQUIT, 5.0)):
            proc.send_signal(sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            proc.kill()
            proc.wait()
    shutil.rmtree(base_dir, ignore_errors=True)


def _server_user() -> pwd.struct_passwd | None:
    """The account to run initdb and postgres as: None for ourselves, ``postgres`` under root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"postgres refuses to run as root and there is no {OS_USER!r} user to run it as: "
            "apt-get install postgresql creates one"
        ) from None


class _UserArgs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]
    env: dict[str, str]
    cwd: str


def _as_user(account: pwd.struct_passwd | None) -> _UserArgs:
    """Popen arguments that run the child as ``account`` (with only its own group), if given."""
    if account is None:
        return {}
    return {
        "user": account.pw_uid,
        "group": account.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": account.pw_dir, "USER": account.pw_name},
        # The child may not be allowed into our working directory; initdb and postgres look up
        # their own location and the data directory is absolute, so any readable one does.
        "cwd": "/",
    }


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _execute(url: str, *statements: str) -> None:
    """Run ``statements`` on one connection to ``url``, each bounded by ``SQL_TIMEOUT_SECONDS``.

    On a thread of its own with its own event loop, so that sync fixtures can call it while an
    async test's loop exists (or even runs) on the main thread.
    """
    import asyncpg  # the optional driver; a test extra, imported only when a test wants postgres

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=SQL_TIMEOUT_SECONDS)
        try:
            for statement in statements:
                await conn.execute(statement, timeout=SQL_TIMEOUT_SECONDS)
        finally:
            await conn.close(timeout=SQL_TIMEOUT_SECONDS)

    _in_thread(lambda: asyncio.run(run()))


def _in_thread(fn: Callable[[], None]) -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hookline-pg-admin") as pool:
        pool.submit(fn).result()
