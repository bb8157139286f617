"""Liveness with a database check, as the svix SDK's ``health.get()`` expects (204)."""

from __future__ import annotations

from hookline import errors
from hookline.api.http import Call, route


@route("GET", "/health", status=204, auth=False, tag="Health")
async def health(call: Call) -> None:
    """204 when the API can reach its database, 503 otherwise."""
    try:
        await call.api.store.ping()
    except Exception as exc:
        raise errors.Unavailable(f"database unreachable: {type(exc).__name__}") from None
