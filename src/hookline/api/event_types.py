"""Event types: the catalogue of message kinds an organisation sends; endpoints filter on them."""

from __future__ import annotations

import time

import msgspec

from hookline import errors
from hookline.api import http
from hookline.api.http import Call, route
from hookline.api.schemas import EventTypeIn, EventTypeOut, EventTypePatch, EventTypeUpdate
from hookline.models import EventType

TAG = "Event Type"


def out(et: EventType) -> EventTypeOut:
    return EventTypeOut(
        name=et.name,
        description=et.description,
        archived=et.archived,
        deprecated=et.deprecated,
        feature_flag=et.feature_flag,
        schemas=et.schemas,
        created_at=http.iso(et.created_at),
        updated_at=http.iso(et.updated_at),
    )


async def _load(call: Call) -> EventType:
    et = await call.api.store.get_event_type(call.org_id, call.path("event_type_name"))
    if et is None:
        raise errors.NotFound()
    return et


@route(
    "GET",
    "/event-type",
    response=http.ListResponse[EventTypeOut],
    query=("limit", "iterator", "order", "include_archived"),
    tag=TAG,
)
async def list_event_types(call: Call) -> object:
    """List event types (archived ones only with ``include_archived=true``)."""
    page = http.page(call)
    archived = http.query_bool(call, "include_archived", False)
    items = await call.api.store.list_event_types(call.org_id, page, archived)
    return http.listing(items, page, lambda e: e.name, out)


@route("POST", "/event-type", status=201, body=EventTypeIn, response=EventTypeOut, tag=TAG)
async def create_event_type(call: Call, body: EventTypeIn) -> object:
    """Create an event type; 409 if the name exists."""
    now = time.time()
    et = EventType(
        org_id=call.org_id,
        name=body.name,
        description=body.description,
        archived=body.archived,
        deprecated=body.deprecated,
        feature_flag=body.feature_flag,
        schemas=body.schemas,
        created_at=now,
        updated_at=now,
    )
    try:
        await call.api.store.create_event_type(et)
    except errors.Conflict:
        raise errors.Conflict(f"Event type {body.name!r} already exists") from None
    return out(et)


@route("GET", "/event-type/{event_type_name}", response=EventTypeOut, tag=TAG)
async def get_event_type(call: Call) -> object:
    """Get an event type."""
    return out(await _load(call))


@route("PUT", "/event-type/{event_type_name}", body=EventTypeUpdate, response=EventTypeOut, tag=TAG)
async def update_event_type(call: Call, body: EventTypeUpdate) -> object:
    """Replace an event type's fields."""
    et = await _load(call)
    updated = msgspec.structs.replace(
        et,
        description=body.description,
        archived=body.archived,
        deprecated=body.deprecated,
        feature_flag=body.feature_flag,
        schemas=body.schemas,
        updated_at=time.time(),
    )
    await call.api.store.update_event_type(updated)
    return out(updated)


@route(
    "PATCH", "/event-type/{event_type_name}", body=EventTypePatch, response=EventTypeOut, tag=TAG
)
async def patch_event_type(call: Call, body: EventTypePatch) -> object:
    """Change the given fields of an event type."""
    et = await _load(call)
    updated = msgspec.structs.replace(et, **http.given_fields(body), updated_at=time.time())
    await call.api.store.update_event_type(updated)
    return out(updated)


@route("DELETE", "/event-type/{event_type_name}", status=204, tag=TAG)
async def delete_event_type(call: Call) -> None:
    """Archive an event type: existing endpoints keep it, new ones cannot subscribe to it."""
    et = await _load(call)
    await call.api.store.update_event_type(
        msgspec.structs.replace(et, archived=True, updated_at=time.time())
    )
