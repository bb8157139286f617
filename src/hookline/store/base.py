"""The store Protocol: everything hookline persists, spoken in domain terms.

Backends: ``memory`` (tests, throwaway runs), ``sqlite`` (the embedded default) and
``postgres``; pick one with ``hookline.store.from_url``. Every backend passes the same contract
suite in ``tests/contract``.

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
- Retention (``expire_payloads``, ``prune_messages``) works in bounded batches, one
  transaction each, and never takes a payload or a message from under a delivery that is
  still pending or being sent (see docs/retention.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import msgspec

from hookline import ids
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

# A write committed this recently answers ``probe_write`` without another (seconds).
RECENT_WRITE_SECONDS = 5.0


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


# An expired payload is an empty one: the row stays (Svix lists the message, its payload reading
# ``{"expired":true}``), and no payload taken by the API is empty, since it must be a JSON object.
EXPIRED_PAYLOAD = b""
# What an attempt's response body reads once its message's payload expired: the marker Svix's
# server writes when an attempt's content is expunged.
EXPUNGED_RESPONSE = "EXPUNGED"
# Pruning walks messages in id order and stops at the id of ``before`` plus this: an id carries
# the clock of the API host that made it, ``created_at`` the store's, and the two may disagree by
# the hosts' clock skew. A message whose id runs further ahead is pruned by a later run.
ID_CLOCK_SLACK_SECONDS = 60.0


class ExpiryBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``expire_payloads`` batch did; go on with ``after=cursor`` unless it is None."""

    expired: int = 0  # payloads deleted (with their attempts' response bodies)
    skipped: int = 0  # past their time, but a delivery is still pending or sending
    cursor: float | None = None  # the last expires_at looked at; None: nothing more is due


class PruneBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``prune_messages`` batch did; go on with ``after=cursor`` unless it is None."""

    deleted: int = 0  # messages deleted, with their deliveries and attempts
    skipped: int = 0  # old enough, but kept for a delivery still pending or sending
    cursor: str | None = None  # the last message id looked at; None: nothing more to look at


def message_id_floor(at: float) -> str:
    """The smallest message id made at ``at`` (epoch seconds): ids sort by creation time."""
    millis = max(0, int(at * 1000))
    return f"{ids.MESSAGE}_{ids.base32_of(millis.to_bytes(6, 'big') + bytes(10))}"


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

    async def probe_write(self, now: float) -> None:
        """Raise ``errors.Unavailable`` unless the store can write now (readiness, every few s).

        ``check_writable`` only knows what writes found, so an idle store on a full disk would
        pass it until the next write. This writes one row (``health_probe``) unless a write
        committed moments ago shows it already, so a busy store pays nothing and a probe never
        queues behind a long batch. SQLite also asks the filesystem for room: a write can
        commit into space its WAL file already holds while the disk is full.
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

    async def stalled_since(self, now: float, lease_seconds: float) -> float | None:
        """The earliest due time of waiting work that nothing holds back; None if there is none.

        Held back, and left out: the work of an endpoint whose circuit is open or that has a
        rate limit (it waits by design), or that has a delivery in flight under a live lease
        (leased within the last ``lease_seconds``: it is being served, at its concurrency).
        What remains waits for nothing but a worker, so its age says whether the workers keep
        up. Reads one index seek per endpoint with waiting work: call it only once the oldest
        due task (``next_due_at``) is already old.
        """
        ...

    async def endpoint_health(self, endpoint_id: str) -> EndpointHealth | None: ...
    async def endpoint_summary(self) -> EndpointSummary:
        """How many enabled endpoints have an open circuit, and how many are disabled.

        For gauges refreshed every few seconds: one read of ``endpoint_health`` (which holds
        only failing or rate-limited endpoints) and one count of ``endpoints``.
        """
        ...

    async def requeue(self, app_id: str, msg_id: str, endpoint_id: str, now: float) -> None:
        """Queue the message for the endpoint again now (a manual attempt, a fresh budget).

        ``errors.NotFound`` when either is not in the app; ``errors.PayloadMissing`` when the
        payload expired (checked in the same transaction, so a concurrent expiry cannot leave
        a delivery with nothing to send).
        """
        ...

    async def recover(
        self, app_id: str, endpoint_id: str, since: float, until: float | None, now: float
    ) -> int:
        """Queue again the endpoint's failed deliveries of messages created in [since, until).

        Messages whose payload expired are left failed; returns how many were queued.
        """
        ...

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

    # retention ---------------------------------------------------------------------------------
    async def expire_payloads(
        self, now: float, default_seconds: float, limit: int, after: float | None = None
    ) -> ExpiryBatch:
        """Delete the payloads of messages whose ``expires_at`` is at or before ``now``.

        Looks at up to ``limit`` such messages in ``expires_at`` order (after ``after``), in one
        transaction: a message none of whose deliveries is pending or sending gets
        ``EXPIRED_PAYLOAD`` and its attempts' response bodies ``EXPUNGED_RESPONSE``; the others
        are skipped and looked at again by a later pass, once their deliveries have ended. A
        message written without ``expires_at`` first gets ``created_at + default_seconds``.
        """
        ...

    async def prune_messages(
        self,
        before: float,
        now: float,
        limit: int,
        *,
        include_pending: bool = False,
        after: str | None = None,
    ) -> PruneBatch:
        """Delete up to ``limit`` messages created before ``before``, oldest id first.

        One transaction: the messages, their deliveries and their attempts. A message with a
        delivery still pending or being sent is skipped; with ``include_pending`` only one
        whose delivery is being sent under a lease still running at ``now`` is (that worker
        would record an attempt for a message that is gone). Ids (after ``after``) are walked
        up to ``before`` plus ``ID_CLOCK_SLACK_SECONDS``.
        """
        ...

    async def count_messages_before(self, before: float) -> int:
        """How many messages were created before ``before`` (what a prune looks at)."""
        ...
