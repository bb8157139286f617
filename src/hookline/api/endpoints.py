"""Endpoints: where an application's messages are delivered, with their secrets and headers."""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import yarl
from msgspec import UNSET

from hookline import errors, ids, signing
from hookline.api import http
from hookline.api.applications import load as load_app
from hookline.api.http import Call, route
from hookline.api.schemas import (
    EndpointHeadersIn,
    EndpointHeadersOut,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointSecretOut,
    EndpointSecretRotateIn,
    EndpointStatsOut,
    EndpointUpdate,
    RecoverIn,
    RecoverOut,
)
from hookline.models import Application, Endpoint, SigningKey

TAG = "Endpoint"
DEFAULT_GRACE_SECONDS = 24 * 3600  # an old secret keeps signing this long after a rotation
# Headers hookline sets itself or that would break the HTTP exchange.
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
RESERVED_PREFIXES = ("webhook-", "svix-")
# Values of these are write-only: GET …/headers names them under "sensitive" without the value.
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "x-auth-token"})


def out(ep: Endpoint) -> EndpointOut:
    types = list(ep.event_types) if ep.event_types is not None else None
    return EndpointOut(
        id=ep.id,
        url=ep.url,
        description=ep.description,
        uid=ep.uid,
        disabled=ep.disabled,
        event_types=types,
        filter_types=types,
        channels=list(ep.channels) if ep.channels is not None else None,
        throttle_rate=ep.throttle_rate,
        rate_limit=ep.rate_limit if ep.rate_limit is not None else ep.throttle_rate,
        metadata=ep.metadata,
        created_at=http.iso(ep.created_at),
        updated_at=http.iso(ep.updated_at),
    )


async def load(call: Call) -> Endpoint:
    """The endpoint named in the path, within the app named in the path, or 404."""
    app = await load_app(call)
    ep = await call.api.store.get_endpoint(app.id, call.path("endpoint_id"))
    if ep is None:
        raise errors.NotFound()
    return ep


# The characters RFC 3986 allows in a URI, and percent-encoded octets.
_URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")


def _check_url(call: Call, url: str) -> str:
    """``url`` if deliveries may go there, else 422: a non-public literal host is refused now.

    Parsed with yarl, as delivery parses it, so both judge the same host. The text must be a
    URI as RFC 3986 spells it (ASCII, no spaces or control characters, ``%`` only before two hex
    digits): what is stored is then exactly what every HTTP client sends, with nothing left to
    each one's own repair. International host names go in as punycode.
    """
    if not _URI.fullmatch(url):
        raise errors.ValidationFailed(
            ["body", "url"],
            "URL must be an RFC 3986 URI: ASCII letters, digits and -._~:/?#[]@!$&'()*+,;= only,"
            " % before two hex digits (percent-encode anything else, punycode for host names)",
        )
    try:
        parsed = yarl.URL(url)
    except ValueError as exc:
        raise errors.ValidationFailed(["body", "url"], f"Invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise errors.ValidationFailed(["body", "url"], "URL must be an absolute http(s) URL")
    refusal = call.api.egress_policy.refusal_for_url(parsed)
    if refusal is not None:
        raise errors.ValidationFailed(
            ["body", "url"],
            f"{refusal}; hookline does not deliver to non-public addresses"
            " (allow it with HOOKLINE_ALLOWED_SUBNETS)",
        )
    return url


async def _check_event_types(
    call: Call, names: list[str] | None, field: str
) -> tuple[str, ...] | None:
    if not names:
        return None
    for i, name in enumerate(names):
        et = await call.api.store.get_event_type(call.org_id, name)
        if et is None or et.archived:
            raise errors.ValidationFailed(
                ["body", field, i], f"Event type {name!r} does not exist or is archived"
            )
    return tuple(dict.fromkeys(names))


def _check_secret(secret: str) -> str:
    try:
        signing.decode_secret(secret)
    except ValueError as exc:
        raise errors.ValidationFailed(["body", "secret"], str(exc)) from None
    return secret if secret.startswith("whsec_") else "whsec_" + secret


async def _announce(call: Call, change: str, ep: Endpoint, app: Application | None = None) -> None:
    """Tell the operational webhooks (when configured) about a change already committed."""
    hook = call.api.on_endpoint_change
    if hook is None:
        return
    if app is None:
        app = await call.api.store.get_app(call.org_id, ep.app_id)
        if app is None:  # deleted meanwhile: nothing left to report about
            return
    await hook(change, app, ep)


def _types_field(body: EndpointIn | EndpointUpdate | EndpointPatch) -> tuple[Any, str]:
    if body.event_types is not UNSET and body.event_types is not None:
        return body.event_types, "eventTypes"
    return body.filter_types, "filterTypes"


@route(
    "GET",
    "/app/{app_id}/endpoint",
    response=http.ListResponse[EndpointOut],
    query=("limit", "iterator", "order"),
    tag=TAG,
)
async def list_endpoints(call: Call) -> object:
    """List an application's endpoints."""
    app = await load_app(call)
    page = http.page(call)
    items = await call.api.store.list_endpoints(app.id, page)
    return http.listing(items, page, lambda e: e.id, out)


@route("POST", "/app/{app_id}/endpoint", status=201, body=EndpointIn, response=EndpointOut, tag=TAG)
async def create_endpoint(call: Call, body: EndpointIn) -> object:
    """Create an endpoint; unknown or archived event types in the filter answer 422."""
    app = await load_app(call)
    types, field = _types_field(body)
    _check_headers(body.headers or {})
    now = time.time()
    ep = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app.id,
        url=_check_url(call, body.url),
        uid=body.uid,
        description=body.description,
        disabled=body.disabled,
        event_types=await _check_event_types(call, types, field),
        channels=tuple(body.channels) if body.channels else None,
        rate_limit=body.rate_limit if body.rate_limit is not None else body.throttle_rate,
        throttle_rate=body.throttle_rate if body.throttle_rate is not None else body.rate_limit,
        metadata=body.metadata,
        headers=dict(body.headers or {}),
        keys=(
            SigningKey(
                secret=_check_secret(body.secret) if body.secret else signing.generate_secret()
            ),
        ),
        created_at=now,
        updated_at=now,
    )
    await call.api.store.create_endpoint(ep)
    await _announce(call, "created", ep, app)
    return out(ep)


