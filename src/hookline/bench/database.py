"""The database a scenario runs on, and what PostgreSQL did per delivered message.

- Without ``--database``: a new SQLite file in the scenario's directory of the run's temporary
  directory.
- ``--database sqlite:///path`` or ``memory://``: that database, as given.
- ``--database postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``: a server the user runs (the bench
  never starts one). Each scenario gets a fresh, empty database, ``hookline_bench_<random>``,
  created from ``template0`` through a connection to DB and dropped when the scenario ends
  (``WITH (FORCE)``, PostgreSQL 13+), so nothing is left over from earlier runs and nothing in DB
  is written. The role needs ``CREATEDB``; ``postgres`` is a good DB to name.

On PostgreSQL each measured phase also reports what the server did, in all and per delivered
message (``Usage``):

- transactions (``pg_stat_database``) and rows inserted, updated and deleted in hookline's
  tables (``pg_stat_user_tables``);
- bytes of WAL (``pg_current_wal_lsn``), WAL flushes (``pg_stat_wal``, PostgreSQL 14+) and the
  growth of the database's files (``pg_database_size``);
- statements, when ``pg_stat_statements`` is in ``shared_preload_libraries`` (the extension is
  created in the scenario's database, which takes a superuser), with the most frequent listed;
- the server's CPU, when it runs on this machine: every process under its postmaster, backends
  that exited included.

Backends flush their row and transaction counters at most once a second and when they exit, so
a phase's figures are read once hookline has stopped and its sessions have ended. WAL, flushes
and CPU are the whole server's: exact on a server that runs only the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psutil

from hookline import settings
from hookline.bench import processes
from hookline.store import POSTGRES_SCHEMES

MIN_SERVER_VERSION = 13  # DROP DATABASE ... WITH (FORCE)
CONNECT_TIMEOUT_SECONDS = 10.0
STATEMENT_TIMEOUT_SECONDS = 60.0
SESSIONS_GONE_SECONDS = 10.0  # how long to wait for hookline's sessions to end after it stopped
TOP_STATEMENTS = 12  # statements listed per phase, most calls first
QUERY_CHARS = 160  # of each listed statement's text
LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")
PROBE = "/* hookline-bench probe */"  # marks the bench's own queries, left out of the counts
SERVER_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
    "shared_preload_libraries",
)


class Unusable(RuntimeError):
    """The PostgreSQL server named by ``--database`` cannot be used; the message says why."""


class StatementUse(msgspec.Struct, kw_only=True):
    """One statement (as ``pg_stat_statements`` normalises it) during a phase."""

    query: str
    calls: int
    per_message: float
    rows: int
    exec_ms: float  # time executing it in the server, all calls together


class Usage(msgspec.Struct, kw_only=True):
    """What the PostgreSQL server did during one phase, in all and per delivered message."""

    delivered: int
    transactions: int
    rows_inserted: int
    rows_updated: int
    rows_hot_updated: int  # of rows_updated: updates that changed no indexed column
    rows_deleted: int
    wal_bytes: int
    wal_flushes: int | None  # None before PostgreSQL 14 (no pg_stat_wal)
    database_bytes: int  # growth of the database's files: tables, indexes, TOAST
    statements: int | None  # None without pg_stat_statements
    cpu_seconds: float | None  # None when the server does not run on this machine
    per_message: dict[str, float]
    top_statements: list[StatementUse] = []


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's counters at one moment (``Scenario.snapshot``)."""

    cpu: float | None
    wal_lsn: int
    wal_flushes: int | None
    database_bytes: int
    transactions: int
    rows: tuple[int, int, int, int]  # inserted, updated, hot updated, deleted
    statements: dict[int, tuple[str, int, int, float]] | None  # queryid -> query, calls, rows, ms


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(POSTGRES_SCHEMES)


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        if exc.name != "asyncpg":
            raise
        raise Unusable(
            "hookline bench --database postgresql://... needs the asyncpg driver: "
            "pip install hookline[postgres]"
        ) from None
    return asyncpg


async def _connect(url: str) -> Any:
    asyncpg = _asyncpg()
    return await asyncpg.connect(
        url, timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=STATEMENT_TIMEOUT_SECONDS
    )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass
