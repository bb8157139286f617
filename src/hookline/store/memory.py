"""The in-process store: plain dicts, nothing durable.

Serves unit tests and throwaway runs (``memory://``). It keeps the same rules as the SQLite
store and passes the same contract suite (``tests/contract``); keep the two in step.

No method awaits anything between reading and writing its dicts, so on one event loop every
method runs as a single step: that is what makes ``create_message`` and ``claim_due`` atomic
here without a lock. Lookups are linear scans; this backend is not meant for large volumes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec
from msgspec.structs import replace

from hookline import admission as admission_
from hookline import errors, ids
from hookline.admission import Admission, rate_of
from hookline.circuit import CircuitPolicy, after_attempts, gone_event
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
    HealthChange,
    HealthEvent,
    Message,
    MessageStatus,
    Org,
    Page,
    Release,
    StoredResponse,
    Token,
    Trigger,
)
from hookline.store.base import (
    EXPIRED_PAYLOAD,
    EXPUNGED_RESPONSE,
    ID_CLOCK_SLACK_SECONDS,
    KEY_TAKEN_OVER,
    AttemptFilter,
    ExpiryBatch,
    IdempotencyState,
    IdempotentWrite,
    MessageFilter,
    PruneBatch,
    TokenInfo,
    message_id_floor,
)
from hookline.wakeup import LocalWakeup, Wakeup

if TYPE_CHECKING:
    from hookline.store.base import Store

_T = TypeVar("_T")


class _Task(msgspec.Struct, frozen=True, kw_only=True):
    """One message towards one endpoint, plus the queue bookkeeping ``Delivery`` leaves out."""

    msg_id: str
    endpoint_id: str
    app_id: str
    status: MessageStatus
    attempts: int
    next_attempt_at: float | None
    updated_at: float
    trigger: Trigger
    # Fencing token: bumped on every claim and requeue so an older lease holder's completion
    # no longer matches.
    lease: int = 0
    lease_until: float | None = None

    def delivery(self) -> Delivery:
        # Only a pending task has a next attempt to show; keep in step with list_deliveries
        # in sqlite.py.
        pending = self.status == MessageStatus.PENDING
        return Delivery(
            msg_id=self.msg_id,
            endpoint_id=self.endpoint_id,
            app_id=self.app_id,
            status=self.status,
            attempts=self.attempts,
            next_attempt_at=self.next_attempt_at if pending else None,
            updated_at=self.updated_at,
        )

    def due_at(self) -> float | None:
        """When this task becomes claimable, or None if it never will on its own."""
        if self.status == MessageStatus.PENDING:
            return self.next_attempt_at
        if self.status == MessageStatus.SENDING:
            return self.lease_until
        return None


class _IdempotencyRow(msgspec.Struct, frozen=True, kw_only=True):
    """A key that is being worked on (``response`` None) or has its final answer.

    ``expires_at`` is the owner's lock deadline while pending and the end of the replay window
    once finished: past it the row counts as absent, so a crashed owner's key frees itself.
    """

    fingerprint: str  # "" when the answer was written without a begin: matches any request
    expires_at: float
    response: StoredResponse | None = None
    owner: str | None = None  # the lock holder's token while pending


def _page(items: Iterable[_T], key: Callable[[_T], str], page: Page) -> list[_T]:
    """Keyset paging: sort by ``key``, skip up to and including ``page.after``, cut at limit."""
    rows = sorted(items, key=key, reverse=page.descending)
    after = page.after
    if after is not None:
        if page.descending:
            rows = [r for r in rows if key(r) < after]
        else:
            rows = [r for r in rows if key(r) > after]
    return rows[: max(page.limit, 0)]


def _in_window(at: float, since: float | None, until: float | None) -> bool:
    """``since`` inclusive, ``until`` exclusive; a missing bound does not restrict."""
    return (since is None or at >= since) and (until is None or at < until)


class MemoryStore:
    """A ``Store`` held in dicts of frozen records; everything is lost when the process ends."""

    def __init__(self) -> None:
        self._orgs: dict[str, Org] = {}
        self._tokens: dict[str, Token] = {}
        self._token_by_hash: dict[str, str] = {}  # token hash -> token id
        self._token_last_used: dict[str, float] = {}  # token id -> when
        self._apps: dict[str, Application] = {}
        self._event_types: dict[tuple[str, str], EventType] = {}  # (org_id, name)
        self._endpoints: dict[str, Endpoint] = {}
        self._messages: dict[str, Message] = {}
        self._tasks: dict[tuple[str, str], _Task] = {}  # (msg_id, endpoint_id)
        self._attempts: dict[str, Attempt] = {}
        self._idempotency: dict[str, _IdempotencyRow] = {}
        self._health: dict[str, EndpointHealth] = {}
        self._wakeup = LocalWakeup()

    # lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close; the data stays until the object is dropped."""

    async def migrate(self) -> None:
        """Nothing to migrate: the layout is the code."""

    async def check_writable(self) -> None:
        """Always writable: memory never refuses a write."""

    async def probe_write(self, now: float) -> None:
        """Always writable: memory never refuses a write, so there is nothing to probe."""

    async def ping(self) -> None:
        """Always reachable."""

    # tenants and tokens ------------------------------------------------------------------------
    async def ensure_org(self, name: str, now: float) -> Org:
        """Return the org called ``name``, creating it on first use."""
        for org in self._orgs.values():
            if org.name == name:
                return org
        org = Org(id=ids.new(ids.ORG), name=name, created_at=now)
        self._orgs[org.id] = org
        return org

    async def create_token(self, org_id: str, name: str, token_hash: str, now: float) -> Token:
        """Record an API token by the hash of its secret; the secret itself is never stored."""
        if token_hash in self._token_by_hash:
            raise errors.Conflict("A token with this secret already exists")
        token = Token(id=ids.new(ids.TOKEN), org_id=org_id, name=name, created_at=now)
        self._tokens[token.id] = token
        self._token_by_hash[token_hash] = token.id
        return token

    async def find_token(self, token_hash: str) -> Token | None:
        """The token whose secret hashes to ``token_hash``, if any."""
        token_id = self._token_by_hash.get(token_hash)
        return None if token_id is None else self._tokens.get(token_id)

    async def count_tokens(self) -> int:
        """How many tokens exist across all orgs."""
        return len(self._tokens)

    async def list_tokens(self) -> list[TokenInfo]:
        """Every token of every org, oldest first; never its hash."""
        tokens = sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))
        return [
            TokenInfo(
                id=t.id,
                name=t.name,
                org_id=t.org_id,
                org_name=self._orgs[t.org_id].name,
                created_at=t.created_at,
                last_used_at=self._token_last_used.get(t.id),
            )
            for t in tokens
        ]

    async def revoke_token(self, token_id: str) -> bool:
        """Forget the token and its hash; False if there was none with this id."""
        if self._tokens.pop(token_id, None) is None:
            return False
        self._token_last_used.pop(token_id, None)
        for token_hash, owner in list(self._token_by_hash.items()):
            if owner == token_id:
                del self._token_by_hash[token_hash]
        return True

    async def touch_tokens(self, used: Mapping[str, float]) -> None:
        """Record last use; a time never moves back, unknown ids are ignored."""
        for token_id, at in used.items():
            if token_id in self._tokens:
                self._token_last_used[token_id] = max(at, self._token_last_used.get(token_id, at))

    # applications ------------------------------------------------------------------------------
    def _app_uid_taken(self, org_id: str, uid: str | None, app_id: str) -> bool:
        return uid is not None and any(
            a.org_id == org_id and a.uid == uid and a.id != app_id for a in self._apps.values()
        )

    async def create_app(self, app: Application) -> None:
        """Store a new application; ``errors.Conflict`` if its id or uid is taken in the org."""
        if app.id in self._apps or self._app_uid_taken(app.org_id, app.uid, app.id):
            raise errors.Conflict("An application with this uid already exists")
        self._apps[app.id] = app

    async def get_app(self, org_id: str, ref: str) -> Application | None:
        """The org's application whose id or uid is ``ref``; other orgs' apps are invisible."""
        app = self._apps.get(ref)
        if app is not None and app.org_id == org_id:
            return app
        for app in self._apps.values():
            if app.org_id == org_id and app.uid == ref:
                return app
        return None

    async def find_app(self, app_id: str) -> Application | None:
        """The application with this id in any org; uids are not looked at."""
        return self._apps.get(app_id)

    async def list_apps(self, org_id: str, page: Page) -> list[Application]:
        """One page of the org's applications, keyed on id."""
        apps = (a for a in self._apps.values() if a.org_id == org_id)
        return _page(apps, lambda a: a.id, page)

    async def update_app(self, app: Application) -> None:
        """Replace a stored application (matched by id and org); a missing one is left alone."""
        current = self._apps.get(app.id)
        if current is None or current.org_id != app.org_id:
            return
        if self._app_uid_taken(app.org_id, app.uid, app.id):
            raise errors.Conflict("An application with this uid already exists")
        self._apps[app.id] = app

    async def delete_app(self, org_id: str, app_id: str) -> bool:
        """Delete the app with its endpoints, messages, tasks and attempts; False if absent."""
        app = self._apps.get(app_id)
        if app is None or app.org_id != org_id:
            return False
        del self._apps[app_id]
        self._endpoints = {k: v for k, v in self._endpoints.items() if v.app_id != app_id}
        self._messages = {k: v for k, v in self._messages.items() if v.app_id != app_id}
        self._tasks = {k: v for k, v in self._tasks.items() if v.app_id != app_id}
        self._attempts = {k: v for k, v in self._attempts.items() if v.app_id != app_id}
        return True

    # event types -------------------------------------------------------------------------------
    async def create_event_type(self, event_type: EventType) -> None:
        """Store a new event type; ``errors.Conflict`` if the name exists, even archived."""
        key = (event_type.org_id, event_type.name)
        if key in self._event_types:
            raise errors.Conflict("An event type with this name already exists")
        self._event_types[key] = event_type

    async def get_event_type(self, org_id: str, name: str) -> EventType | None:
        """The org's event type called ``name``, archived or not."""
        return self._event_types.get((org_id, name))

    async def list_event_types(
        self, org_id: str, page: Page, include_archived: bool
    ) -> list[EventType]:
        """One page of the org's event types, keyed on name; archived ones only when asked."""
        types = (
            t
            for t in self._event_types.values()
            if t.org_id == org_id and (include_archived or not t.archived)
        )
        return _page(types, lambda t: t.name, page)

    async def update_event_type(self, event_type: EventType) -> None:
        """Replace the stored event type with the same org and name; a missing one is ignored."""
        key = (event_type.org_id, event_type.name)
        if key in self._event_types:
            self._event_types[key] = event_type

    # endpoints ---------------------------------------------------------------------------------
    def _endpoint_uid_taken(self, app_id: str, uid: str | None, endpoint_id: str) -> bool:
        return uid is not None and any(
            e.app_id == app_id and e.uid == uid and e.id != endpoint_id
            for e in self._endpoints.values()
        )

    async def create_endpoint(self, endpoint: Endpoint) -> None:
        """Store a new endpoint; ``errors.Conflict`` if its id or uid is taken in the app."""
        if endpoint.id in self._endpoints or self._endpoint_uid_taken(
            endpoint.app_id, endpoint.uid, endpoint.id
        ):
            raise errors.Conflict("An endpoint with this uid already exists")
        self._endpoints[endpoint.id] = endpoint

    async def get_endpoint(self, app_id: str, ref: str) -> Endpoint | None:
        """The app's endpoint whose id or uid is ``ref``."""
        endpoint = self._endpoints.get(ref)
        if endpoint is not None and endpoint.app_id == app_id:
            return endpoint
        for endpoint in self._endpoints.values():
            if endpoint.app_id == app_id and endpoint.uid == ref:
                return endpoint
        return None

    async def list_endpoints(self, app_id: str, page: Page) -> list[Endpoint]:
        """One page of the app's endpoints, keyed on id."""
        endpoints = (e for e in self._endpoints.values() if e.app_id == app_id)
        return _page(endpoints, lambda e: e.id, page)

    async def update_endpoint(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint (matched by id and app); a missing one is left alone."""
        current = self._endpoints.get(endpoint.id)
        if current is None or current.app_id != endpoint.app_id:
            return
        if self._endpoint_uid_taken(endpoint.app_id, endpoint.uid, endpoint.id):
            raise errors.Conflict("An endpoint with this uid already exists")
        if current.disabled and not endpoint.disabled:
            # enabled again by hand: its failure history no longer counts against it
            self._health.pop(endpoint.id, None)
        self._endpoints[endpoint.id] = endpoint

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint and its pending work; its attempts stay as history."""
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None or endpoint.app_id != app_id:
            return False
        del self._endpoints[endpoint_id]
        self._health.pop(endpoint_id, None)
        self._tasks = {k: v for k, v in self._tasks.items() if v.endpoint_id != endpoint_id}
        return True

    async def endpoint_stats(
        self, app_id: str, endpoint_id: str, since: float | None, until: float | None
    ) -> EndpointStats:
        """Count the endpoint's tasks by status, for messages created in [since, until)."""
        counts = dict.fromkeys(MessageStatus, 0)
        for task in self._tasks.values():
            if task.app_id != app_id or task.endpoint_id != endpoint_id:
                continue
            message = self._messages.get(task.msg_id)
            if message is not None and _in_window(message.created_at, since, until):
                counts[task.status] += 1
        return EndpointStats(
            success=counts[MessageStatus.SUCCESS],
            pending=counts[MessageStatus.PENDING],
            sending=counts[MessageStatus.SENDING],
            fail=counts[MessageStatus.FAIL],
        )

    # messages ----------------------------------------------------------------------------------
    async def create_message(
        self, message: Message, idempotency: IdempotentWrite | None = None
    ) -> int:
        """Store the message, one task per endpoint that accepts it, and the idempotent answer.

        Raises ``errors.Conflict`` (and writes nothing) when the app already has a message
        with this ``event_id``.
        """
        if message.event_id is not None and any(
            m.app_id == message.app_id and m.event_id == message.event_id
            for m in self._messages.values()
        ):
            raise errors.Conflict("A message with this event id already exists")
        if message.id in self._messages:
            raise errors.Conflict("A message with this id already exists")
        if message.app_id not in self._apps:
            raise errors.NotFound()
        if idempotency is not None:
            self._check_owner(idempotency)
        targets = [
            e
            for e in self._endpoints.values()
            if e.app_id == message.app_id and e.accepts(message.event_type, message.channels)
        ]
        # Every check is done above: from here on nothing can fail, so the message, its tasks
        # and the idempotent answer appear together or not at all.
        self._messages[message.id] = message
        for endpoint in targets:
            self._tasks[(message.id, endpoint.id)] = _Task(
                msg_id=message.id,
                endpoint_id=endpoint.id,
                app_id=message.app_id,
                status=MessageStatus.PENDING,
                attempts=0,
                next_attempt_at=message.first_due_at,  # deliverAt, when given
                updated_at=message.created_at,
                trigger=Trigger.SCHEDULED,
            )
        if idempotency is not None:
            self._finish_idempotency(idempotency)
        return len(targets)

    async def get_message(self, app_id: str, ref: str) -> Message | None:
        """The app's message whose id or event_id is ``ref``."""
        message = self._messages.get(ref)
        if message is not None and message.app_id == app_id:
            return message
        for message in self._messages.values():
            if message.app_id == app_id and message.event_id == ref:
                return message
        return None

    async def list_messages(self, app_id: str, flt: MessageFilter, page: Page) -> list[Message]:
        """One page of the app's messages that pass ``flt``, keyed on id."""

        def wanted(m: Message) -> bool:
            return (
                m.app_id == app_id
                and (flt.channel is None or flt.channel in (m.channels or ()))
                and (flt.tag is None or flt.tag in (m.tags or ()))
                and (flt.event_types is None or m.event_type in flt.event_types)
                and (flt.before is None or m.created_at < flt.before)
                and (flt.after is None or m.created_at > flt.after)
            )

        return _page(filter(wanted, self._messages.values()), lambda m: m.id, page)

    # the delivery queue ------------------------------------------------------------------------
    def now(self) -> float:
        """The host's wall clock (one process, one host)."""
        return time.time()

    def wakeup(self) -> Wakeup:
        """The in-process wake-up shared by this process's API and worker."""
        return self._wakeup

    async def claim_due(self, now: float, policy: ClaimPolicy, lease_seconds: float) -> list[Claim]:
        """Lease up to ``policy.limit`` due tasks that may be sent now, oldest due first.

        Due means pending and scheduled at or before ``now``, or sending with an expired
        lease (the worker holding it crashed or stalled). A due task whose endpoint is
        disabled is failed instead: nothing would ever send it. Every due task is looked at,
        so a blocked endpoint's tasks never hide the others' (this backend is small).
        """
        admission = Admission(policy, now, lease_seconds, self._health)
        due: list[tuple[float, _Task]] = []
        for task in self._tasks.values():
            due_at = task.due_at()
            if due_at is not None and due_at <= now:
                due.append((due_at, task))
        # Ties broken by key so every backend hands out the same order.
        due.sort(key=lambda d: (d[0], d[1].msg_id, d[1].endpoint_id))

        counting = policy.deferred_since is not None
        policy.deferred.clear()
        claims: list[Claim] = []
        for _, task in due:
            endpoint = self._endpoints[task.endpoint_id]
            if len(claims) >= policy.limit:
                if not counting:
                    break
                # Full: nothing more goes, but an endpoint that could take nothing anyway (as
                # the other stores know from the claimer's slots and endpoint_health) still
                # counts its waiting tasks as deferred.
                if not endpoint.disabled:
                    admission.remaining(endpoint)
                continue
            key = (task.msg_id, task.endpoint_id)
            if endpoint.disabled:
                self._tasks[key] = replace(
                    task,
                    status=MessageStatus.FAIL,
                    next_attempt_at=None,
                    lease_until=None,
                    updated_at=now,
                )
                continue
            if not admission.admit(endpoint):
                continue
            claimed = replace(
                task,
                status=MessageStatus.SENDING,
                lease=task.lease + 1,
                lease_until=now + lease_seconds,
                updated_at=now,
            )
            self._tasks[key] = claimed
            claims.append(
                Claim(
                    message=self._messages[task.msg_id],
                    endpoint=endpoint,
                    attempts=claimed.attempts,
                    lease=claimed.lease,
                    trigger=claimed.trigger,
                )
            )
        self._keep_health(admission.changed())
        if counting:
            handed_out = {(c.message.id, c.endpoint.id) for c in claims}
            self._count_deferred(policy, admission.closed(), due, handed_out)
        return claims

    def _count_deferred(
        self,
        policy: ClaimPolicy,
        reasons: Mapping[str, str],
        due: list[tuple[float, _Task]],
        claimed: set[tuple[str, str]],
    ) -> None:
        """Keep in step with ``sqlite_claiming.count_deferred``: waiting tasks, due since."""
        since = policy.deferred_since
        counts: dict[str, int] = {}
        for due_at, task in due:
            if (
                task.endpoint_id in reasons
                and since is not None
                and due_at > since
                and (task.msg_id, task.endpoint_id) not in claimed
            ):
                counts[task.endpoint_id] = counts.get(task.endpoint_id, 0) + 1
        admission_.tally(policy, reasons, counts.items())

    async def complete(
        self, completions: Sequence[Completion], now: float, circuit: CircuitPolicy | None = None
    ) -> list[HealthEvent]:
        """Record each attempt, move its task on only if the lease is still the caller's, and
        update each endpoint's health from the attempts' outcomes."""
        outcomes: dict[str, list[tuple[bool, float]]] = {}
        for completion in completions:
            attempt = completion.attempt
            outcomes.setdefault(attempt.endpoint_id, []).append(
                (attempt.status == MessageStatus.SUCCESS, attempt.created_at)
            )
        events = self._apply_completions(completions, now)
        for endpoint_id, seen in outcomes.items():
            endpoint = self._endpoints.get(endpoint_id)
            if endpoint is None:
                continue
            before = self._health.get(endpoint_id) or EndpointHealth(endpoint_id=endpoint_id)
            after, changes = after_attempts(
                before, seen, circuit or CircuitPolicy(), disabled=endpoint.disabled
            )
            if after != before:
                self._keep_health([after])
            for change in changes:
                if change.change is HealthChange.DISABLED:
                    self._endpoints[endpoint_id] = replace(endpoint, disabled=True, updated_at=now)
            events.extend(changes)
        return events

    def _keep_health(self, healths: Sequence[EndpointHealth]) -> None:
        # Back to the default state: forgotten, as the SQLite store deletes its row.
        for health in healths:
            if health.is_default:
                self._health.pop(health.endpoint_id, None)
            else:
                self._health[health.endpoint_id] = health

    async def release(self, releases: Sequence[Release], now: float) -> int:
        """Put claimed tasks back as pending at their ``due_at``; stale leases are ignored."""
        applied = 0
        for release in releases:
            key = (release.msg_id, release.endpoint_id)
            task = self._tasks.get(key)
            if task is None or task.status != MessageStatus.SENDING or task.lease != release.lease:
                continue
            self._tasks[key] = replace(
                task,
                status=MessageStatus.PENDING,
                next_attempt_at=release.due_at,
                lease=task.lease + 1,  # fences off a late completion of the released send
                lease_until=None,
                updated_at=now,
            )
            applied += 1
        return applied

    async def count_due(self, now: float, cap: int) -> int:
        """Tasks due at ``now``, up to ``cap``."""
        due = 0
        for task in self._tasks.values():
            at = task.due_at()
            if at is not None and at <= now:
                due += 1
                if due >= cap:
                    break
        return due

    async def stalled_since(self, now: float, lease_seconds: float) -> float | None:
        """The earliest due time of waiting work nothing holds back (see ``Store``)."""
        first: dict[str, float] = {}  # endpoint id -> its oldest waiting task's due time
        served: set[str] = set()  # endpoints with a delivery in flight under a live lease
        for task in self._tasks.values():
            at = task.due_at()
            if at is None:
                continue
            if task.status == MessageStatus.SENDING and now < at <= now + lease_seconds:
                served.add(task.endpoint_id)
            first[task.endpoint_id] = min(at, first.get(task.endpoint_id, at))
        stalled = [
            at
            for endpoint_id, at in first.items()
            if at <= now and endpoint_id not in served and not self._holds_back(endpoint_id)
        ]
        return min(stalled, default=None)

    def _holds_back(self, endpoint_id: str) -> bool:
        """The endpoint's own state keeps its work waiting: an open circuit or a rate limit."""
        endpoint = self._endpoints.get(endpoint_id)
        health = self._health.get(endpoint_id)
        if endpoint is None:  # gone (the stores' joins drop it too)
            return True
        return rate_of(endpoint) is not None or (health is not None and health.circuit_open)

    async def endpoint_health(self, endpoint_id: str) -> EndpointHealth | None:
        """The endpoint's stored delivery state; None while it has never failed or been limited."""
        return self._health.get(endpoint_id)

    async def endpoint_summary(self) -> EndpointSummary:
        """Open circuits of enabled endpoints, and disabled endpoints."""
        circuits = sum(
            1
            for endpoint_id, health in self._health.items()
            if health.circuit_open
            and (e := self._endpoints.get(endpoint_id)) is not None
            and not e.disabled
        )
        disabled = sum(1 for e in self._endpoints.values() if e.disabled)
        return EndpointSummary(circuits_open=circuits, disabled=disabled)

    def _apply_completions(
        self, completions: Sequence[Completion], now: float
    ) -> list[HealthEvent]:
        events: list[HealthEvent] = []
        for completion in completions:
            attempt = completion.attempt
            # The request went out whether or not the lease still holds, so it is history.
            self._attempts[attempt.id] = attempt
            key = (attempt.msg_id, attempt.endpoint_id)
            task = self._tasks.get(key)
            if (
                task is None
                or task.status != MessageStatus.SENDING
                or task.lease != completion.lease
            ):
                continue
            self._tasks[key] = replace(
                task,
                status=completion.next_status,
                attempts=task.attempts + 1,
                next_attempt_at=completion.next_attempt_at,
                trigger=Trigger.SCHEDULED,
                lease_until=None,
                updated_at=now,
            )
            if completion.disable_endpoint:
                endpoint = self._endpoints.get(attempt.endpoint_id)
                if endpoint is not None and not endpoint.disabled:
                    self._endpoints[endpoint.id] = replace(endpoint, disabled=True, updated_at=now)
                    events.append(gone_event(attempt.endpoint_id, attempt.created_at))
        return events

    async def next_due_at(self) -> float | None:
        """The earliest time any task becomes claimable, None when nothing is waiting."""
        times = [t for t in (task.due_at() for task in self._tasks.values()) if t is not None]
        return min(times, default=None)

    async def requeue(self, app_id: str, msg_id: str, endpoint_id: str, now: float) -> None:
        """Resend a message to an endpoint now, as a manual attempt with a fresh retry budget.

        Raises ``errors.NotFound`` if the message or the endpoint is not in the app, and
        ``errors.PayloadMissing`` if the message's payload expired.
        """
        message = self._messages.get(msg_id)
        endpoint = self._endpoints.get(endpoint_id)
        if message is None or message.app_id != app_id:
            raise errors.NotFound("Message not found")
        if endpoint is None or endpoint.app_id != app_id:
            raise errors.NotFound("Endpoint not found")
        if message.payload == EXPIRED_PAYLOAD:
            raise errors.PayloadMissing()
        key = (msg_id, endpoint_id)
        previous = self._tasks.get(key)
        self._tasks[key] = _Task(
            msg_id=msg_id,
            endpoint_id=endpoint_id,
            app_id=app_id,
            status=MessageStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            updated_at=now,
            trigger=Trigger.MANUAL,
            # Bumped so a worker still sending the old task cannot complete the new one.
            lease=0 if previous is None else previous.lease + 1,
        )

    async def recover(
        self, app_id: str, endpoint_id: str, since: float, until: float | None, now: float
    ) -> int:
        """Put the endpoint's failed tasks for messages created in [since, until) back in line.

        Messages whose payload expired are left as they are: there is nothing to send.
        """
        recovered = 0
        for key, task in list(self._tasks.items()):
            if (
                task.app_id != app_id
                or task.endpoint_id != endpoint_id
                or task.status != MessageStatus.FAIL
            ):
                continue
            message = self._messages.get(task.msg_id)
            if message is None or not _in_window(message.created_at, since, until):
                continue
            if message.payload == EXPIRED_PAYLOAD:  # nothing left to send
                continue
            self._tasks[key] = replace(
                task,
                status=MessageStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                trigger=Trigger.MANUAL,
                lease=task.lease + 1,  # as requeue does; keep in step with delivery_recover
                lease_until=None,
                updated_at=now,
            )
            recovered += 1
        return recovered

    # attempts and per-endpoint status ----------------------------------------------------------
    async def list_attempts(self, app_id: str, flt: AttemptFilter, page: Page) -> list[Attempt]:
        """One page of the app's attempts that pass ``flt``, keyed on attempt id."""

        def code_class_matches(code: int) -> bool:
            if flt.status_code_class is None:
                return True
            if flt.status_code_class == 0:
                return code == 0  # no HTTP response at all (timeout, refused, TLS ...)
            return code // 100 * 100 == flt.status_code_class

        def wanted(a: Attempt) -> bool:
            return (
                a.app_id == app_id
                and (flt.msg_id is None or a.msg_id == flt.msg_id)
                and (flt.endpoint_id is None or a.endpoint_id == flt.endpoint_id)
                and (flt.status is None or a.status == flt.status)
                and code_class_matches(a.response_status_code)
                and (flt.before is None or a.created_at < flt.before)
                and (flt.after is None or a.created_at > flt.after)
            )

        return _page(filter(wanted, self._attempts.values()), lambda a: a.id, page)

    async def get_attempt(self, app_id: str, msg_id: str, attempt_id: str) -> Attempt | None:
        """One attempt, only if it belongs to this app and message."""
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.app_id != app_id or attempt.msg_id != msg_id:
            return None
        return attempt

    async def list_deliveries(
        self, app_id: str, msg_id: str, page: Page
    ) -> list[tuple[Endpoint, Delivery]]:
        """The message's state towards each endpoint that still exists, keyed on endpoint id."""
        pairs = [
            (self._endpoints[task.endpoint_id], task.delivery())
            for task in self._tasks.values()
            if task.app_id == app_id
            and task.msg_id == msg_id
            and task.endpoint_id in self._endpoints
        ]
        return _page(pairs, lambda p: p[0].id, page)

    # idempotency -------------------------------------------------------------------------------
    async def idempotency_begin(
        self, key: str, fingerprint: str, now: float, lock_seconds: float
    ) -> IdempotencyState:
        """Claim ``key`` for this request, or say why not (in flight, answered, or mismatched)."""
        row = self._idempotency.get(key)
        if row is None or row.expires_at <= now:
            # New key, an answer past its replay window, or an owner whose lock ran out (it
            # crashed or stalled): this caller takes the key under a token of its own, so the
            # stalled owner's commit is refused (_check_owner).
            owner = secrets.token_hex(16)
            self._idempotency[key] = _IdempotencyRow(
                fingerprint=fingerprint, expires_at=now + lock_seconds, owner=owner
            )
            return IdempotencyState(state="owner", owner=owner)
        if row.response is not None:
            if row.fingerprint and row.fingerprint != fingerprint:
                return IdempotencyState(state="mismatch")
            return IdempotencyState(state="done", response=row.response)
        if row.fingerprint != fingerprint:
            return IdempotencyState(state="mismatch")
        return IdempotencyState(state="pending")

    def _check_owner(self, write: IdempotentWrite) -> None:
        """Raise unless ``write`` may commit: no owner given, or its owner still holds the key.

        An expired lock still held by nobody else counts as held (keep in step with
        idempotency_finish_owned in queries.sql).
        """
        if write.owner is None:
            return
        row = self._idempotency.get(write.key)
        if row is None or row.response is not None or row.owner != write.owner:
            raise errors.Conflict(KEY_TAKEN_OVER)

    def _finish_idempotency(self, write: IdempotentWrite) -> None:
        row = self._idempotency.get(write.key)
        # IdempotentWrite carries no fingerprint: a row written without a begin gets "", which
        # replays to any request with the key (keep in step with idempotency_begin in sqlite.py).
        fingerprint = "" if row is None else row.fingerprint
        self._idempotency[write.key] = _IdempotencyRow(
            fingerprint=fingerprint, response=write.response, expires_at=write.expires_at
        )

    async def idempotency_finish(self, write: IdempotentWrite) -> None:
        """Store the key's final answer, replayed to repeats until ``write.expires_at``."""
        self._check_owner(write)
        self._finish_idempotency(write)

    async def idempotency_release(self, key: str, owner: str | None = None) -> None:
        """Drop a pending key (the request failed before answering) so a retry can own it."""
        row = self._idempotency.get(key)
        if row is not None and row.response is None and (owner is None or row.owner == owner):
            del self._idempotency[key]

    async def purge_expired(self, now: float) -> int:
        """Delete answers past their replay window and locks of requests that died."""
        expired = [key for key, row in self._idempotency.items() if row.expires_at <= now]
        for key in expired:
            del self._idempotency[key]
        return len(expired)

    # retention ---------------------------------------------------------------------------------
    def _busy(self, msg_id: str, now: float | None = None) -> bool:
        """A delivery of the message is pending or being sent (with ``now``: under a live lease).

        Keep in step with the NOT EXISTS clauses of retention_expire and prune_delete.
        """
        for task in self._tasks.values():
            if task.msg_id != msg_id:
                continue
            if now is None and task.status in (MessageStatus.PENDING, MessageStatus.SENDING):
                return True
            if (
                now is not None
                and task.status == MessageStatus.SENDING
                and task.lease_until is not None
                and task.lease_until > now
            ):
                return True
        return False

    async def expire_payloads(
        self, now: float, default_seconds: float, limit: int, after: float | None = None
    ) -> ExpiryBatch:
        """Empty the payloads past their time (see ``Store.expire_payloads``)."""
        for m in list(self._messages.values()):
            if m.expires_at is None and m.payload != EXPIRED_PAYLOAD:  # written before retention
                self._messages[m.id] = replace(m, expires_at=m.created_at + default_seconds)
        due = sorted(
            (m for m in self._messages.values() if m.payload != EXPIRED_PAYLOAD),
            key=lambda m: m.expires_at or 0.0,
        )
        due = [
            m
            for m in due
            if m.expires_at is not None
            and m.expires_at <= now
            and (after is None or m.expires_at > after)
        ][: max(limit, 0)]
        expired = 0
        for m in due:
            if self._busy(m.id):
                continue
            self._messages[m.id] = replace(m, payload=EXPIRED_PAYLOAD)
            for attempt in list(self._attempts.values()):
                if attempt.msg_id == m.id:
                    self._attempts[attempt.id] = replace(attempt, response=EXPUNGED_RESPONSE)
            expired += 1
        return ExpiryBatch(
            expired=expired,
            skipped=len(due) - expired,
            cursor=due[-1].expires_at if len(due) == limit and due else None,
        )

    async def prune_messages(
        self,
        before: float,
        now: float,
        limit: int,
        *,
        include_pending: bool = False,
        after: str | None = None,
    ) -> PruneBatch:
        """Delete old messages with their tasks and attempts (see ``Store.prune_messages``)."""
        bound = message_id_floor(before + ID_CLOCK_SLACK_SECONDS)
        old = sorted(
            (
                m
                for m in self._messages.values()
                if m.created_at < before and m.id < bound and (after is None or m.id > after)
            ),
            key=lambda m: m.id,
        )[: max(limit, 0)]
        gone = {m.id for m in old if not self._busy(m.id, now if include_pending else None)}
        for msg_id in gone:
            del self._messages[msg_id]
        self._tasks = {k: v for k, v in self._tasks.items() if v.msg_id not in gone}
        self._attempts = {k: v for k, v in self._attempts.items() if v.msg_id not in gone}
        return PruneBatch(
            deleted=len(gone),
            skipped=len(old) - len(gone),
            cursor=old[-1].id if len(old) == limit and old else None,
        )

    async def count_messages_before(self, before: float) -> int:
        """How many messages were created before ``before``."""
        return sum(1 for m in self._messages.values() if m.created_at < before)


if TYPE_CHECKING:
    # mypy proves here that MemoryStore satisfies the Store Protocol, signature by signature.
    _protocol_check: Store = MemoryStore()
