"""Rows of the PostgreSQL store: query arguments, record readers, and what an error means.

The record readers are SQLite's (``sqlite_rows``): both schemas have the same columns in the same
order with the same JSON encodings, and the readers only index a row, which an asyncpg
``Record`` allows. The argument builders are this dialect's own: PostgreSQL takes positional
``$n`` parameters and real booleans. Keep them in step with ``sql/postgres/queries.sql``.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from hookline import errors
from hookline.models import (
    Application,
    Attempt,
    Endpoint,
    EndpointHealth,
    EventType,
    StoredResponse,
)
from hookline.store import sqlite_rows
from hookline.store.base import IdempotencyState

# the readers and column lists, shared with the SQLite store (see the module docstring)
app = sqlite_rows.app
endpoint = sqlite_rows.endpoint
event_type = sqlite_rows.event_type
message = sqlite_rows.message
attempt = sqlite_rows.attempt
health = sqlite_rows.health
opt_json = sqlite_rows.opt_json
str_tuple = sqlite_rows.str_tuple
APP_COLUMNS = sqlite_rows.APP_COLUMNS
ENDPOINT_COLUMNS = sqlite_rows.ENDPOINT_COLUMNS
EVENT_TYPE_COLUMNS = sqlite_rows.EVENT_TYPE_COLUMNS
MESSAGE_COLUMNS = sqlite_rows.MESSAGE_COLUMNS
ATTEMPT_COLUMNS = sqlite_rows.ATTEMPT_COLUMNS
_json = sqlite_rows.encoder

# Errors that say the database cannot be reached or cannot take writes now, not that this
# write is wrong: the API answers them 503 with Retry-After. asyncpg raises OSError subclasses
# (refused, reset) and TimeoutError for the socket; the rest are server answers (class 08
# connection, 53 resources such as a full disk, 57 shut down or restarting, 25006 a read-only
# standby). InterfaceError covers a connection closed under a running statement.
# InternalClientError is what asyncpg raises on a pooled connection the server closed while it
# sat idle (a shutdown's FATAL 57P01 read before the socket closed leaves its protocol mid-error,
# asyncpg issue 784): the database is going away, and the connection is BROKEN_CONNECTION.
BROKEN_CONNECTION: tuple[type[BaseException], ...] = (asyncpg.InternalClientError,)
UNREACHABLE: tuple[type[BaseException], ...] = (
    *BROKEN_CONNECTION,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.InterfaceError,
)
RETRY_AGAIN = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def app_args(a: Application) -> tuple[Any, ...]:
    """``app_insert``'s arguments."""
    return (
        a.id,
        a.org_id,
        a.uid,
        a.name,
        a.throttle_rate,
        _json.encode(a.metadata).decode(),
        a.created_at,
        a.updated_at,
    )


def event_type_args(e: EventType) -> tuple[Any, ...]:
    """``event_type_insert``'s arguments."""
    return (
        e.org_id,
        e.name,
        e.description,
        e.archived,
        e.deprecated,
        e.feature_flag,
        opt_json(e.schemas),
        e.created_at,
        e.updated_at,
    )


def endpoint_args(e: Endpoint) -> tuple[Any, ...]:
    """``endpoint_insert``'s arguments."""
    return (
        e.id,
        e.app_id,
        e.uid,
        e.url,
        e.description,
        e.disabled,
        opt_json(e.event_types),
        opt_json(e.channels),
        e.rate_limit,
        e.throttle_rate,
        _json.encode(e.metadata).decode(),
        _json.encode(e.headers).decode(),
        _json.encode(e.keys).decode(),
        e.created_at,
        e.updated_at,
    )


def attempt_args(a: Attempt) -> tuple[Any, ...]:
    """``attempt_insert``'s arguments."""
    return (
        a.id,
        a.msg_id,
        a.endpoint_id,
        a.app_id,
        a.url,
        int(a.status),
        a.response_status_code,
        a.response,
        a.duration_ms,
        int(a.trigger),
        a.created_at,
    )


def health_args(h: EndpointHealth) -> tuple[Any, ...]:
    """``health_upsert``'s arguments."""
    return (
        h.endpoint_id,
        h.failures,
        h.failing_since,
        h.circuit_open,
        h.paused_until,
        h.cooldown,
        h.probing,
        h.tokens,
        h.tokens_at,
    )


def rowcount(status: str) -> int:
    """Rows a statement changed, from asyncpg's command tag (``"UPDATE 3"``, ``"INSERT 0 1"``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def unavailable(exc: BaseException) -> errors.Unavailable:
    """The 503 a client gets when ``exc`` kept the database from answering."""
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        refusal = errors.Unavailable("The database is out of resources; retry later", retry_after=5)
    elif isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        refusal = errors.Unavailable("The database is read-only; retry later", retry_after=5)
    else:
        refusal = errors.Unavailable("The database is unreachable; retry later", retry_after=1)
    refusal.__cause__ = exc
    return refusal


def idempotency_seen(
    row: asyncpg.Record | None, fingerprint: str, now: float
) -> IdempotencyState | None:
    """What a request finds under its key, or None when it may take the key.

    Keep in step with ``_idempotency_seen`` in sqlite.py and ``idempotency_lock`` (its WHERE).
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


class Where:
    """A WHERE clause built from fixed fragments, numbering its ``$n`` parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, fragment: str, *values: Any) -> None:
        """``fragment`` with ``{}`` for each value, in order."""
        marks = []
        for value in values:
            self.args.append(value)
            marks.append(f"${len(self.args)}")
        self.parts.append(fragment.format(*marks))

    def mark(self, value: Any) -> str:
        """A parameter outside the WHERE clause (a LIMIT)."""
        self.args.append(value)
        return f"${len(self.args)}"

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "true"
