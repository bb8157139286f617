"""Idempotent POSTs: the ``idempotency-key`` header (the svix SDK sends one on every POST).

The first request with a key owns it; its answer (status and body) is stored for 24 h per token
and key, and every repeat gets exactly that answer. Repeats that arrive while the first is still
running wait for it (the store holds a short lock row, so this works across API processes too).
The same key with another method, path or body answers 422 ``idempotency_key_mismatch``.
5xx answers are not stored: the client should be able to retry those.

For message ingest the handler commits the stored answer in the same transaction as the message
(``Call.idempotent_write``), so a crash cannot leave a message whose key would create it twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.responses import Response

from hookline import errors
from hookline.models import StoredResponse
from hookline.store.base import IdempotentWrite

if TYPE_CHECKING:
    from hookline.api.http import Call

KEEP_SECONDS = 24 * 3600.0  # how long an answer is replayed
LOCK_SECONDS = 60.0  # an owner that died releases its key after this long
WAIT_POLL_SECONDS = 0.02
WAIT_LIMIT_SECONDS = 60.0
MAX_KEY_LENGTH = 256


class Pending:
    """The key a running handler owns; the handler may commit its answer itself."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.committed = False

    def write(self, status: int, body: bytes) -> IdempotentWrite:
        """The stored answer, for a handler that commits it with its own transaction.

        The handler sets ``committed`` once that transaction succeeded.
        """
        return IdempotentWrite(
            key=self.key,
            response=StoredResponse(status=status, body=body),
            expires_at=time.time() + KEEP_SECONDS,
        )


current: contextvars.ContextVar[Pending | None] = contextvars.ContextVar(
    "hookline_idempotency", default=None
)


async def guard(call: Call, raw: bytes, run: Callable[[], Awaitable[Response]]) -> Response:
    """Run ``run`` at most once per (token, idempotency key); replay its answer to repeats."""
    client_key = call.request.headers.get("idempotency-key")
    if not client_key:
        return await run()
    if len(client_key) > MAX_KEY_LENGTH:
        raise errors.ValidationFailed(["header", "idempotency-key"], "Key is too long")
    store = call.api.store
    key = f"{call.token.id}:{client_key}"
    fingerprint = hashlib.sha256(
        b"\0".join([call.request.method.encode(), call.request.url.path.encode(), raw])
    ).hexdigest()
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        state = await store.idempotency_begin(key, fingerprint, time.time(), LOCK_SECONDS)
        if state.state == "owner":
            break
        if state.state == "mismatch":
            raise errors.IdempotencyMismatch(
                "This idempotency key was already used with a different request"
            )
        if state.state == "done" and state.response is not None:
            return Response(
                state.response.body,
                state.response.status,
                media_type="application/json" if state.response.body else None,
            )
        if time.monotonic() > deadline:
            raise errors.Conflict("A request with this idempotency key is still in progress")
        await asyncio.sleep(WAIT_POLL_SECONDS)

    pending = Pending(key)
    token = current.set(pending)
    try:
        try:
            response = await run()
        except errors.HooklineError as exc:
            from hookline.api.http import error_response

            response = error_response(exc)
    except BaseException:
        await store.idempotency_release(key)
        raise
    finally:
        current.reset(token)
    if pending.committed:
        return response
    if response.status_code >= 500 or response.status_code == 429:
        # "Retry later" is not an answer to keep: the retry with the same key must run.
        await store.idempotency_release(key)
    else:
        await store.idempotency_finish(pending.write(response.status_code, bytes(response.body)))
    return response
