"""Liveness with a database check, as the svix SDK's ``health.get()`` expects (204)."""

from __future__ import annotations

from hookline import errors
from hookline.api.http import Call, route


@route("GET", "/health", status=204, auth=False, tag="Health")
async def health(call: Call) -> None:
    """204 when the API can read its database and writes are not being refused, 503 otherwise.

    The write side is what recent writes found (``Store.check_writable``), so a check costs a
    read, never a write: a full disk answers 503 here, not only to the writes it refuses.
    """
    store = call.api.store
    try:
        await store.ping()
    except Exception as exc:
        raise errors.Unavailable(f"database unreachable: {type(exc).__name__}") from None
    try:
        await store.check_writable()
    except errors.Unavailable:
        raise
    except Exception as exc:
        raise errors.Unavailable(f"database cannot write: {type(exc).__name__}") from None
