"""The embedded SQLite store: WAL mode, one writer connection with group commit, pooled readers.

Why this shape: SQLite allows one writer at a time, and a commit costs an fsync. Every write is
queued; whatever queued up while the previous transaction was committing goes into the next one
(each operation inside its own SAVEPOINT, so one failing operation does not undo its
neighbours). Callers are answered only after COMMIT returns, so an acknowledged write is on disk
(``synchronous=FULL``), and the commit cost is shared by the batch.

Where each step runs: the steps that can wait (BEGIN IMMEDIATE, which may wait for another
process's write lock, and COMMIT, which waits for the fsync and runs checkpoints) run on the
writer thread. The statements in between run on the event loop: they only compute on pages in
memory. Running them on the writer thread cost far more: sqlite3 releases the GIL around every
statement step, and a thread that gives up the GIL next to a busy event loop waits up to the
interpreter's switch interval (5 ms) to get it back. Measured under load, the writer was busy
99 % of the time while using a quarter of a core, and ingest waited on it.
Operations that may touch any number of rows (recover, deleting an application or endpoint,
the idempotency purge, migrations) are the exception: they run on the writer thread, where a
long statement runs with the GIL released instead of holding up the event loop.
Reads run on a small pool of threads with their own connections, which WAL lets proceed while
the writer commits.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from hookline import admission as admission_
from hookline import errors, ids
from hookline.admission import Admission
from hookline.circuit import CircuitPolicy, after_attempts, gone_event
from hookline.models import (
    Application,
    Attempt,
    Claim,
    ClaimPolicy,
    Completion,
    Delivery,
    Endpoint,
    EndpointHealth,
    EndpointStats,
    EndpointSummary,
    EventType,
    HealthChange,
    HealthEvent,
    Message,
    MessageStatus,
    Org,
    Page,
    Release,
    StoredResponse,
    Token,
    Trigger,
    routes_to,
)
from hookline.store import observer, queries, sqlite_retention, sqlite_rows, sqlite_writer
from hookline.store import sqlite_claiming as claiming
from hookline.store.base import (
    KEY_TAKEN_OVER,
    RECENT_WRITE_SECONDS,
    AttemptFilter,
    ExpiryBatch,
    IdempotencyState,
    IdempotentWrite,
    MessageFilter,
    PruneBatch,
    TokenInfo,
)
from hookline.wakeup import LocalWakeup, Wakeup

if TYPE_CHECKING:
    from hookline.metrics import Metrics

T = TypeVar("T")
Q = queries.load("sqlite")
log = structlog.get_logger("hookline.sqlite")
READER_THREADS = 4
FOREVER = 1e18  # an upper bound for open time windows, in epoch seconds


def path_from_url(url: str) -> Path:
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` → a Path."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("///"):
        return Path(rest[3:])
    if rest.startswith("//"):
        return Path(rest[2:])
    return Path(rest)


class SqliteStore:
    """The ``Store`` Protocol on one SQLite database file."""

    def __init__(self, path: Path | str, *, metrics: Metrics | None = None) -> None:
        self.path = Path(path)
        self._writer = sqlite_writer.Writer(self.path, observer.of(metrics))
        self._wakeup = LocalWakeup()
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="hookline-sqlite-r")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._checkpointer = sqlite_writer.Checkpointer(self.path)

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._writer.start()
        self._checkpointer.start()

    async def close(self) -> None:
        await self._checkpointer.stop_ticking()
        await self._writer.close()
        await self._checkpointer.close()
        self._readers.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()

    async def migrate(self) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version, sql in queries.migrations("sqlite"):
                if version > current:
                    # executescript would COMMIT our transaction; run statements one by one
                    for statement in _statements(sql):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")

        await self._writer.run(apply, bulk=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def check_writable(self) -> None:
        self._writer.check_writable()

    async def probe_write(self, now: float) -> None:
        wrote_at = self._writer.wrote_at
        if wrote_at is None or time.monotonic() - wrote_at > RECENT_WRITE_SECONDS:
            await self._write(lambda c: c.execute(Q["health_probe"], (now,)))
        await asyncio.to_thread(sqlite_writer.check_room, self.path.parent)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite_writer.connect(self.path, readonly=True)
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader()))

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        bulk: bool = False,
        operation: str | None = None,
        items: int | None = 1,
    ) -> T:
        return await self._writer.run(fn, bulk=bulk, operation=operation, items=items)

    # tenants and tokens ------------------------------------------------------------------------
    async def ensure_org(self, name: str, now: float) -> Org:
        def op(c: sqlite3.Connection) -> Org:
            row = c.execute(Q["org_by_name"], (name,)).fetchone()
            if row is None:
                row = (ids.new(ids.ORG), name, now)
                c.execute(Q["org_insert"], row)
            return Org(id=row[0], name=row[1], created_at=row[2])

        return await self._write(op)

    async def create_token(self, org_id: str, name: str, token_hash: str, now: float) -> Token:
        token = Token(id=ids.new(ids.TOKEN), org_id=org_id, name=name, created_at=now)
        await self._write(
            _conflict_on_unique(
                lambda c: c.execute(Q["token_insert"], (token.id, org_id, name, token_hash, now))
            )
        )
        return token

    async def find_token(self, token_hash: str) -> Token | None:
        row = await self._read(lambda c: c.execute(Q["token_by_hash"], (token_hash,)).fetchone())
        return (
            None if row is None else Token(id=row[0], org_id=row[1], name=row[2], created_at=row[3])
        )

    async def count_tokens(self) -> int:
        row = await self._read(lambda c: c.execute(Q["token_count"]).fetchone())
        return int(row[0])

    async def list_tokens(self) -> list[TokenInfo]:
        rows = await self._read(lambda c: c.execute(Q["token_list"]).fetchall())
        return [
            TokenInfo(
                id=r[0], name=r[1], org_id=r[2], org_name=r[3], created_at=r[4], last_used_at=r[5]
            )
            for r in rows
        ]

    async def revoke_token(self, token_id: str) -> bool:
        return bool(
            await self._write(lambda c: c.execute(Q["token_delete"], (token_id,)).rowcount > 0)
        )

    async def touch_tokens(self, used: Mapping[str, float]) -> None:
        rows = [(at, token_id) for token_id, at in used.items()]
        if rows:
            await self._write(lambda c: c.executemany(Q["token_touch"], rows))

    # applications ------------------------------------------------------------------------------
    async def create_app(self, app: Application) -> None:
        await self._write(
            _conflict_on_unique(lambda c: c.execute(Q["app_insert"], sqlite_rows.app_row(app)))
        )

    async def get_app(self, org_id: str, ref: str) -> Application | None:
        row = await self._read(
            lambda c: c.execute(Q["app_get"], (org_id, ref, ref, ref)).fetchone()
        )
        return None if row is None else sqlite_rows.app(row)

    async def find_app(self, app_id: str) -> Application | None:
        row = await self._read(lambda c: c.execute(Q["app_by_id"], (app_id,)).fetchone())
        return None if row is None else sqlite_rows.app(row)

    async def list_apps(self, org_id: str, page: Page) -> list[Application]:
        rows = await self._page(
            "applications", sqlite_rows.APP_COLUMNS, "org_id = ?", [org_id], "id", page
        )
        return [sqlite_rows.app(r) for r in rows]

    async def update_app(self, app: Application) -> None:
        await self._write(
            _conflict_on_unique(lambda c: c.execute(Q["app_update"], sqlite_rows.app_row(app)))
        )

    async def delete_app(self, org_id: str, app_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            # attempts carry no foreign key (history outlives endpoints), so remove them here
            c.execute(Q["attempts_delete_app"], {"app_id": app_id, "org_id": org_id})
            return c.execute(Q["app_delete"], (org_id, app_id)).rowcount > 0

        return await self._write(op, bulk=True)  # cascades to every message and delivery

    # event types -------------------------------------------------------------------------------
    async def create_event_type(self, event_type: EventType) -> None:
        row = sqlite_rows.event_type_row(event_type)
        await self._write(_conflict_on_unique(lambda c: c.execute(Q["event_type_insert"], row)))

    async def get_event_type(self, org_id: str, name: str) -> EventType | None:
        row = await self._read(lambda c: c.execute(Q["event_type_get"], (org_id, name)).fetchone())
        return None if row is None else sqlite_rows.event_type(row)

    async def list_event_types(
        self, org_id: str, page: Page, include_archived: bool
    ) -> list[EventType]:
        where = "org_id = ?" if include_archived else "org_id = ? AND archived = 0"
        rows = await self._page(
            "event_types", sqlite_rows.EVENT_TYPE_COLUMNS, where, [org_id], "name", page
        )
        return [sqlite_rows.event_type(r) for r in rows]

    async def update_event_type(self, event_type: EventType) -> None:
        row = sqlite_rows.event_type_row(event_type)
        await self._write(lambda c: c.execute(Q["event_type_update"], row))

    # endpoints ---------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None:
        row = sqlite_rows.endpoint_row(endpoint)
        await self._write(_conflict_on_unique(lambda c: c.execute(Q["endpoint_insert"], row)))

    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint | None:
        row = await self._read(
            lambda c: c.execute(Q["endpoint_get"], (app_id, ref, ref, ref)).fetchone()
        )
        return None if row is None else sqlite_rows.endpoint(row)

    async def list_endpoints(self, app_id: str, page: Page) -> list[Endpoint]:
        rows = await self._page(
            "endpoints", sqlite_rows.ENDPOINT_COLUMNS, "app_id = ?", [app_id], "id", page
        )
        return [sqlite_rows.endpoint(r) for r in rows]

    async def update_endpoint(self, endpoint: Endpoint) -> None:
        row = sqlite_rows.endpoint_row(endpoint)

        def op(c: sqlite3.Connection) -> None:
            was = c.execute(Q["endpoint_disabled_get"], (endpoint.id, endpoint.app_id)).fetchone()
            c.execute(Q["endpoint_update"], row)
            if was is not None and was[0] and not endpoint.disabled:
                # enabled again by hand: its failure history no longer counts against it
                c.execute(Q["health_reset"], (endpoint.id,))

        await self._write(_conflict_on_unique(op))

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        cur = await self._write(
            lambda c: c.execute(Q["endpoint_delete"], (app_id, endpoint_id)), bulk=True
        )
        return cur.rowcount > 0

    async def endpoint_stats(
        self, app_id: str, endpoint_id: str, since: float | None, until: float | None
    ) -> EndpointStats:
        args = (
            endpoint_id,
            app_id,
            0.0 if since is None else since,
            FOREVER if until is None else until,
        )
        rows = await self._read(lambda c: c.execute(Q["endpoint_stats"], args).fetchall())
        counts = {MessageStatus(s).text: n for s, n in rows}
        return EndpointStats(**counts)

    # messages ----------------------------------------------------------------------------------
    async def create_message(
        self, message: Message, idempotency: IdempotentWrite | None = None
    ) -> int:
        m = message
        channels = sqlite_rows.opt_json(m.channels)
        tags = sqlite_rows.opt_json(m.tags)
        due_at = m.first_due_at  # deliverAt, when given

        def op(c: sqlite3.Connection) -> int:
            if (
                m.event_id is not None
                and c.execute(Q["message_event_id_exists"], (m.app_id, m.event_id)).fetchone()
            ):
                raise errors.Conflict(f"A message with eventId {m.event_id!r} already exists")
            try:
                c.execute(
                    Q["message_insert"],
                    (
                        m.id,
                        m.app_id,
                        m.event_type,
                        m.event_id,
                        channels,
                        m.payload,
                        m.created_at,
                        tags,
                        m.deliver_at,
                        m.expires_at,
                        m.trace_context,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):  # the app was deleted (by another process)
                    raise errors.NotFound() from exc
                raise
            # only the routing columns: decoding whole endpoints per message is the costly part
            targets = [
                endpoint_id
                for endpoint_id, disabled, types, chans in c.execute(
                    Q["endpoint_routes"], (m.app_id,)
                )
                if routes_to(
                    disabled,
                    None if types is None else sqlite_rows.str_tuple.decode(types),
                    None if chans is None else sqlite_rows.str_tuple.decode(chans),
                    m.event_type,
                    m.channels,
                )
            ]
            c.executemany(
                Q["delivery_insert"],
                [(m.id, ep, m.app_id, due_at, m.created_at, m.created_at) for ep in targets],
            )
            if idempotency is not None:
                _finish_idempotency(c, idempotency)
            return len(targets)

        return await self._write(op, operation=observer.INGEST)

    async def get_message(self, app_id: str, ref: str) -> Message | None:
        row = await self._read(
            lambda c: c.execute(Q["message_get"], (app_id, ref, ref, ref)).fetchone()
        )
        return None if row is None else sqlite_rows.message(row)

    async def list_messages(self, app_id: str, flt: MessageFilter, page: Page) -> list[Message]:
        where, args = ["app_id = ?"], [app_id]
        if flt.channel is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(channels) WHERE value = ?)")
            args.append(flt.channel)
        if flt.tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
            args.append(flt.tag)
        if flt.event_types:
            where.append(f"event_type IN ({','.join('?' * len(flt.event_types))})")
            args.extend(flt.event_types)
        _time_window(where, args, flt.before, flt.after)
        rows = await self._page(
            "messages", sqlite_rows.MESSAGE_COLUMNS, " AND ".join(where), args, "id", page
        )
        return [sqlite_rows.message(r) for r in rows]

    # the delivery queue ------------------------------------------------------------------------
    def now(self) -> float:
        """The host's wall clock: every process sharing a SQLite file runs on its host."""
        return time.time()

    def wakeup(self) -> Wakeup:
        """In-process only; workers in other processes poll (see ``worker.IDLE_POLL_SECONDS``)."""
        return self._wakeup

    async def claim_due(self, now: float, policy: ClaimPolicy, lease_seconds: float) -> list[Claim]:
        if policy.limit <= 0:
            return []
        params = {"now": now, "limit": policy.limit}

        def op(c: sqlite3.Connection) -> list[Claim]:
            policy.deferred.clear()
            # Endpoints known to be unable to send now: full at this claimer, circuit open,
            # bucket empty. With none, the oldest due tasks are read in due order (the common
            # case, one range read); otherwise per endpoint, so that a blocked endpoint's
            # backlog at the head of the queue is never read, let alone held up anybody else.
            held = admission_.blocked_before(
                policy, c.execute(Q["claim_blocked_endpoints"], {"now": now}).fetchall()
            )
            blocked = set(held)
            endpoints: dict[str, Endpoint] = {}
            admission = Admission(policy, now, lease_seconds, {})
            disabled: list[claiming.Due] = []
            if blocked:
                chosen = claiming.per_endpoint(c, now, admission, endpoints, [], blocked, disabled)
            else:
                # Select in due order, then lease: UPDATE ... RETURNING would hand rows back
                # in key order, and the claim order is the delivery order.
                due = c.execute(Q["claim_select"], params).fetchall()
                if not due:
                    return []
                endpoints = sqlite_rows.endpoints_by_id(c, {r[1] for r in due})
                admission.learn(sqlite_rows.health_by_id(c, set(endpoints)))
                chosen, disabled, held_back = claiming.admit(due, endpoints, admission)
                if held_back and len(due) == policy.limit and admission.total < policy.limit:
                    # something in the batch had to wait after all: look past it
                    more = claiming.per_endpoint(
                        c, now, admission, endpoints, chosen, admission.blocked(), disabled
                    )
                    chosen = chosen + more
            chosen.sort(key=lambda r: r[5])
            for msg_id, endpoint_id, _, lease, *_ in disabled:  # nothing would ever send them
                c.execute(Q["delivery_fail_disabled_unleased"], (now, msg_id, endpoint_id, lease))
            claiming.store_health(c, admission.changed())
            if chosen:
                lease_until = now + lease_seconds
                c.executemany(
                    Q["claim_lease"],
                    [(lease_until, now, msg_id, endpoint_id) for msg_id, endpoint_id, *_ in chosen],
                )
            if policy.deferred_since is not None:
                claiming.count_deferred(c, now, policy, {**held, **admission.closed()})
            if not chosen:
                return []
            messages = sqlite_rows.messages_by_id(c, {r[0] for r in chosen})
            return [
                Claim(
                    message=messages[msg_id],
                    endpoint=endpoints[endpoint_id],
                    attempts=attempts,
                    lease=lease + 1,
                    trigger=Trigger(trigger),
                )
                for msg_id, endpoint_id, attempts, lease, trigger, _ in chosen
            ]

        return await self._write(op, operation=observer.CLAIM, items=None)

    async def complete(
        self, completions: Sequence[Completion], now: float, circuit: CircuitPolicy | None = None
    ) -> list[HealthEvent]:
        attempts = [sqlite_rows.attempt_row(done.attempt) for done in completions]
        updates = [
            {
                "status": int(done.next_status),
                "due_at": done.next_attempt_at,
                "now": now,
                "msg_id": done.attempt.msg_id,
                "endpoint_id": done.attempt.endpoint_id,
                "lease": done.lease,
            }
            for done in completions
        ]
        outcomes: dict[str, list[tuple[bool, float]]] = {}
        for done in completions:
            a = done.attempt
            outcomes.setdefault(a.endpoint_id, []).append(
                (a.status == MessageStatus.SUCCESS, a.created_at)
            )
        policy = circuit or CircuitPolicy()

        def op(c: sqlite3.Connection) -> list[HealthEvent]:
            if not completions:
                return []
            # executemany: one call per batch instead of two per attempt (the writer thread
            # holds the GIL for every Python-level call, and the event loop waits for it)
            c.executemany(Q["attempt_insert"], attempts)
            plain = [u for u, d in zip(updates, completions, strict=True) if not d.disable_endpoint]
            c.executemany(Q["delivery_complete"], plain)
            events: list[HealthEvent] = []
            for update, done in zip(updates, completions, strict=True):
                # rare; the endpoint is disabled only by a completion that still held its lease
                if (
                    done.disable_endpoint
                    and c.execute(Q["delivery_complete"], update).rowcount
                    and c.execute(Q["endpoint_disable"], (now, done.attempt.endpoint_id)).rowcount
                ):
                    events.append(gone_event(done.attempt.endpoint_id, done.attempt.created_at))
            healths = sqlite_rows.health_by_id(c, set(outcomes))
            states = dict(
                c.execute(
                    f"SELECT id, disabled FROM endpoints WHERE id IN "
                    f"({','.join('?' * len(outcomes))})",
                    list(outcomes),
                ).fetchall()
            )
            changed = []
            for endpoint_id, seen in outcomes.items():
                if endpoint_id not in states:
                    continue  # deleted meanwhile
                before = healths.get(endpoint_id)
                if before is None and all(ok for ok, _ in seen):
                    continue  # the common case: healthy, nothing to store
                before = before or EndpointHealth(endpoint_id=endpoint_id)
                after, changes = after_attempts(
                    before, seen, policy, disabled=bool(states[endpoint_id])
                )
                if after != before:
                    changed.append(after)
                for change in changes:
                    if change.change is HealthChange.DISABLED:
                        c.execute(Q["endpoint_disable"], (now, endpoint_id))
                events.extend(changes)
            claiming.store_health(c, changed)
            return events

        return await self._write(op, operation=observer.COMPLETE, items=len(completions))

    async def release(self, releases: Sequence[Release], now: float) -> int:
        rows = [
            {
                "msg_id": r.msg_id,
                "endpoint_id": r.endpoint_id,
                "lease": r.lease,
                "due_at": r.due_at,
                "now": now,
            }
            for r in releases
        ]
        if not rows:
            return 0

        def op(c: sqlite3.Connection) -> int:
            before = c.total_changes
            c.executemany(Q["delivery_release"], rows)
            return c.total_changes - before

        return await self._write(op)

    async def count_due(self, now: float, cap: int) -> int:
        row = await self._read(
            lambda c: c.execute(Q["due_count"], {"now": now, "cap": cap}).fetchone()
        )
        return int(row[0])

    async def stalled_since(self, now: float, lease_seconds: float) -> float | None:
        args = {"now": now, "leased_until": now + lease_seconds}
        row = await self._read(lambda c: c.execute(Q["stalled_since"], args).fetchone())
        return None if row[0] is None else float(row[0])

    async def endpoint_health(self, endpoint_id: str) -> EndpointHealth | None:
        row = await self._read(lambda c: c.execute(Q["health_get"], (endpoint_id,)).fetchone())
        return None if row is None else sqlite_rows.health(row)

    async def endpoint_summary(self) -> EndpointSummary:
        row = await self._read(lambda c: c.execute(Q["endpoint_summary"]).fetchone())
        return EndpointSummary(circuits_open=int(row[0]), disabled=int(row[1]))

    async def next_due_at(self) -> float | None:
        row = await self._read(lambda c: c.execute(Q["next_due"]).fetchone())
        return None if row[0] is None else float(row[0])

    async def requeue(self, app_id: str, msg_id: str, endpoint_id: str, now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            msg = c.execute(Q["message_resendable"], (app_id, msg_id)).fetchone()
            if (
                msg is None
                or c.execute(Q["endpoint_exists"], (app_id, endpoint_id)).fetchone() is None
            ):
                raise errors.NotFound()
            if not msg[1]:  # its payload expired: nothing to send
                raise errors.PayloadMissing()
            c.execute(
                Q["delivery_requeue"],
                {
                    "msg_id": msg_id,
                    "endpoint_id": endpoint_id,
                    "app_id": app_id,
                    "now": now,
                    "created_at": msg[0],
                },
            )

        await self._write(op)

    async def recover(
        self, app_id: str, endpoint_id: str, since: float, until: float | None, now: float
    ) -> int:
        params = {
            "app_id": app_id,
            "endpoint_id": endpoint_id,
            "since": since,
            "until": until if until is not None else FOREVER,
            "now": now,
        }
        cur = await self._write(lambda c: c.execute(Q["delivery_recover"], params), bulk=True)
        return int(cur.rowcount)

    # attempts and per-endpoint status ----------------------------------------------------------
    async def list_attempts(self, app_id: str, flt: AttemptFilter, page: Page) -> list[Attempt]:
        where: list[str] = ["app_id = ?"]
        args: list[Any] = [app_id]
        for column, value in (("msg_id", flt.msg_id), ("endpoint_id", flt.endpoint_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if flt.status is not None:
            where.append("status = ?")
            args.append(int(flt.status))
        if flt.status_code_class is not None:
            if flt.status_code_class == 0:
                where.append("response_status_code = 0")
            else:
                where.append("response_status_code / 100 * 100 = ?")
                args.append(flt.status_code_class)
        _time_window(where, args, flt.before, flt.after)
        rows = await self._page(
            "attempts", sqlite_rows.ATTEMPT_COLUMNS, " AND ".join(where), args, "id", page
        )
        return [sqlite_rows.attempt(r) for r in rows]

    async def get_attempt(self, app_id: str, msg_id: str, attempt_id: str) -> Attempt | None:
        row = await self._read(
            lambda c: c.execute(Q["attempt_get"], (app_id, msg_id, attempt_id)).fetchone()
        )
        return None if row is None else sqlite_rows.attempt(row)

    async def list_deliveries(
        self, app_id: str, msg_id: str, page: Page
    ) -> list[tuple[Endpoint, Delivery]]:
        cols = ", ".join(f"e.{c.strip()}" for c in sqlite_rows.ENDPOINT_COLUMNS.split(","))
        where, args = ["d.msg_id = ?", "d.app_id = ?"], [msg_id, app_id]
        if page.after is not None:
            where.append("e.id < ?" if page.descending else "e.id > ?")
            args.append(page.after)
        sql = (
            f"SELECT {cols}, d.status, d.attempts, d.due_at, d.updated_at "
            "FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY e.id {'DESC' if page.descending else 'ASC'} LIMIT ?"
        )
        rows = await self._read(lambda c: c.execute(sql, [*args, page.limit]).fetchall())
        out = []
        for r in rows:
            endpoint, (status, attempts, due_at, updated_at) = sqlite_rows.endpoint(r[:15]), r[15:]
            state = MessageStatus(status)
            out.append(
                (
                    endpoint,
                    Delivery(
                        msg_id=msg_id,
                        endpoint_id=endpoint.id,
                        app_id=app_id,
                        status=state,
                        attempts=attempts,
                        next_attempt_at=due_at if state is MessageStatus.PENDING else None,
                        updated_at=updated_at,
                    ),
                )
            )
        return out

    # idempotency -------------------------------------------------------------------------------
    async def idempotency_begin(
        self, key: str, fingerprint: str, now: float, lock_seconds: float
    ) -> IdempotencyState:
        # Repeats poll this while the owner works: answer them from a reader, so waiting costs
        # no write transaction. Only taking the key (new, or its lock ran out) writes.
        row = await self._read(lambda c: c.execute(Q["idempotency_get"], (key,)).fetchone())
        seen = _idempotency_seen(row, fingerprint, now)
        if seen is not None:
            return seen
        owner = secrets.token_hex(16)

        def op(c: sqlite3.Connection) -> IdempotencyState:
            # Look again inside the write transaction: another caller may have taken it since.
            row = c.execute(Q["idempotency_get"], (key,)).fetchone()
            seen = _idempotency_seen(row, fingerprint, now)
            if seen is not None:
                return seen
            lock_until = now + lock_seconds
            c.execute(
                Q["idempotency_lock"],
                {
                    "key": key,
                    "fingerprint": fingerprint,
                    "lock_until": lock_until,
                    "expires_at": lock_until,
                    "owner": owner,
                },
            )
            return IdempotencyState(state="owner", owner=owner)

        return await self._write(op)

    async def idempotency_finish(self, write: IdempotentWrite) -> None:
        await self._write(lambda c: _finish_idempotency(c, write))

    async def idempotency_release(self, key: str, owner: str | None = None) -> None:
        if owner is None:
            await self._write(lambda c: c.execute(Q["idempotency_release"], (key,)))
        else:
            await self._write(lambda c: c.execute(Q["idempotency_release_owned"], (key, owner)))

    async def purge_expired(self, now: float) -> int:
        cur = await self._write(lambda c: c.execute(Q["idempotency_purge"], (now,)), bulk=True)
        return int(cur.rowcount)

    # retention (sqlite_retention.py) ----------------------------------------------------------
    async def expire_payloads(
        self, now: float, default_seconds: float, limit: int, after: float | None = None
    ) -> ExpiryBatch:
        return await self._write(
            lambda c: sqlite_retention.expire(c, now, default_seconds, limit, after), bulk=True
        )

    async def prune_messages(
        self,
        before: float,
        now: float,
        limit: int,
        *,
        include_pending: bool = False,
        after: str | None = None,
    ) -> PruneBatch:
        return await self._write(
            lambda c: sqlite_retention.prune(c, before, now, limit, include_pending, after),
            bulk=True,
        )

    async def count_messages_before(self, before: float) -> int:
        return await self._read(lambda c: sqlite_retention.count_before(c, before))

    # helpers -----------------------------------------------------------------------------------
    async def _page(
        self, table: str, columns: str, where: str, args: list[Any], key: str, page: Page
    ) -> list[tuple[Any, ...]]:
        args = list(args)
        if page.after is not None:
            where += f" AND {key} {'<' if page.descending else '>'} ?"
            args.append(page.after)
        order = "DESC" if page.descending else "ASC"
        sql = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {key} {order} LIMIT ?"
        args.append(page.limit)
        return await self._read(lambda c: c.execute(sql, args).fetchall())


# row conversion ------------------------------------------------------------------------------


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our DDL has no ';' or '--' inside literals)."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _conflict_on_unique(
    fn: Callable[[sqlite3.Connection], Any],
) -> Callable[[sqlite3.Connection], Any]:
    def wrapped(c: sqlite3.Connection) -> Any:
        try:
            return fn(c)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise errors.Conflict("An entity with this identifier already exists") from exc
            raise

    return wrapped


def _idempotency_seen(
    row: tuple[Any, ...] | None, fingerprint: str, now: float
) -> IdempotencyState | None:
    """What a request finds under its key, or None when it may take the key.

    Keep in step with idempotency_begin in memory.py.
    """
    if row is None or row[5] <= now:
        return None  # new key, or past its replay window / lock (expires_at = lock_until)
    stored_fp, state, lock_until, status, body, _ = row
    if state == 1:
        if stored_fp and stored_fp != fingerprint:
            return IdempotencyState(state="mismatch")
        return IdempotencyState(
            state="done", response=StoredResponse(status=status, body=bytes(body))
        )
    if stored_fp != fingerprint:
        return IdempotencyState(state="mismatch")
    if lock_until is not None and lock_until > now:
        return IdempotencyState(state="pending")
    return None


def _finish_idempotency(c: sqlite3.Connection, write: IdempotentWrite) -> None:
    """Write the key's answer; with an owner, only while that owner still holds the key.

    Raising undoes the whole operation (its SAVEPOINT), so ``create_message`` writes no message
    for an owner that was taken over.
    """
    args = {
        "key": write.key,
        "status": write.response.status,
        "body": write.response.body,
        "expires_at": write.expires_at,
    }
    if write.owner is None:
        c.execute(Q["idempotency_finish"], args)
    elif c.execute(Q["idempotency_finish_owned"], {**args, "owner": write.owner}).rowcount != 1:
        raise errors.Conflict(KEY_TAKEN_OVER)


def _time_window(
    where: list[str], args: list[Any], before: float | None, after: float | None
) -> None:
    if before is not None:
        where.append("created_at < ?")
        args.append(before)
    if after is not None:
        where.append("created_at > ?")
        args.append(after)