@route("GET", "/app/{app_id}/endpoint/{endpoint_id}", response=EndpointOut, tag=TAG)
async def get_endpoint(call: Call) -> object:
    """Get an endpoint by id or uid."""
    return out(await load(call))


@route(
    "PUT",
    "/app/{app_id}/endpoint/{endpoint_id}",
    body=EndpointUpdate,
    response=EndpointOut,
    tag=TAG,
)
async def update_endpoint(call: Call, body: EndpointUpdate) -> object:
    """Replace an endpoint's fields (its secret and headers are kept)."""
    ep = await load(call)
    types, field = _types_field(body)
    updated = msgspec.structs.replace(
        ep,
        url=_check_url(call, body.url),
        uid=body.uid,
        description=body.description,
        disabled=body.disabled,
        event_types=await _check_event_types(call, types, field),
        channels=tuple(body.channels) if body.channels else None,
        rate_limit=body.rate_limit if body.rate_limit is not None else body.throttle_rate,
        throttle_rate=body.throttle_rate if body.throttle_rate is not None else body.rate_limit,
        metadata=body.metadata,
        updated_at=time.time(),
    )
    await call.api.store.update_endpoint(updated)
    await _announce(call, "updated", updated)
    return out(updated)


@route(
    "PATCH",
    "/app/{app_id}/endpoint/{endpoint_id}",
    body=EndpointPatch,
    response=EndpointOut,
    tag=TAG,
)
async def patch_endpoint(call: Call, body: EndpointPatch) -> object:
    """Change the given fields of an endpoint."""
    ep = await load(call)
    changes: dict[str, Any] = {}
    for name in ("uid", "description", "disabled", "metadata"):
        value = getattr(body, name)
        if value is not UNSET:
            changes[name] = value
    if body.url is not UNSET:
        changes["url"] = _check_url(call, body.url)
    if body.event_types is not UNSET or body.filter_types is not UNSET:
        types, field = _types_field(body)
        changes["event_types"] = await _check_event_types(call, types or None, field)
    if body.channels is not UNSET:
        changes["channels"] = tuple(body.channels) if body.channels else None
    for name, alias in (("throttle_rate", "rate_limit"), ("rate_limit", "throttle_rate")):
        value = getattr(body, name)
        if value is UNSET:
            value = getattr(body, alias)
        if value is not UNSET:
            changes[name] = value
    updated = msgspec.structs.replace(ep, **changes, updated_at=time.time())
    await call.api.store.update_endpoint(updated)
    await _announce(call, "updated", updated)
    return out(updated)


@route("DELETE", "/app/{app_id}/endpoint/{endpoint_id}", status=204, tag=TAG)
async def delete_endpoint(call: Call) -> None:
    """Delete an endpoint; its pending deliveries are dropped, its attempts kept."""
    ep = await load(call)
    if await call.api.store.delete_endpoint(ep.app_id, ep.id):
        await _announce(call, "deleted", ep)


