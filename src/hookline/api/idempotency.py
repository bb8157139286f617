"""Idempotent POSTs: the ``idempotency-key`` header (the svix SDK sends one on every POST).

The first request with a key owns it; its answer (status and body) is stored for 24 h per token
and key, and every repeat gets exactly that answer. Repeats that arrive while the first is still
running wait for it (the store holds a short lock row, so this works across API processes too);
waiting only reads the row. The same key with another method, path or body answers 409
``idempotency_key_mismatch`` (why not 422: see ``errors.IdempotencyMismatch``).
5xx and 429 answers are not stored: the client should be able to retry those.

The lock carries a random owner token. An owner that died or stalled past ``LOCK_SECONDS`` may be
taken over by the next request, under a new token; the store then refuses the old owner's answer
and, for message ingest, its message (409 ``conflict``, nothing written), so one key never makes
two messages. For ingest the handler commits the stored answer in the same transaction as the
message (``Pending.write``), so a crash cannot leave a message whose key would create it twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from starlette.responses import Response

from hookline import errors
from hookline.models import StoredResponse
from hookline.store.base import KEY_TAKEN_OVER, IdempotentWrite, Store

if TYPE_CHECKING:
    from hookline.api.http import Call

KEEP_SECONDS = 24 * 3600.0  # how long an answer is replayed
LOCK_SECONDS = 60.0  # an owner that died or stalled may be taken over after this long
# A repeat gives up waiting (409 "still in progress") well before the lock ends: it should
# neither hold its client longer than the owner may take nor be the one that takes a live
# owner's key over. Taking over is left to a request that arrives after the lock.
WAIT_LIMIT_SECONDS = 20.0
WAIT_POLL_SECONDS = 0.02  # first pause between reads of a pending key; doubles ...
WAIT_POLL_MAX_SECONDS = 0.25  # ... up to this
MAX_KEY_LENGTH = 256
assert WAIT_LIMIT_SECONDS < LOCK_SECONDS

log = structlog.get_logger("hookline.api")


class Pending:
    """The key a running handler owns; the handler may commit its answer itself."""

    def __init__(self, key: str, owner: str | None) -> None:
        self.key = key
        self.owner = owner  # the lock's token: the store commits the answer only while it holds
        self.committed = False

    def write(self, status: int, body: bytes) -> IdempotentWrite:
        """The stored answer, for a handler that commits it with its own transaction.

        The handler sets ``committed`` once that transaction succeeded. The store refuses it
        (``errors.Conflict``, nothing written) if another request took the key over meanwhile.
        """
        return IdempotentWrite(
            key=self.key,
            response=StoredResponse(status=status, body=body),
            expires_at=time.time() + KEEP_SECONDS,
            owner=self.owner,
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
    pause = WAIT_POLL_SECONDS
    while True:
        state = await store.idempotency_begin(key, fingerprint, time.time(), LOCK_SECONDS)
        if state.state == "owner":
            break
        if state.state == "mismatch":
            raise errors.IdempotencyMismatch(
                "This idempotency key was already used with a different request"
            )
        if state.state == "done" and state.response is not None:
            return _replay(state.response)
        if time.monotonic() > deadline:
            raise errors.Conflict("A request with this idempotency key is still in progress")
        await asyncio.sleep(pause)
        pause = min(pause * 2, WAIT_POLL_MAX_SECONDS)

    pending = Pending(key, state.owner)
    token = current.set(pending)
    taken_over = False
    try:
        try:
            response = await run()
        except errors.HooklineError as exc:
            from hookline.api.http import error_response

            taken_over = isinstance(exc, errors.Conflict) and exc.detail == KEY_TAKEN_OVER
            response = error_response(exc)
    except BaseException:
        await store.idempotency_release(key, pending.owner)
        raise
    finally:
        current.reset(token)
    if pending.committed:
        return response
    if taken_over:
        # This request stalled past its lock and another took the key over; the store wrote
        # nothing for it. Answer what the key's new owner answers, so both callers agree.
        return await _answer_of_new_owner(store, key, fingerprint) or response
    if response.status_code >= 500 or response.status_code == 429:
        # "Retry later" is not an answer to keep: the retry with the same key must run.
        await store.idempotency_release(key, pending.owner)
        return response
    try:
        await store.idempotency_finish(pending.write(response.status_code, bytes(response.body)))
    except errors.Conflict:
        # Another request took the key over while this one ran past the lock: its answer is
        # the key's answer.
        log.warning("idempotency_key_taken_over", status=response.status_code)
        return await _answer_of_new_owner(store, key, fingerprint) or response
    return response


def _replay(stored: StoredResponse) -> Response:
    """The key's stored answer, as it was first sent."""
    return Response(
        stored.body, stored.status, media_type="application/json" if stored.body else None
    )


async def _answer_of_new_owner(store: Store, key: str, fingerprint: str) -> Response | None:
    """Wait (up to the wait limit) for the final answer of whoever holds ``key`` now."""
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    pause = WAIT_POLL_SECONDS
    while time.monotonic() < deadline:
        state = await store.idempotency_begin(key, fingerprint, time.time(), LOCK_SECONDS)
        if state.state == "done" and state.response is not None:
            return _replay(state.response)
        if state.state == "owner":  # the new owner died too: give the key back
            await store.idempotency_release(key, state.owner)
            return None
        if state.state == "mismatch":
            return None
        await asyncio.sleep(pause)
        pause = min(pause * 2, WAIT_POLL_MAX_SECONDS)
    return None
