"""The store Protocol: everything hookline persists, spoken in domain terms.

Backends: ``memory`` (tests, throwaway runs) and ``sqlite`` (the embedded default); pick one
with ``hookline.store.from_url``. Every backend passes the same contract suite in
``tests/contract``.

Rules every backend keeps (the claim contract is explained in docs/architecture.md):
- ``create_message`` writes the message, one delivery task per matching endpoint and (when
  given) the idempotent response in ONE transaction, and returns only after it is durable.
- ``claim_due`` leases only tasks that may be sent now: within the claimer's ``ClaimPolicy``
  (global and per-endpoint slots), the endpoint's rate-limit bucket and its circuit. A blocked
  endpoint's tasks never hide other endpoints' due work behind them.
- ``complete`` and ``release`` apply only when their lease token still matches, so a worker
  whose lease expired cannot overwrite the work of the worker that took over.
- Times (``now``, due times, leases) are read from ``Store.now``, the database's clock, by
  every process that shares the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import msgspec

from hookline.circuit import CircuitPolicy
from hookline.models import (
    Application,
    Attempt,
    Claim,
    ClaimPolicy,
    Completion,
    Delivery,
    Endpoint,
    EndpointHealth,
    EndpointStats,
    EndpointSummary,
    EventType,
    HealthEvent,
    Message,
    MessageStatus,
    Org,
    Page,
    Release,
    StoredResponse,
    Token,
)
from hookline.wakeup import Wakeup


class MessageFilter(msgspec.Struct, frozen=True, kw_only=True):
    channel: str | None = None
    tag: str | None = None  # messages carrying this tag among their ``tags``
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
    """An idempotency key's final answer, committed together with the write it describes.

    ``owner`` is the token ``idempotency_begin`` handed out. With it the write (and a
    ``create_message`` carrying it) commits only while that token still holds the key, inside
    the same transaction; otherwise it raises ``errors.Conflict`` and writes nothing, so an owner
    whose lock was taken over cannot commit a second message. None writes the answer outright
    (no lock was taken: tools and tests).
    """

    key: str
    response: StoredResponse
    expires_at: float
    owner: str | None = None


class IdempotencyState(msgspec.Struct, frozen=True, kw_only=True):
    """What ``idempotency_begin`` found: this caller owns the key, must wait, or gets a replay.

    ``owner`` is set for the state "owner": a fresh random token naming this holder of the lock.
    """

    state: Literal["owner", "pending", "done", "mismatch"]
    response: StoredResponse | None = None
    owner: str | None = None


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A token as ``hookline token list`` shows it: never its secret nor its hash.

    ``last_used_at`` is recorded at most once per ``cache.LAST_USED_SECONDS`` per token and API
    process, so it may be that much older than the token's latest request; None: never used.
    """

    id: str
    name: str
    org_id: str
    org_name: str
    created_at: float
    last_used_at: float | None = None


KEY_TAKEN_OVER = (
    "This request held its idempotency key past the lock and another request took it over; "
    "nothing was written. Retry with the same key to get that request's answer."
)