@route("GET", "/app/{app_id}/endpoint/{endpoint_id}/secret", response=EndpointSecretOut, tag=TAG)
async def get_endpoint_secret(call: Call) -> object:
    """The secret that signs new deliveries."""
    ep = await load(call)
    return EndpointSecretOut(key=ep.keys[0].secret)


@route(
    "POST",
    "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    body=EndpointSecretRotateIn,
    response=EndpointSecretOut,
    tag=TAG,
)
async def rotate_endpoint_secret(call: Call, body: EndpointSecretRotateIn) -> object:
    """Start signing with a new secret; the old one also signs until its grace period ends.

    Answers the new secret: the svix SDK (2.x) parses the answer as ``EndpointSecretOut``.
    """
    ep = await load(call)
    now = time.time()
    grace = (
        body.grace_period_seconds
        if body.grace_period_seconds is not None
        else DEFAULT_GRACE_SECONDS
    )
    new = SigningKey(secret=_check_secret(body.key) if body.key else signing.generate_secret())
    old = tuple(
        k if k.expires_at is not None else SigningKey(secret=k.secret, expires_at=now + grace)
        for k in ep.keys
        if k.active(now)
    )
    await call.api.store.update_endpoint(
        msgspec.structs.replace(ep, keys=(new, *old), updated_at=now)
    )
    return EndpointSecretOut(key=new.secret)


def _check_headers(headers: dict[str, Any]) -> None:
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            raise errors.ValidationFailed(["body", "headers", name], f"Header {name!r} is reserved")
        if not name or any(c in name for c in " \t\r\n:") or not name.isascii():
            raise errors.ValidationFailed(["body", "headers", name], "Invalid header name")
        if value is not None and ("\r" in value or "\n" in value):
            raise errors.ValidationFailed(["body", "headers", name], "Invalid header value")


@route("GET", "/app/{app_id}/endpoint/{endpoint_id}/headers", response=EndpointHeadersOut, tag=TAG)
async def get_endpoint_headers(call: Call) -> object:
    """Custom headers sent with every delivery (sensitive values are not returned)."""
    ep = await load(call)
    sensitive = [n for n in ep.headers if n.lower() in SENSITIVE_HEADERS]
    visible = {n: v for n, v in ep.headers.items() if n.lower() not in SENSITIVE_HEADERS}
    return EndpointHeadersOut(headers=visible, sensitive=sensitive)


@route(
    "PUT",
    "/app/{app_id}/endpoint/{endpoint_id}/headers",
    status=204,
    body=EndpointHeadersIn,
    tag=TAG,
)
async def set_endpoint_headers(call: Call, body: EndpointHeadersIn) -> None:
    """Replace the custom headers."""
    ep = await load(call)
    _check_headers(body.headers)
    await call.api.store.update_endpoint(
        msgspec.structs.replace(ep, headers=dict(body.headers), updated_at=time.time())
    )


@route(
    "PATCH",
    "/app/{app_id}/endpoint/{endpoint_id}/headers",
    status=204,
    body=EndpointHeadersPatchIn,
    tag=TAG,
)
async def patch_endpoint_headers(call: Call, body: EndpointHeadersPatchIn) -> None:
    """Add or change custom headers; a null value, or a name in ``deleteHeaders``, removes one."""
    ep = await load(call)
    _check_headers(body.headers)
    merged = dict(ep.headers)
    changes = {**body.headers, **dict.fromkeys(body.delete_headers)}
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    await call.api.store.update_endpoint(
        msgspec.structs.replace(ep, headers=merged, updated_at=time.time())
    )


@route(
    "GET",
    "/app/{app_id}/endpoint/{endpoint_id}/stats",
    response=EndpointStatsOut,
    query=("since", "until"),
    tag=TAG,
)
async def get_endpoint_stats(call: Call) -> object:
    """How many of the endpoint's messages are in each status."""
    ep = await load(call)
    stats = await call.api.store.endpoint_stats(
        ep.app_id, ep.id, http.query_time(call, "since"), http.query_time(call, "until")
    )
    return EndpointStatsOut(**msgspec.structs.asdict(stats))


@route(
    "POST",
    "/app/{app_id}/endpoint/{endpoint_id}/recover",
    status=202,
    body=RecoverIn,
    response=RecoverOut,
    tag=TAG,
)
async def recover_endpoint(call: Call, body: RecoverIn) -> object:
    """Queue again every message that failed to this endpoint in the window."""
    ep = await load(call)
    since = http.parse_time(body.since, ["body", "since"])
    until = http.parse_time(body.until, ["body", "until"]) if body.until else None
    now = call.api.clock()
    await call.api.store.recover(ep.app_id, ep.id, since, until, now)
    call.api.wakeup.notify()
    return RecoverOut(
        id=ids.new("qtask"), status="finished", task="endpoint.recover", updated_at=http.iso(now)
    )
