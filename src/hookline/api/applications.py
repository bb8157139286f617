"""Applications: one per customer of the caller; everything else lives under one."""

from __future__ import annotations

import time

import msgspec

from hookline import errors, ids
from hookline.api import http
from hookline.api.http import Call, route
from hookline.api.schemas import ApplicationIn, ApplicationOut, ApplicationPatch
from hookline.models import Application

TAG = "Application"


def out(app: Application) -> ApplicationOut:
    return ApplicationOut(
        id=app.id,
        name=app.name,
        uid=app.uid,
        throttle_rate=app.throttle_rate,
        metadata=app.metadata,
        created_at=http.iso(app.created_at),
        updated_at=http.iso(app.updated_at),
    )


async def load(call: Call, ref: str | None = None) -> Application:
    """The app named in the path, in the caller's organisation, or 404."""
    app = await call.api.store.get_app(call.org_id, ref or call.path("app_id"))
    if app is None:
        raise errors.NotFound()
    return app


@route(
    "GET",
    "/app",
    response=http.ListResponse[ApplicationOut],
    query=("limit", "iterator", "order"),
    tag=TAG,
)
async def list_applications(call: Call) -> object:
    """List applications."""
    page = http.page(call)
    apps = await call.api.store.list_apps(call.org_id, page)
    return http.listing(apps, page, lambda a: a.id, out)


@route(
    "POST",
    "/app",
    status=201,
    also=(200,),  # get_if_exists=true and the uid exists
    body=ApplicationIn,
    response=ApplicationOut,
    query=("get_if_exists",),
    tag=TAG,
)
async def create_application(call: Call, body: ApplicationIn) -> object:
    """Create an application (``get_if_exists=true`` returns an existing one with the uid)."""
    get_if_exists = http.query_bool(call, "get_if_exists", False)
    if body.uid is not None and get_if_exists:
        existing = await call.api.store.get_app(call.org_id, body.uid)
        if existing is not None:
            return http.respond(out(existing), 200)
    app = new(call.org_id, body, time.time())
    await call.api.store.create_app(app)
    return out(app)


def new(org_id: str, body: ApplicationIn, now: float) -> Application:
    """A fresh application from its API input (not stored yet)."""
    return Application(
        id=ids.new(ids.APP),
        org_id=org_id,
        name=body.name,
        uid=body.uid,
        throttle_rate=body.throttle_rate,
        metadata=body.metadata,
        created_at=now,
        updated_at=now,
    )


@route("GET", "/app/{app_id}", response=ApplicationOut, tag=TAG)
async def get_application(call: Call) -> object:
    """Get an application by id or uid."""
    return out(await load(call))


@route("PUT", "/app/{app_id}", body=ApplicationIn, response=ApplicationOut, tag=TAG)
async def update_application(call: Call, body: ApplicationIn) -> object:
    """Replace an application's fields."""
    app = await load(call)
    updated = msgspec.structs.replace(
        app,
        name=body.name,
        uid=body.uid,
        throttle_rate=body.throttle_rate,
        metadata=body.metadata,
        updated_at=time.time(),
    )
    await call.api.store.update_app(updated)
    call.api.apps.forget()
    return out(updated)


@route("PATCH", "/app/{app_id}", body=ApplicationPatch, response=ApplicationOut, tag=TAG)
async def patch_application(call: Call, body: ApplicationPatch) -> object:
    """Change the given fields of an application."""
    app = await load(call)
    updated = msgspec.structs.replace(app, **http.given_fields(body), updated_at=time.time())
    await call.api.store.update_app(updated)
    call.api.apps.forget()
    return out(updated)


@route("DELETE", "/app/{app_id}", status=204, tag=TAG)
async def delete_application(call: Call) -> None:
    """Delete an application with its endpoints, messages and attempts."""
    app = await load(call)
    await call.api.store.delete_app(call.org_id, app.id)
    call.api.apps.forget()
