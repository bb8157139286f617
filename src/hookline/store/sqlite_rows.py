"""Rows of the SQLite store and the records they hold: column lists, encoders, converters.

Keep the column lists in step with the named queries in ``sql/sqlite/queries.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from hookline.models import (
    Application,
    Attempt,
    Endpoint,
    EndpointHealth,
    EventType,
    Message,
    MessageStatus,
    SigningKey,
    Trigger,
)

encoder = msgspec.json.Encoder()  # JSON columns
keys_decoder = msgspec.json.Decoder(tuple[SigningKey, ...])
str_map = msgspec.json.Decoder(dict[str, str])
str_tuple = msgspec.json.Decoder(tuple[str, ...])
any_map = msgspec.json.Decoder(dict[str, object])

APP_COLUMNS = "id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at"
ENDPOINT_COLUMNS = (
    "id, app_id, uid, url, description, disabled, event_types, channels, rate_limit, "
    "throttle_rate, metadata, headers, keys, created_at, updated_at"
)
EVENT_TYPE_COLUMNS = (
    "org_id, name, description, archived, deprecated, feature_flag, schemas, created_at, updated_at"
)
MESSAGE_COLUMNS = (
    "id, app_id, event_type, event_id, channels, payload, created_at, tags, deliver_at, "
    "expires_at, trace_context"
)
HEALTH_COLUMNS = (
    "endpoint_id, failures, failing_since, circuit_open, paused_until, cooldown, probing, "
    "tokens, tokens_at"
)
ATTEMPT_COLUMNS = (
    "id, msg_id, endpoint_id, app_id, url, status, response_status_code, response, "
    "duration_ms, trigger, created_at"
)


def opt_json(value: Any) -> str | None:
    return None if value is None else encoder.encode(value).decode()


def app_row(a: Application) -> dict[str, Any]:
    return {
        "id": a.id,
        "org_id": a.org_id,
        "uid": a.uid,
        "name": a.name,
        "throttle_rate": a.throttle_rate,
        "metadata": encoder.encode(a.metadata).decode(),
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    }


def app(r: tuple[Any, ...]) -> Application:
    return Application(
        id=r[0],
        org_id=r[1],
        uid=r[2],
        name=r[3],
        throttle_rate=r[4],
        metadata=str_map.decode(r[5]),
        created_at=r[6],
        updated_at=r[7],
    )


def event_type_row(e: EventType) -> dict[str, Any]:
    return {
        "org_id": e.org_id,
        "name": e.name,
        "description": e.description,
        "archived": int(e.archived),
        "deprecated": int(e.deprecated),
        "feature_flag": e.feature_flag,
        "schemas": opt_json(e.schemas),
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }


def event_type(r: tuple[Any, ...]) -> EventType:
    return EventType(
        org_id=r[0],
        name=r[1],
        description=r[2],
        archived=bool(r[3]),
        deprecated=bool(r[4]),
        feature_flag=r[5],
        schemas=None if r[6] is None else any_map.decode(r[6]),
        created_at=r[7],
        updated_at=r[8],
    )


def endpoint_row(e: Endpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "app_id": e.app_id,
        "uid": e.uid,
        "url": e.url,
        "description": e.description,
        "disabled": int(e.disabled),
        "event_types": opt_json(e.event_types),
        "channels": opt_json(e.channels),
        "rate_limit": e.rate_limit,
        "throttle_rate": e.throttle_rate,
        "metadata": encoder.encode(e.metadata).decode(),
        "headers": encoder.encode(e.headers).decode(),
        "keys": encoder.encode(e.keys).decode(),
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    }


def endpoint(r: tuple[Any, ...]) -> Endpoint:
    return Endpoint(
        id=r[0],
        app_id=r[1],
        uid=r[2],
        url=r[3],
        description=r[4],
        disabled=bool(r[5]),
        event_types=None if r[6] is None else str_tuple.decode(r[6]),
        channels=None if r[7] is None else str_tuple.decode(r[7]),
        rate_limit=r[8],
        throttle_rate=r[9],
        metadata=str_map.decode(r[10]),
        headers=str_map.decode(r[11]),
        keys=keys_decoder.decode(r[12]),
        created_at=r[13],
        updated_at=r[14],
    )


def message(r: tuple[Any, ...]) -> Message:
    return Message(
        id=r[0],
        app_id=r[1],
        event_type=r[2],
        event_id=r[3],
        channels=None if r[4] is None else str_tuple.decode(r[4]),
        payload=bytes(r[5]),
        created_at=r[6],
        tags=None if r[7] is None else str_tuple.decode(r[7]),
        deliver_at=r[8],
        expires_at=r[9],
        trace_context=r[10],
    )


def attempt_row(a: Attempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "msg_id": a.msg_id,
        "endpoint_id": a.endpoint_id,
        "app_id": a.app_id,
        "url": a.url,
        "status": int(a.status),
        "response_status_code": a.response_status_code,
        "response": a.response,
        "duration_ms": a.duration_ms,
        "trigger": int(a.trigger),
        "created_at": a.created_at,
    }


def attempt(r: tuple[Any, ...]) -> Attempt:
    return Attempt(
        id=r[0],
        msg_id=r[1],
        endpoint_id=r[2],
        app_id=r[3],
        url=r[4],
        status=MessageStatus(r[5]),
        response_status_code=r[6],
        response=r[7],
        duration_ms=r[8],
        trigger=Trigger(r[9]),
        created_at=r[10],
    )


def health_row(h: EndpointHealth) -> dict[str, Any]:
    return {
        "endpoint_id": h.endpoint_id,
        "failures": h.failures,
        "failing_since": h.failing_since,
        "circuit_open": int(h.circuit_open),
        "paused_until": h.paused_until,
        "cooldown": h.cooldown,
        "probing": int(h.probing),
        "tokens": h.tokens,
        "tokens_at": h.tokens_at,
    }


def health(r: tuple[Any, ...]) -> EndpointHealth:
    return EndpointHealth(
        endpoint_id=r[0],
        failures=r[1],
        failing_since=r[2],
        circuit_open=bool(r[3]),
        paused_until=r[4],
        cooldown=r[5],
        probing=bool(r[6]),
        tokens=r[7],
        tokens_at=r[8],
    )


def by_id(
    c: sqlite3.Connection,
    table: str,
    columns: str,
    wanted: set[str],
    build: Callable[[tuple[Any, ...]], Any],
    key: str = "id",
) -> dict[str, Any]:
    marks = ",".join("?" * len(wanted))
    rows = c.execute(f"SELECT {columns} FROM {table} WHERE {key} IN ({marks})", list(wanted))
    return {r[0]: build(r) for r in rows}


def endpoints_by_id(c: sqlite3.Connection, wanted: set[str]) -> dict[str, Endpoint]:
    return by_id(c, "endpoints", ENDPOINT_COLUMNS, wanted, endpoint)


def messages_by_id(c: sqlite3.Connection, wanted: set[str]) -> dict[str, Message]:
    return by_id(c, "messages", MESSAGE_COLUMNS, wanted, message)


def health_by_id(c: sqlite3.Connection, wanted: set[str]) -> dict[str, EndpointHealth]:
    return by_id(c, "endpoint_health", HEALTH_COLUMNS, wanted, health, key="endpoint_id")
