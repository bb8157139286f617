"""Attempts: every HTTP request made for a message, and per-endpoint delivery status."""

from __future__ import annotations

from starlette.responses import Response

from hookline import errors
from hookline.api import http, messages
from hookline.api.applications import load as load_app
from hookline.api.endpoints import load as load_endpoint
from hookline.api.http import Call, route
from hookline.api.schemas import EmptyOut, MessageAttemptOut, MessageEndpointOut
from hookline.models import Attempt, Delivery, Endpoint, MessageStatus
from hookline.store.base import AttemptFilter

TAG = "Message Attempt"
ATTEMPT_QUERY = ("limit", "iterator", "status", "status_code_class", "before", "after")
STATUS_CLASSES = (0, 100, 200, 300, 400, 500)


def out(a: Attempt) -> MessageAttemptOut:
    return MessageAttemptOut(
        id=a.id,
        msg_id=a.msg_id,
        endpoint_id=a.endpoint_id,
        url=a.url,
        response=a.response,
        response_status_code=a.response_status_code,
        response_duration_ms=a.duration_ms,
        status=int(a.status),
        status_text=a.status.text,
        trigger_type=int(a.trigger),
        timestamp=http.iso(a.created_at),
    )


def _filter(call: Call, **scope: str | None) -> AttemptFilter:
    status = _int_query(call, "status", tuple(int(s) for s in MessageStatus))
    code_class = _int_query(call, "status_code_class", STATUS_CLASSES)
    return AttemptFilter(
        status=MessageStatus(status) if status is not None else None,
        status_code_class=code_class,
        before=http.query_time(call, "before"),
        after=http.query_time(call, "after"),
        **scope,
    )


def _int_query(call: Call, name: str, allowed: tuple[int, ...]) -> int | None:
    raw = call.query(name)
    if raw is None:
        return None
    value = http.strict_int(raw)
    if value not in allowed:
        raise errors.ValidationFailed(["query", name], f"{name} must be one of {list(allowed)}")
    return value


@route(
    "GET",
    "/app/{app_id}/attempt/msg/{msg_id}",
    response=http.ListResponse[MessageAttemptOut],
    query=(*ATTEMPT_QUERY, "endpoint_id"),
    tag=TAG,
)
async def list_attempts_by_msg(call: Call) -> object:
    """Attempts made for one message, newest first."""
    msg = await messages.load(call)
    page = http.page(call, descending=True)
    flt = _filter(call, msg_id=msg.id, endpoint_id=call.query("endpoint_id"))
    items = await call.api.store.list_attempts(msg.app_id, flt, page)
    return http.listing(items, page, lambda a: a.id, out)


@route(
    "GET",
    "/app/{app_id}/attempt/endpoint/{endpoint_id}",
    response=http.ListResponse[MessageAttemptOut],
    query=ATTEMPT_QUERY,
    tag=TAG,
)
async def list_attempts_by_endpoint(call: Call) -> object:
    """Attempts made to one endpoint, newest first."""
    ep = await load_endpoint(call)
    page = http.page(call, descending=True)
    items = await call.api.store.list_attempts(ep.app_id, _filter(call, endpoint_id=ep.id), page)
    return http.listing(items, page, lambda a: a.id, out)


@route(
    "GET", "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}", response=MessageAttemptOut, tag=TAG
)
async def get_attempt(call: Call) -> object:
    """One attempt."""
    msg = await messages.load(call)
    attempt = await call.api.store.get_attempt(msg.app_id, msg.id, call.path("attempt_id"))
    if attempt is None:
        raise errors.NotFound()
    return out(attempt)


def _destination(pair: tuple[Endpoint, Delivery]) -> MessageEndpointOut:
    ep, d = pair
    return MessageEndpointOut(
        id=ep.id,
        url=ep.url,
        description=ep.description,
        uid=ep.uid,
        disabled=ep.disabled,
        event_types=list(ep.event_types) if ep.event_types is not None else None,
        channels=list(ep.channels) if ep.channels is not None else None,
        throttle_rate=ep.throttle_rate,
        status=int(d.status),
        status_text=d.status.text,
        next_attempt=http.iso(d.next_attempt_at) if d.next_attempt_at is not None else None,
        created_at=http.iso(ep.created_at),
        updated_at=http.iso(d.updated_at),
    )


@route(
    "GET",
    "/app/{app_id}/msg/{msg_id}/endpoint",
    response=http.ListResponse[MessageEndpointOut],
    query=("limit", "iterator"),
    tag=TAG,
)
async def list_message_destinations(call: Call) -> object:
    """The message's status towards each endpoint it was routed to."""
    msg = await messages.load(call)
    page = http.page(call)
    items = await call.api.store.list_deliveries(msg.app_id, msg.id, page)
    return http.listing(items, page, lambda p: p[0].id, _destination)


@route(
    "POST",
    "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    status=202,
    response=EmptyOut,
    tag=TAG,
)
async def resend(call: Call) -> object:
    """Send the message to the endpoint again now (a manual attempt, then the usual retries).

    A message whose payload expired cannot be: 400 ``missing_payload``, as Svix answers.
    """
    app = await load_app(call)
    msg = await call.api.store.get_message(app.id, call.path("msg_id"))
    ep = await call.api.store.get_endpoint(app.id, call.path("endpoint_id"))
    if msg is None or ep is None:
        raise errors.NotFound()
    if not msg.payload:  # expired; requeue checks again in its transaction (the cleaner races)
        raise errors.PayloadMissing()
    await call.api.store.requeue(app.id, msg.id, ep.id, call.api.clock())
    call.api.wakeup.notify()
    # an empty JSON object, not an empty body: the svix SDK parses it as EmptyResponse
    return Response(b"{}", 202, media_type=http.JSON)