class Store(Protocol):
    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> None: ...
    async def ping(self) -> None: ...
    async def check_writable(self) -> None:
        """Raise ``errors.Unavailable`` while the store refuses writes (the health check's 503).

        Cheap enough for every health check: reports what recent writes found, never writes.
        """
        ...

    # tenants and tokens ------------------------------------------------------------------------
    async def ensure_org(self, name: str, now: float) -> Org: ...
    async def create_token(self, org_id: str, name: str, token_hash: str, now: float) -> Token:
        """Store a token by its hash; ``errors.Conflict`` if that hash is already stored."""
        ...

    async def find_token(self, token_hash: str) -> Token | None: ...
    async def count_tokens(self) -> int: ...
    async def list_tokens(self) -> list[TokenInfo]:
        """Every token of every org, oldest first."""
        ...

    async def revoke_token(self, token_id: str) -> bool:
        """Delete the token (its hash too); False if there is no token with this id."""
        ...

    async def touch_tokens(self, used: Mapping[str, float]) -> None:
        """Record when tokens were last used (token id -> time); never moves a time back.

        Ids of tokens that no longer exist are ignored.
        """
        ...

    # applications ------------------------------------------------------------------------------
    async def create_app(self, app: Application) -> None: ...
    async def get_app(self, org_id: str, ref: str) -> Application | None: ...
    async def find_app(self, app_id: str) -> Application | None:
        """The application with this id, whatever its org (never a uid).

        For callers that hold an id from a delivery rather than a tenant's request (the
        operational webhooks); API handlers use ``get_app``, which keeps orgs apart.
        """
        ...

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

        The tasks are first due at ``message.first_due_at`` (its ``deliver_at`` when that is
        later than ``created_at``).

        Raises ``errors.Conflict`` when the app already has a message with this ``event_id`` or
        when ``idempotency.owner`` no longer holds its key (``KEY_TAKEN_OVER``), and
        ``errors.NotFound`` when the app no longer exists (nothing is written in any case).
        """
        ...

    async def get_message(self, app_id: str, ref: str) -> Message | None: ...
    async def list_messages(self, app_id: str, flt: MessageFilter, page: Page) -> list[Message]: ...

    # the delivery queue ------------------------------------------------------------------------
    def now(self) -> float:
        """The store's clock, epoch seconds: what ``now`` arguments and due times are read from.

        Several processes share one database, so they must agree on time, or one would take
        over another's leases early. SQLite and memory stores live on one host: its wall
        clock is theirs.
        """
        ...

    def wakeup(self) -> Wakeup:
        """How a worker hears that new work was committed (in-process here; a server-backed
        store may notify across processes)."""
        ...

    async def claim_due(self, now: float, policy: ClaimPolicy, lease_seconds: float) -> list[Claim]:
        """Lease up to ``policy.limit`` due tasks that may be sent now, oldest due first.

        Due: pending and scheduled at or before ``now``, or sending with an expired lease. A
        task is handed out only if its endpoint has a free slot in ``policy``, a token in its
        rate-limit bucket and a closed circuit (or a probe due); the tokens and probes handed
        out are recorded in the same transaction. A due task of a disabled endpoint is failed.
        """
        ...

    async def complete(
        self, completions: Sequence[Completion], now: float, circuit: CircuitPolicy | None = None
    ) -> list[HealthEvent]:
        """Record attempts, move their tasks on (fenced by lease) and update endpoint health.

        Returns the endpoints' state changes (circuit opened or closed, endpoint disabled).
        """
        ...

    async def release(self, releases: Sequence[Release], now: float) -> int:
        """Put claimed tasks back unsent (no attempt, no retry spent); return how many applied.

        A release whose lease no longer matches is ignored, like a stale completion.
        """
        ...

    async def next_due_at(self) -> float | None: ...
    async def count_due(self, now: float, cap: int) -> int:
        """How many tasks are due at ``now``, counting no further than ``cap`` (cheap to call)."""
        ...

    async def endpoint_health(self, endpoint_id: str) -> EndpointHealth | None: ...
    async def endpoint_summary(self) -> EndpointSummary:
        """How many enabled endpoints have an open circuit, and how many are disabled.

        For gauges refreshed every few seconds: one read of ``endpoint_health`` (which holds
        only failing or rate-limited endpoints) and one count of ``endpoints``.
        """
        ...

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
    ) -> IdempotencyState:
        """Take ``key`` (new, or its lock ran out) or say why not; only taking it writes.

        A repeat that finds the key pending, answered or mismatched is answered from a read.
        """
        ...

    async def idempotency_finish(self, write: IdempotentWrite) -> None:
        """Store the final answer; ``errors.Conflict`` if ``write.owner`` lost the key."""
        ...

    async def idempotency_release(self, key: str, owner: str | None = None) -> None:
        """Drop a pending key so a retry can own it; only ``owner``'s lock when one is given."""
        ...

    async def purge_expired(self, now: float) -> int: ...
