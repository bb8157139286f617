"""The PostgreSQL store: one database shared by any number of API and worker processes and hosts.

Selected by ``DATABASE_URL=postgresql://user:password@host:port/dbname`` (or ``postgres://``).
asyncpg is imported with this module, which ``store.from_url`` imports only for such a URL.

- **Connections** (``postgres_pool.Database``, this class's base): an asyncpg pool of
  ``pool_size`` connections (default ``POOL_SIZE``), opened lazily past the first and replaced
  by the pool when they break. A database that cannot be
  reached, a connection lost under a statement or a failing commit raises
  ``errors.Unavailable`` (the API's 503 with ``Retry-After``); nothing is acknowledged that was
  not committed. ``check_writable`` reports such refusals for ``REFUSALS_SHOWN_SECONDS``
  unless a write succeeds meanwhile.
- **Writes**: each method is one transaction (READ COMMITTED). ``create_message`` calls are
  committed in batches (``postgres_ingest``); claims and completions lock the rows they
  decide on (``postgres_claiming``), so concurrent claimers in any number of processes never
  share a task or overspend a bucket.
- **Clock**: ``now()`` is the database server's clock, not this host's. Leases, due times,
  buckets and cool-downs written by one host are compared by another, and hosts' wall clocks
  drift apart; the server is the one clock they all share. Reading it per call would make
  ``now()`` (synchronous in the Protocol, and called on every ingest) a round trip, so the
  store measures the offset between the server's ``clock_timestamp()`` and the local clock at
  open (the sample with the shortest round trip of ``CLOCK_SAMPLES``, halving that round
  trip) and again every ``CLOCK_REFRESH_SECONDS``, and ``now()`` is local time plus offset. The
  error is about half a round trip plus the local clock's drift over the refresh interval:
  well under a millisecond on a LAN, against leases of tens of seconds.
- **Wake-ups**: LISTEN/NOTIFY (``postgres_wakeup``).
- **Migrations**: numbered files in ``sql/postgres/migrations``, applied in order in one
  transaction under an advisory lock, so processes starting together apply each version
  once; applied versions are kept in ``hookline_migrations``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from hookline import errors, ids, settings
from hookline.circuit import CircuitPolicy
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
    HealthEvent,
    Message,
    MessageStatus,
    Org,
    Page,
    Release,
    Token,
)
from hookline.store import (
    observer,
    postgres_ingest,
    postgres_pool,
    postgres_retention,
    postgres_wakeup,
    queries,
)
from hookline.store import postgres_claiming as claiming
from hookline.store import postgres_rows as rows
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
from hookline.wakeup import Wakeup

if TYPE_CHECKING:
    from hookline.metrics import Metrics

Q = queries.load("postgres")
FOREVER = 1e18  # an upper bound for open time windows, in epoch seconds


def redact(url: str) -> str:
    """The URL without its password, for logs and error lines."""
    return settings.redacted_url(url)


class PostgresStore(postgres_pool.Database):
    """The ``Store`` Protocol on a PostgreSQL database (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = postgres_pool.POOL_SIZE,
        local_clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            url, pool_size=pool_size, local_clock=local_clock, commits=observer.of(metrics)
        )
        self._origin = secrets.token_hex(8)
        self._wakeup = postgres_wakeup.PgWakeup(self._connect, self._origin)
        self._ingest = postgres_ingest.Ingest(
            self._transaction, self._origin, lanes=max(1, min(postgres_ingest.LANES, pool_size - 1))
        )

    # lifecycle ---------------------------------------------------------------------------------
    async def close(self) -> None:
        await self._wakeup.close()
        await super().close()

    async def migrate(self) -> None:
        """Apply the migrations this database lacks, once, whoever else migrates at once."""

        async def apply(c: Any) -> None:
            await c.execute(Q["migrations_lock"])  # held until this transaction ends
            await c.execute(Q["migrations_table"])
            current = await c.fetchval(Q["migrations_current"])
            for version, sql in queries.migrations("postgres"):
                if version > current:
                    await c.execute(sql)
                    await c.execute(Q["migration_done"], version)

        try:
            await self._transaction(apply)
        except asyncpg.PostgresError as exc:  # e.g. no right to create tables
            raise errors.Unavailable(f"cannot migrate the database: {exc}") from exc

    def wakeup(self) -> Wakeup:
        """LISTEN/NOTIFY across processes, plus this process's own ``notify``."""
        return self._wakeup

    # tenants and tokens ------------------------------------------------------------------------
    async def ensure_org(self, name: str, now: float) -> Org:
        async def op(c: Any) -> Any:
            row = await c.fetchrow(Q["org_by_name"], name)
            if row is None:  # another process may insert it first: then read theirs
                await c.execute(Q["org_insert"], ids.new(ids.ORG), name, now)
                row = await c.fetchrow(Q["org_by_name"], name)
            return row

        row = await self._transaction(op)
        return Org(id=row[0], name=row[1], created_at=row[2])

    async def create_token(self, org_id: str, name: str, token_hash: str, now: float) -> Token:
        token = Token(id=ids.new(ids.TOKEN), org_id=org_id, name=name, created_at=now)
        await self._execute(
            Q["token_insert"],
            token.id,
            org_id,
            name,
            token_hash,
            now,
            conflict="A token with this secret already exists",
        )
        return token

    async def find_token(self, token_hash: str) -> Token | None:
        r = await self._fetchrow(Q["token_by_hash"], token_hash)
        return None if r is None else Token(id=r[0], org_id=r[1], name=r[2], created_at=r[3])

    async def count_tokens(self) -> int:
        return int((await self._fetchrow(Q["token_count"]))[0])

    async def list_tokens(self) -> list[TokenInfo]:
        return [
            TokenInfo(
                id=r[0], name=r[1], org_id=r[2], org_name=r[3], created_at=r[4], last_used_at=r[5]
            )
            for r in await self._fetch(Q["token_list"])
        ]

    async def revoke_token(self, token_id: str) -> bool:
        return await self._execute(Q["token_delete"], token_id) > 0

    async def touch_tokens(self, used: Mapping[str, float]) -> None:
        args = [(token_id, at) for token_id, at in used.items()]
        if args:
            await self._transaction(lambda c: c.executemany(Q["token_touch"], args))

    # applications ------------------------------------------------------------------------------
    async def create_app(self, app: Application) -> None:
        await self._execute(
            Q["app_insert"], *rows.app_args(app), conflict="An application with this uid exists"
        )

    async def get_app(self, org_id: str, ref: str) -> Application | None:
        r = await self._fetchrow(Q["app_get"], org_id, ref)
        return None if r is None else rows.app(r)

    async def find_app(self, app_id: str) -> Application | None:
        r = await self._fetchrow(Q["app_by_id"], app_id)
        return None if r is None else rows.app(r)

    async def list_apps(self, org_id: str, page: Page) -> list[Application]:
        where = rows.Where()
        where.add("org_id = {}", org_id)
        found = await self._page("applications", rows.APP_COLUMNS, where, "id", page)
        return [rows.app(r) for r in found]

    async def update_app(self, app: Application) -> None:
        args = rows.app_args(app)
        await self._execute(
            Q["app_update"], *args[:6], args[7], conflict="An application with this uid exists"
        )

    async def delete_app(self, org_id: str, app_id: str) -> bool:
        async def op(c: Any) -> bool:
            # attempts carry no foreign key (history outlives endpoints), so remove them here
            await c.execute(Q["attempts_delete_app"], app_id, org_id)
            return rows.rowcount(await c.execute(Q["app_delete"], app_id, org_id)) > 0

        return await self._transaction(op)  # cascades to every message and delivery

    # event types -------------------------------------------------------------------------------
    async def create_event_type(self, event_type: EventType) -> None:
        await self._execute(
            Q["event_type_insert"],
            *rows.event_type_args(event_type),
            conflict="An event type with this name already exists",
        )

    async def get_event_type(self, org_id: str, name: str) -> EventType | None:
        r = await self._fetchrow(Q["event_type_get"], org_id, name)
        return None if r is None else rows.event_type(r)

    async def list_event_types(
        self, org_id: str, page: Page, include_archived: bool
    ) -> list[EventType]:
        where = rows.Where()
        where.add("org_id = {}", org_id)
        if not include_archived:
            where.add("NOT archived")
        found = await self._page("event_types", rows.EVENT_TYPE_COLUMNS, where, "name", page)
        return [rows.event_type(r) for r in found]

    async def update_event_type(self, event_type: EventType) -> None:
        args = rows.event_type_args(event_type)
        await self._execute(Q["event_type_update"], *args[:7], args[8])

    # endpoints ---------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None:
        await self._execute(
            Q["endpoint_insert"],
            *rows.endpoint_args(endpoint),
            conflict="An endpoint with this uid already exists",
        )

    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint | None:
        r = await self._fetchrow(Q["endpoint_get"], app_id, ref)
        return None if r is None else rows.endpoint(r)

    async def list_endpoints(self, app_id: str, page: Page) -> list[Endpoint]:
        where = rows.Where()
        where.add("app_id = {}", app_id)
        found = await self._page("endpoints", rows.ENDPOINT_COLUMNS, where, "id", page)
        return [rows.endpoint(r) for r in found]

    async def update_endpoint(self, endpoint: Endpoint) -> None:
        args = rows.endpoint_args(endpoint)

        async def op(c: Any) -> None:
            was = await c.fetchval(Q["endpoint_disabled_get"], endpoint.id, endpoint.app_id)
            await c.execute(Q["endpoint_update"], *args[:13], args[14])
            if was and not endpoint.disabled:
                # enabled again by hand: its failure history no longer counts against it
                await c.execute(Q["health_reset"], [endpoint.id])

        try:
            await self._transaction(op)
        except asyncpg.UniqueViolationError as exc:
            raise errors.Conflict("An endpoint with this uid already exists") from exc

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        return await self._execute(Q["endpoint_delete"], app_id, endpoint_id) > 0

    async def endpoint_stats(
        self, app_id: str, endpoint_id: str, since: float | None, until: float | None
    ) -> EndpointStats:
        found = await self._fetch(
            Q["endpoint_stats"],
            endpoint_id,
            app_id,
            0.0 if since is None else since,
            FOREVER if until is None else until,
        )
        return EndpointStats(**{MessageStatus(s).text: n for s, n in found})

    # messages ----------------------------------------------------------------------------------
    async def create_message(
        self, message: Message, idempotency: IdempotentWrite | None = None
    ) -> int:
        return await self._ingest.create(message, idempotency)

    async def get_message(self, app_id: str, ref: str) -> Message | None:
        r = await self._fetchrow(Q["message_get"], app_id, ref)
        return None if r is None else rows.message(r)

    async def list_messages(self, app_id: str, flt: MessageFilter, page: Page) -> list[Message]:
        where = rows.Where()
        where.add("app_id = {}", app_id)
        if flt.channel is not None:
            where.add("channels::jsonb ? {}", flt.channel)  # a top-level string of the array
        if flt.tag is not None:
            where.add("tags::jsonb ? {}", flt.tag)
        if flt.event_types:
            where.add("event_type = ANY({}::text[])", list(flt.event_types))
        _time_window(where, flt.before, flt.after)
        found = await self._page("messages", rows.MESSAGE_COLUMNS, where, "id", page)
        return [rows.message(r) for r in found]

    # the delivery queue ------------------------------------------------------------------------
    async def claim_due(self, now: float, policy: ClaimPolicy, lease_seconds: float) -> list[Claim]:
        if policy.limit <= 0:
            return []
        return await self._retrying(
            lambda c: claiming.claim(c, now, policy, lease_seconds),
            operation=observer.CLAIM,
            items=len,
        )

    async def complete(
        self, completions: Sequence[Completion], now: float, circuit: CircuitPolicy | None = None
    ) -> list[HealthEvent]:
        if not completions:
            return []
        return await self._retrying(
            lambda c: claiming.complete(c, completions, now, circuit),
            operation=observer.COMPLETE,
            items=lambda _: len(completions),
        )

    async def release(self, releases: Sequence[Release], now: float) -> int:
        if not releases:
            return 0

        async def op(c: Any) -> int:
            applied = rows.rowcount(
                await c.execute(
                    Q["delivery_release"],
                    now,
                    [r.msg_id for r in releases],
                    [r.endpoint_id for r in releases],
                    [r.lease for r in releases],
                    [r.due_at for r in releases],
                )
            )
            if applied:
                await c.execute(Q["notify"], self._origin)
            return applied

        return await self._transaction(op)

    async def next_due_at(self) -> float | None:
        value = (await self._fetchrow(Q["next_due"]))[0]
        return None if value is None else float(value)

    async def count_due(self, now: float, cap: int) -> int:
        return int((await self._fetchrow(Q["due_count"], now, cap))[0])

    async def stalled_since(self, now: float, lease_seconds: float) -> float | None:
        value = (await self._fetchrow(Q["stalled_since"], now, now + lease_seconds))[0]
        return None if value is None else float(value)

    async def probe_write(self, now: float) -> None:
        wrote_at = self.wrote_at
        if wrote_at is not None and time.monotonic() - wrote_at <= RECENT_WRITE_SECONDS:
            return  # a transaction just committed: that is the answer a probe would give
        try:
            await self._execute(Q["health_probe"], now)
        except asyncpg.PostgresError as exc:  # e.g. a read-only server after a failover
            raise errors.Unavailable(
                f"database cannot write: {type(exc).__name__}", retry_after=5
            ) from exc

    async def endpoint_health(self, endpoint_id: str) -> EndpointHealth | None:
        r = await self._fetchrow(Q["health_get"], endpoint_id)
        return None if r is None else rows.health(r)

    async def endpoint_summary(self) -> EndpointSummary:
        r = await self._fetchrow(Q["endpoint_summary"])
        return EndpointSummary(circuits_open=int(r[0]), disabled=int(r[1]))

    async def requeue(self, app_id: str, msg_id: str, endpoint_id: str, now: float) -> None:
        async def op(c: Any) -> None:
            msg = await c.fetchrow(Q["message_resendable"], app_id, msg_id)
            if msg is None or await c.fetchval(Q["endpoint_exists"], app_id, endpoint_id) is None:
                raise errors.NotFound()
            if not msg[1]:  # its payload expired: nothing to send
                raise errors.PayloadMissing()
            await c.execute(Q["delivery_requeue"], msg_id, endpoint_id, app_id, now, msg[0])
            await c.execute(Q["notify"], self._origin)

        await self._transaction(op)

    async def recover(
        self, app_id: str, endpoint_id: str, since: float, until: float | None, now: float
    ) -> int:
        async def op(c: Any) -> int:
            recovered = rows.rowcount(
                await c.execute(
                    Q["delivery_recover"],
                    app_id,
                    endpoint_id,
                    since,
                    FOREVER if until is None else until,
                    now,
                )
            )
            if recovered:
                await c.execute(Q["notify"], self._origin)
            return recovered

        return await self._transaction(op)

    # attempts and per-endpoint status ----------------------------------------------------------
    async def list_attempts(self, app_id: str, flt: AttemptFilter, page: Page) -> list[Attempt]:
        where = rows.Where()
        where.add("app_id = {}", app_id)
        if flt.msg_id is not None:
            where.add("msg_id = {}", flt.msg_id)
        if flt.endpoint_id is not None:
            where.add("endpoint_id = {}", flt.endpoint_id)
        if flt.status is not None:
            where.add("status = {}", int(flt.status))
        if flt.status_code_class is not None:
            if flt.status_code_class == 0:
                where.add("response_status_code = 0")
            else:
                where.add("response_status_code / 100 * 100 = {}", flt.status_code_class)
        _time_window(where, flt.before, flt.after)
        found = await self._page("attempts", rows.ATTEMPT_COLUMNS, where, "id", page)
        return [rows.attempt(r) for r in found]

    async def get_attempt(self, app_id: str, msg_id: str, attempt_id: str) -> Attempt | None:
        r = await self._fetchrow(Q["attempt_get"], app_id, msg_id, attempt_id)
        return None if r is None else rows.attempt(r)

    async def list_deliveries(
        self, app_id: str, msg_id: str, page: Page
    ) -> list[tuple[Endpoint, Delivery]]:
        cols = ", ".join(f"e.{c.strip()}" for c in rows.ENDPOINT_COLUMNS.split(","))
        where = rows.Where()
        where.add("d.msg_id = {}", msg_id)
        where.add("d.app_id = {}", app_id)
        if page.after is not None:
            where.add("e.id < {}" if page.descending else "e.id > {}", page.after)
        order = "DESC" if page.descending else "ASC"
        sql = (
            f"SELECT {cols}, d.status, d.attempts, d.due_at, d.updated_at "
            "FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id "
            f"WHERE {where.sql} ORDER BY e.id {order} LIMIT {where.mark(max(page.limit, 0))}"
        )
        out = []
        for r in await self._fetch(sql, *where.args):
            endpoint, (status, attempts, due_at, updated_at) = rows.endpoint(r[:15]), r[15:]
            state = MessageStatus(status)
            delivery = Delivery(
                msg_id=msg_id,
                endpoint_id=endpoint.id,
                app_id=app_id,
                status=state,
                attempts=attempts,
                next_attempt_at=due_at if state is MessageStatus.PENDING else None,
                updated_at=updated_at,
            )
            out.append((endpoint, delivery))
        return out

    # idempotency -------------------------------------------------------------------------------
    async def idempotency_begin(
        self, key: str, fingerprint: str, now: float, lock_seconds: float
    ) -> IdempotencyState:
        # Repeats poll this while the owner works: answer them from a read, so waiting costs
        # no write transaction. Only taking the key (new, or its lock ran out) writes.
        seen = rows.idempotency_seen(
            await self._fetchrow(Q["idempotency_get"], key), fingerprint, now
        )
        if seen is not None:
            return seen
        owner = secrets.token_hex(16)

        async def op(c: Any) -> IdempotencyState:
            lock_until = now + lock_seconds
            if await c.fetchval(Q["idempotency_lock"], key, fingerprint, lock_until, owner, now):
                return IdempotencyState(state="owner", owner=owner)
            # taken meanwhile by another request: the row is locked now, so this read says why
            row = await c.fetchrow(Q["idempotency_get"], key)
            return rows.idempotency_seen(row, fingerprint, now) or IdempotencyState(state="pending")

        return await self._transaction(op)

    async def idempotency_finish(self, write: IdempotentWrite) -> None:
        r = write.response
        if write.owner is None:
            await self._execute(
                Q["idempotency_finish"], write.key, r.status, r.body, write.expires_at
            )
        elif not await self._execute(
            Q["idempotency_finish_owned"],
            write.key,
            r.status,
            r.body,
            write.expires_at,
            write.owner,
        ):
            raise errors.Conflict(KEY_TAKEN_OVER)

    async def idempotency_release(self, key: str, owner: str | None = None) -> None:
        if owner is None:
            await self._execute(Q["idempotency_release"], key)
        else:
            await self._execute(Q["idempotency_release_owned"], key, owner)

    async def purge_expired(self, now: float) -> int:
        return await self._execute(Q["idempotency_purge"], now)

    # retention (postgres_retention.py) --------------------------------------------------------
    async def expire_payloads(
        self, now: float, default_seconds: float, limit: int, after: float | None = None
    ) -> ExpiryBatch:
        return await self._retrying(
            lambda c: postgres_retention.expire(c, now, default_seconds, limit, after)
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
        return await self._retrying(
            lambda c: postgres_retention.prune(c, before, now, limit, include_pending, after)
        )

    async def count_messages_before(self, before: float) -> int:
        async with self._connection() as c:
            return await postgres_retention.count_before(c, before)

    # helpers -----------------------------------------------------------------------------------
    async def _page(
        self, table: str, columns: str, where: rows.Where, key: str, page: Page
    ) -> list[Any]:
        if page.after is not None:
            where.add(f"{key} {'<' if page.descending else '>'} {{}}", page.after)
        order = "DESC" if page.descending else "ASC"
        sql = (
            f"SELECT {columns} FROM {table} WHERE {where.sql} "
            f"ORDER BY {key} {order} LIMIT {where.mark(max(page.limit, 0))}"
        )
        return await self._fetch(sql, *where.args)


def _time_window(where: rows.Where, before: float | None, after: float | None) -> None:
    if before is not None:
        where.add("created_at < {}", before)
    if after is not None:
        where.add("created_at > {}", after)