class Server:
    """A PostgreSQL server the user runs, reached through ``admin_url`` (``--database``)."""

    admin_url: str
    version: int  # server_version_num
    settings: dict[str, str]
    postmaster: psutil.Process | None  # None when the server does not run on this machine

    @classmethod
    async def open(cls, url: str) -> Server:
        """Check that the server answers and can be used; find its processes if it is local."""
        where = settings.redacted_url(url)
        try:
            conn = await _connect(url)
        except Exception as exc:  # asyncpg raises OSError, its own errors, TimeoutError ...
            raise Unusable(
                f"cannot connect to PostgreSQL at {where}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            version = int(await conn.fetchval("SHOW server_version_num"))
            if version < MIN_SERVER_VERSION * 10_000:
                raise Unusable(
                    f"PostgreSQL at {where} is version {version // 10_000}: the bench needs "
                    f"{MIN_SERVER_VERSION} or later"
                )
            if not await conn.fetchval(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ):
                raise Unusable(
                    f"the role in {where} may not create databases: the bench creates a fresh "
                    "one per scenario (ALTER ROLE ... CREATEDB, or name a superuser)"
                )
            shown = {name: str(await conn.fetchval(f"SHOW {name}")) for name in SERVER_SETTINGS}
            # while the session lasts: its backend process is how the postmaster is found
            postmaster = _postmaster(url, int(await conn.fetchval("SELECT pg_backend_pid()")))
        finally:
            await conn.close()
        return cls(url, version, shown, postmaster)

    def url(self, dbname: str) -> str:
        """The URL of database ``dbname`` on this server (same user, host, port and options)."""
        return urllib.parse.urlsplit(self.admin_url)._replace(path=f"/{dbname}").geturl()

    def describe(self) -> dict[str, object]:
        """For the report's settings: which server, how it is configured."""
        return {
            "server": settings.redacted_url(self.admin_url),
            "version": f"{self.version // 10_000}.{self.version % 10_000}",
            "local": self.postmaster is not None,
            **self.settings,
        }

    async def _admin(self, statement: str) -> None:
        conn = await _connect(self.admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[Scenario]:
        """A new, empty database for one scenario, dropped afterwards whatever happened."""
        name = f"hookline_bench_{secrets.token_hex(6)}"
        await self._admin(
            f"CREATE DATABASE {_quote(name)} TEMPLATE template0 ENCODING 'UTF8' "
            "LC_COLLATE 'C' LC_CTYPE 'C'"
        )
        try:
            scenario = Scenario(self, self.url(name))
            await scenario.prepare()
            yield scenario
        finally:
            # FORCE ends sessions still connected (a hookline that did not stop in time)
            drop = f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)"
            await asyncio.shield(self._admin(drop))


def _postmaster(url: str, backend_pid: int) -> psutil.Process | None:
    """The postmaster of our session's backend, when the server runs on this machine."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    query_host = urllib.parse.parse_qs(parts.query).get("host", [""])[0]
    local = host in LOCAL_HOSTS or (not host and (not query_host or query_host.startswith("/")))
    if not local:
        return None
    try:
        backend = psutil.Process(backend_pid)
        parent = backend.parent()
        if parent is None or "postgres" not in parent.name() + " ".join(parent.cmdline()[:1]):
            return None
        parent.cpu_times()  # readable by us?
        return parent
    except psutil.Error:
        return None


@dataclass
class Scenario:
    """One scenario's database: its URL, and the phases measured on it."""

    server: Server
    url: str
    has_statements: bool = False

    async def prepare(self) -> None:
        """Make ``pg_stat_statements`` readable here, if the server loads it and lets us."""
        conn = await _connect(self.url)
        try:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                await conn.fetchval(f"{PROBE} SELECT count(*) FROM pg_stat_statements")
                self.has_statements = True
            except _asyncpg().PostgresError:  # not preloaded, or not a superuser
                self.has_statements = False
        finally:
            await conn.close()

    async def settle(self, phases: list[tuple[Snapshot, int]]) -> list[Usage]:
        """After hookline stopped: each phase's ``Usage`` from its snapshot and its deliveries.

        Read once hookline's sessions have ended, so their counters are flushed (see the
        module docstring).
        """
        await self._sessions_gone()
        after = await self.snapshot()
        return [_usage(before, after, delivered) for before, delivered in phases]

    async def _sessions_gone(self) -> None:
        """Wait until no session but ours is connected: theirs have flushed their counters."""
        conn = await _connect(self.url)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SESSIONS_GONE_SECONDS
            while loop.time() < deadline:
                others = await conn.fetchval(
                    f"{PROBE} SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if not others:
                    return
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def snapshot(self) -> Snapshot:
        """The server's counters now; a phase takes one as it starts."""
        cpu = processes.tree_cpu_seconds(self.server.postmaster) if self.server.postmaster else None
        conn = await _connect(self.url)
        try:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            wal = int(
                await conn.fetchval(
                    f"{PROBE} SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
                )
            )
            size = int(await conn.fetchval(f"{PROBE} SELECT pg_database_size(current_database())"))
            flushes = None
            if self.server.version >= 140_000:
                flushes = int(await conn.fetchval(f"{PROBE} SELECT wal_sync FROM pg_stat_wal"))
            xacts = int(
                await conn.fetchval(
                    f"{PROBE} SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            )
            row = await conn.fetchrow(
                f"{PROBE} SELECT coalesce(sum(n_tup_ins), 0)::bigint, "
                "coalesce(sum(n_tup_upd), 0)::bigint, coalesce(sum(n_tup_hot_upd), 0)::bigint, "
                "coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_user_tables"
            )
            statements: dict[int, tuple[str, int, int, float]] | None = None
            if self.has_statements:
                found = await conn.fetch(
                    f"{PROBE} SELECT queryid, query, calls, rows, total_exec_time "
                    "FROM pg_stat_statements WHERE dbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                statements = {}
                for queryid, query, calls, n, ms in found:
                    if queryid is None or PROBE in query:
                        continue
                    # one query id may have two entries (top level and nested): add them up
                    _, calls0, n0, ms0 = statements.get(int(queryid), ("", 0, 0, 0.0))
                    statements[int(queryid)] = (str(query), calls0 + calls, n0 + n, ms0 + ms)
        finally:
            await conn.close()
        return Snapshot(
            cpu=cpu,
            wal_lsn=wal,
            wal_flushes=flushes,
            database_bytes=size,
            transactions=xacts,
            rows=(int(row[0]), int(row[1]), int(row[2]), int(row[3])),
            statements=statements,
        )


def _usage(before: Snapshot, after: Snapshot, delivered: int) -> Usage:
    def each(value: float | None, scale: float = 1.0, digits: int = 2) -> float | None:
        if value is None or not delivered:
            return None
        return round(value / delivered * scale, digits)

    ins, upd, hot, dele = (a - b for a, b in zip(after.rows, before.rows, strict=True))
    cpu = None if after.cpu is None or before.cpu is None else round(after.cpu - before.cpu, 3)
    flushes = (
        None
        if after.wal_flushes is None or before.wal_flushes is None
        else after.wal_flushes - before.wal_flushes
    )
    top, statements = [], None
    if after.statements is not None and before.statements is not None:
        calls: list[StatementUse] = []
        for queryid, (query, n, rows, ms) in after.statements.items():
            _, n0, rows0, ms0 = before.statements.get(queryid, ("", 0, 0, 0.0))
            if n - n0 > 0:
                calls.append(
                    StatementUse(
                        query=re.sub(r"\s+", " ", query).strip()[:QUERY_CHARS],
                        calls=n - n0,
                        per_message=each(n - n0, digits=3) or 0.0,
                        rows=rows - rows0,
                        exec_ms=round(ms - ms0, 1),
                    )
                )
        calls.sort(key=lambda s: -s.calls)
        statements = sum(s.calls for s in calls)
        top = calls[:TOP_STATEMENTS]
    transactions = after.transactions - before.transactions
    wal = after.wal_lsn - before.wal_lsn
    per_message = {
        "transactions": each(transactions),
        "statements": each(statements),
        "rows_inserted": each(ins),
        "rows_updated": each(upd),
        "rows_deleted": each(dele),
        "wal_bytes": each(wal, digits=0),
        "wal_flushes": each(flushes, digits=4),
        "database_bytes": each(after.database_bytes - before.database_bytes, digits=0),
        "cpu_us": each(cpu, 1e6, 1),
    }
    return Usage(
        delivered=delivered,
        transactions=transactions,
        rows_inserted=ins,
        rows_updated=upd,
        rows_hot_updated=hot,
        rows_deleted=dele,
        wal_bytes=wal,
        wal_flushes=flushes,
        database_bytes=after.database_bytes - before.database_bytes,
        statements=statements,
        cpu_seconds=cpu,
        per_message={k: v for k, v in per_message.items() if v is not None},
        top_statements=top,
    )


@contextlib.asynccontextmanager
async def for_scenario(
    database: str | None, server: Server | None, workdir: Path
) -> AsyncIterator[tuple[str, Scenario | None]]:
    """The URL a scenario's hookline uses, and its ``Scenario`` on PostgreSQL (else None)."""
    if server is None:
        yield database or f"sqlite:///{workdir / 'hookline.db'}", None
        return
    async with server.fresh_database() as scenario:
        yield scenario.url, scenario
