"""Messages: ingest (the durable hot path), listing and lookup."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from hookline import errors, ids
from hookline.api import http, idempotency
from hookline.api.applications import load as load_app
from hookline.api.http import Call, route
from hookline.api.schemas import MessageIn, MessageOut
from hookline.models import Message
from hookline.store.base import MessageFilter

TAG = "Message"
EMPTY = msgspec.Raw(b"{}")
_encoder = msgspec.json.Encoder()


def out(msg: Message, with_content: bool = True) -> MessageOut:
    return MessageOut(
        id=msg.id,
        event_type=msg.event_type,
        event_id=msg.event_id,
        channels=list(msg.channels) if msg.channels is not None else None,
        timestamp=http.iso(msg.created_at),
        payload=msgspec.Raw(msg.payload) if with_content else EMPTY,
    )


def with_content(call: Call) -> bool:
    return call.query("with_content") != "false"


@route(
    "POST",
    "/app/{app_id}/msg",
    status=202,
    body=MessageIn,
    response=MessageOut,
    query=("with_content",),
    tag=TAG,
)
async def create_message(call: Call, body: MessageIn) -> object:
    """Send a message: answered 202 once it and its delivery tasks are committed."""
    if call.api.backlog is not None:
        call.api.backlog.check()
    app = await call.api.apps.lookup(call.org_id, call.path("app_id"))
    if app is None:
        raise errors.NotFound()
    payload = bytes(body.payload)
    if not payload.lstrip().startswith(b"{"):
        raise errors.ValidationFailed(["body", "payload"], "payload must be a JSON object")
    msg = Message(
        id=ids.new(ids.MESSAGE),
        app_id=app.id,
        event_type=body.event_type,
        event_id=body.event_id,
        channels=tuple(body.channels) if body.channels else None,
        payload=payload,
        created_at=call.api.clock(),
    )
    encoded = _encoder.encode(out(msg, with_content(call)))
    pending = idempotency.current.get()
    write = pending.write(202, encoded) if pending is not None else None
    await call.api.store.create_message(msg, write)
    if pending is not None:
        pending.committed = True
    call.api.wakeup.notify()
    return Response(encoded, 202, media_type=http.JSON)


@route(
    "GET",
    "/app/{app_id}/msg",
    response=http.ListResponse,
    query=("limit", "iterator", "channel", "event_types", "before", "after", "with_content"),
    tag=TAG,
)
async def list_messages(call: Call) -> object:
    """List an application's messages, newest first."""
    app = await load_app(call)
    page = http.page(call, descending=True)
    flt = MessageFilter(
        channel=call.query("channel"),
        event_types=event_types_query(call),
        before=http.query_time(call, "before"),
        after=http.query_time(call, "after"),
    )
    items = await call.api.store.list_messages(app.id, flt, page)
    content = with_content(call)
    return http.listing(items, page, lambda m: m.id, lambda m: out(m, content))


@route("GET", "/app/{app_id}/msg/{msg_id}", response=MessageOut, query=("with_content",), tag=TAG)
async def get_message(call: Call) -> object:
    """Get a message by id or by its eventId."""
    return out(await load(call), with_content(call))


async def load(call: Call) -> Message:
    """The message named in the path, within the app named in the path, or 404."""
    app = await load_app(call)
    msg = await call.api.store.get_message(app.id, call.path("msg_id"))
    if msg is None:
        raise errors.NotFound()
    return msg


def event_types_query(call: Call) -> tuple[str, ...] | None:
    """``event_types`` given as repeated parameters or comma-separated (the SDK does the latter)."""
    values = call.request.query_params.getlist("event_types")
    names = tuple(n for v in values for n in v.split(",") if n)
    return names or None
