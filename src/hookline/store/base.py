"""The store Protocol: everything hookline persists, spoken in domain terms.

Backends: ``memory`` (tests, throwaway runs) and ``sqlite`` (the embedded default); pick one
with ``hookline.store.from_url``. Every backend passes the same contract suite in
``tests/contract``.

Two rules every backend keeps:
- ``create_message`` writes the message, one delivery task per matching endpoint and (when
  given) the idempotent response in ONE transaction, and returns only after it is durable.
- ``claim_due`` leases tasks; ``complete`` applies only when its lease token still matches, so a
  worker whose lease expired cannot overwrite the work of the worker that took over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from hookline.models import (
    Application,
    Attempt,
    Claim,
    Completion,
    Delivery,
    Endpoint,
    EndpointStats,
    EventType,
    Message,
    MessageStatus,
    Org,
    Page,
    StoredResponse,
    Token,
)


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    channel: str | None = None
    event_types: tuple[str, ...] | None = None
    before: float | None = None
    after: float | None = None


class AttemptFilter(msgspec.Struct, frozen=True, kw_only=True):
    msg_id: str | None = None
    endpoint_id: str | None = None
    status: MessageStatus | None = None
    status_code_class: int | None = None  # 0 (transport error), 100, 200, ... 500
    before: float | None = None
    after: float | None = None


class IdempotentWrite(msgspec.Struct, frozen=True, kw_only=True):
    """An idempotency key's final answer, committed together with the write it describes."""

    key: str
    response: StoredResponse
    expires_at: float


class IdempotencyState(msgspec.Struct, frozen=True, kw_only=True):
    """What ``idempotency_begin`` found: this caller owns the key, must wait, or gets a replay."""

    state: Literal["owner", "pending", "done", "mismatch"]
    response: StoredResponse | None = None


class Store(Protocol):
    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...

    # tenants and tokens ------------------------------------------------------------------------
    async def ensure_org(self, name: str, now: float) -> Org: ...
    async def create_token(self, org_id: str, name: str, token_hash: str, now: float) -> Token:
        """Store a token by its hash; ``errors.Conflict`` if that hash is already stored."""
        ...

    async def find_token(self, token_hash: str) -> Token | None: ...
    async def count_tokens(self) -> int: ...

    # applications ------------------------------------------------------------------------------
    async def create_app(self, app: Application) -> None: ...
    async def get_app(self, org_id: str, ref: str) -> Application | None: ...
    async def list_apps(self, org_id: str, page: Page) -> list[Application]: ...
    async def update_app(self, app: Application) -> None: ...
    async def delete_app(self, org_id: str, app_id: str) -> bool: ...

    # event types -------------------------------------------------------------------------------
    async def create_event_type(self, event_type: EventType) -> None: ...
    async def get_event_type(self, org_id: str, name: str) -> EventType | None: ...
    async def list_event_types(
        self, org_id: str, page: Page, include_archived: bool
    ) -> list[EventType]: ...
    async def update_event_type(self, event_type: EventType) -> None: ...

    # endpoints ---------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None: ...
    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint | None: ...
    async def list_endpoints(self, app_id: str, page: Page) -> list[Endpoint]: ...
    async def update_endpoint(self, endpoint: Endpoint) -> None: ...
    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool: ...
    async def endpoint_stats(
        self, app_id: str, endpoint_id: str, since: float | None, until: float | None
    ) -> EndpointStats: ...

    # messages ----------------------------------------------------------------------------------
    async def create_message(
        self, message: Message, idempotency: IdempotentWrite | None = None
    ) -> int:
        """Commit the message and its delivery tasks; return how many tasks were created.

        Raises ``errors.Conflict`` when the app already has a message with this ``event_id``,
        and ``errors.NotFound`` when the app no longer exists (nothing is written either way).
        """
        ...

    async def get_message(self, app_id: str, ref: str) -> Message | None: ...
    async def list_messages(self, app_id: str, flt: MessageFilter, page: Page) -> list[Message]: ...

    # the delivery queue ------------------------------------------------------------------------
    async def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[Claim]: ...
    async def complete(self, completions: Sequence[Completion], now: float) -> None: ...
    async def next_due_at(self) -> float | None: ...
    async def requeue(self, app_id: str, msg_id: str, endpoint_id: str, now: float) -> None: ...
    async def recover(
        self, app_id: str, endpoint_id: str, since: float, until: float | None, now: float
    ) -> int: ...

    # attempts and per-endpoint status ----------------------------------------------------------
    async def list_attempts(self, app_id: str, flt: AttemptFilter, page: Page) -> list[Attempt]: ...
    async def get_attempt(self, app_id: str, msg_id: str, attempt_id: str) -> Attempt | None: ...
    async def list_deliveries(
        self, app_id: str, msg_id: str, page: Page
    ) -> list[tuple[Endpoint, Delivery]]: ...

    # idempotency -------------------------------------------------------------------------------
    async def idempotency_begin(
        self, key: str, fingerprint: str, now: float, lock_seconds: float
    ) -> IdempotencyState: ...
    async def idempotency_finish(self, write: IdempotentWrite) -> None: ...
    async def idempotency_release(self, key: str) -> None: ...
    async def purge_expired(self, now: float) -> int: ...
