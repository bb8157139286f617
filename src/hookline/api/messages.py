"""Messages: ingest (the durable hot path), listing and lookup."""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING

import msgspec
from starlette.responses import Response

from hookline import errors, ids
from hookline.api import applications, http, idempotency, schemas
from hookline.api.applications import load as load_app
from hookline.api.http import Call, route
from hookline.api.schemas import ApplicationIn, MessageIn, MessageOut
from hookline.models import Application, Message
from hookline.store.base import MessageFilter

if TYPE_CHECKING:
    from hookline.tracing import IngestSpan

TAG = "Message"
# How far ahead ``deliverAt`` may be: Svix documents "no more than 24 hours in the future".
# Svix also asks for at least a minute ahead; hookline takes any time, and one already past
# means "now" (the store never schedules a first attempt before the message's creation).
MAX_DELIVER_AHEAD_SECONDS = 24 * 3600
_UID = re.compile(schemas.NAME_PATTERN)
EMPTY = msgspec.Raw(b"{}")
# What Svix's server shows for a message whose payload expired (MessageOut, with_content)
EXPIRED = msgspec.Raw(b'{"expired":true}')
DAY_SECONDS = 86400.0
_encoder = msgspec.json.Encoder()


def out(msg: Message, with_content: bool = True) -> MessageOut:
    return MessageOut(
        id=msg.id,
        event_type=msg.event_type,
        event_id=msg.event_id,
        channels=list(msg.channels) if msg.channels is not None else None,
        timestamp=http.iso(msg.created_at),
        payload=_content(msg) if with_content else EMPTY,
        tags=list(msg.tags) if msg.tags is not None else None,
        deliver_at=http.iso(msg.deliver_at) if msg.deliver_at is not None else None,
    )


def _content(msg: Message) -> msgspec.Raw:
    """The payload as delivered, or Svix's marker once it expired (``EXPIRED_PAYLOAD``)."""
    return msgspec.Raw(msg.payload) if msg.payload else EXPIRED


def with_content(call: Call) -> bool:
    return http.query_bool(call, "with_content", True)


@route(
    "POST",
    "/app/{app_id}/msg",
    status=202,
    body=MessageIn,
    response=MessageOut,
    query=("with_content",),
    tag=TAG,
)
async def create_message(call: Call, body: MessageIn, span: IngestSpan | None = None) -> object:
    """Send a message: answered 202 once it and its delivery tasks are committed.

    With ``application``, an app named by the path's ``app_id`` (as its uid) is created first
    when there is none: a commit of its own, so a message refused after that leaves the app in
    place, as if it had been created with ``POST /app``.

    With tracing on this runs again inside the ingest span, ``span`` (``hookline.tracing``).
    """
    if call.api.tracing is not None and span is None:
        traced = functools.partial(create_message, call, body)
        return await call.api.tracing.ingest(call.request.headers, traced)
    if call.api.backlog is not None:
        call.api.backlog.check()
    payload = bytes(body.payload)
    if not payload.lstrip().startswith(b"{"):
        raise errors.ValidationFailed(["body", "payload"], "payload must be a JSON object")
    now = call.api.clock()
    deliver_at = None if body.deliver_at is None else body.deliver_at.timestamp()
    if deliver_at is not None and deliver_at > now + MAX_DELIVER_AHEAD_SECONDS:
        raise errors.ValidationFailed(
            ["body", "deliverAt"], "deliverAt must be no more than 24 hours in the future"
        )
    # the message's own period (Svix's 5..90 days), else the setting (any fraction of a day)
    period = body.payload_retention_period
    days = call.api.payload_retention_days if period is None else float(period)
    ref = call.path("app_id")
    app = await call.api.apps.lookup(call.org_id, ref)
    if app is None:
        if body.application is None:
            raise errors.NotFound()
        app = await create_app_inline(call, ref, body.application)
    msg = Message(
        id=ids.new(ids.MESSAGE),
        app_id=app.id,
        event_type=body.event_type,
        event_id=body.event_id,
        channels=tuple(body.channels) if body.channels else None,
        tags=tuple(dict.fromkeys(body.tags)) if body.tags else None,  # a set, as Svix keeps
        deliver_at=deliver_at,
        payload=payload,
        created_at=now,
        expires_at=now + DAY_SECONDS * days,
    )
    if span is not None:
        msg = span.stamp(msg)  # its traceparent, which the delivery attempts' spans link to
    encoded = _encoder.encode(out(msg, with_content(call)))
    pending = idempotency.current.get()
    write = pending.write(202, encoded) if pending is not None else None
    await call.api.store.create_message(msg, write)
    if pending is not None:
        pending.committed = True
    call.api.wakeup.notify()
    return Response(encoded, 202, media_type=http.JSON)


async def create_app_inline(call: Call, ref: str, body: ApplicationIn) -> Application:
    """Svix's ``MessageIn.application``: create the app whose uid is the path's ``app_id``."""
    if len(ref) > 256 or not _UID.fullmatch(ref) or ref.startswith(f"{ids.APP}_"):
        # an app id (app_...) names an app that was deleted or never existed: not a uid to take
        raise errors.NotFound()
    if body.uid is not None and body.uid != ref:
        raise errors.ValidationFailed(
            ["body", "application", "uid"], "application.uid must be absent or the path's app_id"
        )
    app = applications.new(call.org_id, msgspec.structs.replace(body, uid=ref), time.time())
    try:
        await call.api.store.create_app(app)
    except errors.Conflict:
        # another request created it in between: Svix ignores ``application`` then
        existing = await call.api.store.get_app(call.org_id, ref)
        if existing is None:
            raise
        return existing
    return app


@route(
    "GET",
    "/app/{app_id}/msg",
    response=http.ListResponse[MessageOut],
    query=(
        "limit",
        "iterator",
        "channel",
        "tag",
        "event_types",
        "before",
        "after",
        "with_content",
    ),
    tag=TAG,
)
async def list_messages(call: Call) -> object:
    """List an application's messages, newest first."""
    app = await load_app(call)
    page = http.page(call, descending=True)
    flt = MessageFilter(
        channel=call.query("channel"),
        tag=call.query("tag"),
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
    for name in names:
        if len(name) > 256 or not _UID.fullmatch(name):
            raise errors.ValidationFailed(
                ["query", "event_types"], f"{name!r} is not an event type name"
            )
    return names or None
