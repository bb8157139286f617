"""Operational webhooks: hookline's own events (endpoint disabled, attempts failing ...) to the
operator's URL, signed and retried like any other message.

An event is an ordinary hookline message in a hidden application (uid ``operational``) of a
reserved organisation (``_hookline_operational``) that no API token belongs to; its one
endpoint (uid ``operator``) has the URL and secret of ``operational_webhook_url`` / ``_secret``.
The worker delivers it like every other message: Standard Webhooks signature, the retry
schedule, the circuit breaker, auto-disable. Names and payloads are Svix's::

    {"type": "endpoint.disabled", "data": {"appId": ..., "endpointId": ..., "failSince": ...}}

What triggers what (pure rules: ``attempt_event_type``, ``is_disable``):

- ``endpoint.created`` / ``updated`` / ``deleted``: the API changed an endpoint (create, PUT,
  PATCH, DELETE of the endpoint resource; not its headers or secret);
- ``endpoint.disabled``: a ``HealthEvent`` DISABLED (``endpoint_disable_after`` seconds of
  failure without a success, or a 410 Gone);
- ``message.attempt.failing``: the 4th attempt of a message to an endpoint failed and another
  attempt is scheduled;
- ``message.attempt.exhausted``: a failed attempt left the task failed (no retry left, or 410);
- ``message.attempt.recovered``: an attempt succeeded after the ``failing`` event (5th or later).

Events about the operational application itself are never emitted: an operator endpoint that
fails would otherwise report its own failures forever.

Durability: the event is written (``create_message``) right after the change that caused it
was committed, in a second transaction, and from then on is delivered at least once. A crash
between the two commits loses that one notification. Events that arise while the operator
endpoint is disabled are stored without a delivery task, so they are not sent; the endpoint is
enabled again at the next start (no API token can reach it to do so).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

import msgspec
import structlog
import yarl

from hookline import egress, errors, ids, signing
from hookline.api import http
from hookline.models import (
    Application,
    Attempt,
    Completion,
    Endpoint,
    HealthChange,
    HealthEvent,
    Message,
    MessageStatus,
    SigningKey,
)
from hookline.settings import Settings
from hookline.store.base import Store
from hookline.wakeup import Wakeup

ORG_NAME: Final = "_hookline_operational"  # reserved: no API token may belong to it
APP_UID: Final = "operational"
APP_NAME: Final = "hookline operational webhooks"
ENDPOINT_UID: Final = "operator"
FAILING_AFTER_ATTEMPTS: Final = 4  # Svix sends message.attempt.failing on the 4th failure
APP_UID_SECONDS: Final = 5.0  # how long an app's uid is reused from memory (as AppCache)
APP_UID_MAX_ENTRIES: Final = 10_000

ENDPOINT_CREATED: Final = "endpoint.created"
ENDPOINT_UPDATED: Final = "endpoint.updated"
ENDPOINT_DELETED: Final = "endpoint.deleted"
ENDPOINT_DISABLED: Final = "endpoint.disabled"
ATTEMPT_FAILING: Final = "message.attempt.failing"
ATTEMPT_EXHAUSTED: Final = "message.attempt.exhausted"
ATTEMPT_RECOVERED: Final = "message.attempt.recovered"
# The words the API uses in ``Services.on_endpoint_change`` -> the event type.
ENDPOINT_CHANGES: Final = {
    "created": ENDPOINT_CREATED,
    "updated": ENDPOINT_UPDATED,
    "deleted": ENDPOINT_DELETED,
}

T = TypeVar("T")
log = structlog.get_logger("hookline.operational")


# payload shapes (Svix's OpenAPI schemas of the same names) ------------------------------------
class EndpointEventData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """EndpointCreatedEventData, EndpointUpdatedEventData and EndpointDeletedEventData."""

    app_id: str
    app_uid: str | None
    endpoint_id: str
    endpoint_uid: str | None


class EndpointDisabledEventData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    app_id: str
    app_uid: str | None
    endpoint_id: str
    endpoint_uid: str | None
    fail_since: str  # RFC 3339


class MessageAttempetLast(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The attempt that caused an attempt event (Svix's spelling of the schema name)."""

    id: str
    response_status_code: int  # 0: no HTTP answer
    timestamp: str  # RFC 3339


class MessageAttemptEventData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """MessageAttemptFailing-, -Exhausted- and -RecoveredEventData (one shape)."""

    app_id: str
    app_uid: str | None
    msg_id: str
    msg_event_id: str | None
    endpoint_id: str
    last_attempt: MessageAttempetLast


EventData = EndpointEventData | EndpointDisabledEventData | MessageAttemptEventData


class OperationalEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    data: EventData


def encode(event_type: str, data: EventData) -> bytes:
    """The message payload: ``{"type": ..., "data": {...}}``."""
    return msgspec.json.encode(OperationalEvent(type=event_type, data=data))


def endpoint_event(app: Application, endpoint: Endpoint) -> EndpointEventData:
    return EndpointEventData(
        app_id=app.id, app_uid=app.uid, endpoint_id=endpoint.id, endpoint_uid=endpoint.uid
    )


def disabled_event(
    app_id: str, app_uid: str | None, endpoint_id: str, endpoint_uid: str | None, fail_since: float
) -> EndpointDisabledEventData:
    return EndpointDisabledEventData(
        app_id=app_id,
        app_uid=app_uid,
        endpoint_id=endpoint_id,
        endpoint_uid=endpoint_uid,
        fail_since=http.iso(fail_since),
    )


def attempt_event(
    attempt: Attempt, app_uid: str | None, msg_event_id: str | None
) -> MessageAttemptEventData:
    return MessageAttemptEventData(
        app_id=attempt.app_id,
        app_uid=app_uid,
        msg_id=attempt.msg_id,
        msg_event_id=msg_event_id,
        endpoint_id=attempt.endpoint_id,
        last_attempt=MessageAttempetLast(
            id=attempt.id,
            response_status_code=attempt.response_status_code,
            timestamp=http.iso(attempt.created_at),
        ),
    )


# trigger rules ---------------------------------------------------------------------------------
def attempt_event_type(done: Completion) -> str | None:
    """Which attempt event (if any) one completion announces.

    ``failing`` only while a retry remains: when the 4th attempt is also the last, the
    ``exhausted`` event says more. So a success on attempt 5 or later always follows a
    ``failing`` event, which is when Svix sends ``recovered``. A completion that does not
    know its attempt number (0) announces only exhaustion.
    """
    if done.attempt.status == MessageStatus.SUCCESS:
        return ATTEMPT_RECOVERED if done.attempt_number > FAILING_AFTER_ATTEMPTS else None
    if done.next_status == MessageStatus.FAIL:
        return ATTEMPT_EXHAUSTED
    if done.attempt_number == FAILING_AFTER_ATTEMPTS:
        return ATTEMPT_FAILING
    return None


def is_disable(event: HealthEvent) -> bool:
    return event.change is HealthChange.DISABLED


# the service -----------------------------------------------------------------------------------
class OperationalWebhooks:
    """Turns committed changes into operational messages; built by ``configure``."""

    def __init__(self, store: Store, wakeup: Wakeup, app_id: str, endpoint_id: str) -> None:
        self._store = store
        self._wakeup = wakeup
        self.app_id = app_id  # the hidden application's id
        self.endpoint_id = endpoint_id  # the operator endpoint's id
        self._app_uids: dict[str, tuple[str | None, float]] = {}  # app id -> (uid, until)
        self._dropping = False  # the operator endpoint is disabled: warned once, not per event

    @classmethod
    async def configure(
        cls, store: Store, settings: Settings, wakeup: Wakeup
    ) -> OperationalWebhooks | None:
        """Ensure the hidden org, application and operator endpoint; None when not configured.

        Runs in every process at start (``serve``, ``api``, ``worker``) after migrations, so
        it is idempotent, and a row another process created meanwhile (``errors.Conflict``)
        is read back. A changed URL or secret is written to the endpoint, and a disabled
        operator endpoint is enabled again. Exits with a message naming the setting when the
        URL or secret is unusable.
        """
        url = settings.operational_webhook_url
        if not url:
            return None
        secret = _check_settings(url, settings.operational_webhook_secret, settings)
        now = store.now()
        org = await store.ensure_org(ORG_NAME, now)
        app = await _ensure_app(store, org.id, now)
        endpoint = await _ensure_endpoint(store, app.id, url, secret, now)
        log.info("operational_webhooks_enabled", app_id=app.id, endpoint_id=endpoint.id)
        return cls(store, wakeup, app.id, endpoint.id)

    async def endpoint_changed(self, kind: str, app: Application, endpoint: Endpoint) -> None:
        """Announce that the API created, updated or deleted ``endpoint`` (already committed).

        Never raises: the change the client asked for has happened, whatever befalls the
        notification (a failure is logged).
        """
        if app.id == self.app_id:
            return
        event_type = ENDPOINT_CHANGES.get(kind)
        if event_type is None:
            log.error("operational_webhook_unknown_change", change=kind, endpoint_id=endpoint.id)
            return
        subject = {"subject_app_id": app.id, "subject_endpoint_id": endpoint.id}
        if await self._emit(event_type, endpoint_event(app, endpoint), subject):
            self._wakeup.notify()

    async def after_outcomes(
        self, batch: Sequence[Completion], events: Sequence[HealthEvent]
    ) -> None:
        """Announce what a committed batch of outcomes means (the worker's ``on_outcomes``).

        Cheap when nothing is to be said, which is almost always: one pass over the batch
        without any store access. The events of one batch are looked up and written
        concurrently (the SQLite writer commits them together), each on its own: one that
        fails is logged and costs none of the others. Never raises.
        """
        attempts = [
            (kind, done.attempt)
            for done in batch
            if done.attempt.app_id != self.app_id and (kind := attempt_event_type(done))
        ]
        disables = [e for e in events if is_disable(e) and e.endpoint_id != self.endpoint_id]
        if not attempts and not disables:
            return
        app_of = {done.attempt.endpoint_id: done.attempt.app_id for done in batch}
        built = [self._attempt_notice(kind, attempt) for kind, attempt in attempts]
        built += [self._disable_notice(app_of.get(e.endpoint_id), e) for e in disables]
        created = await asyncio.gather(*built)
        if any(created):
            self._wakeup.notify()

    async def _attempt_notice(self, kind: str, attempt: Attempt) -> bool:
        subject = {
            "subject_app_id": attempt.app_id,
            "subject_endpoint_id": attempt.endpoint_id,
            "subject_msg_id": attempt.msg_id,
            "attempt_id": attempt.id,
        }
        try:
            message = await self._store.get_message(attempt.app_id, attempt.msg_id)
            app_uid = await self._app_uid(attempt.app_id)
        except Exception:
            log.exception("operational_webhook_failed", event_type=kind, **subject)
            return False
        data = attempt_event(attempt, app_uid, None if message is None else message.event_id)
        return await self._emit(kind, data, subject)

    async def _disable_notice(self, app_id: str | None, event: HealthEvent) -> bool:
        if app_id is None or app_id == self.app_id:
            return False  # not from this batch (cannot happen) or about the operator itself
        subject = {"subject_app_id": app_id, "subject_endpoint_id": event.endpoint_id}
        try:
            endpoint = await self._store.get_endpoint(app_id, event.endpoint_id)
            app_uid = await self._app_uid(app_id)
        except Exception:
            log.exception("operational_webhook_failed", event_type=ENDPOINT_DISABLED, **subject)
            return False
        data = disabled_event(
            app_id,
            app_uid,
            event.endpoint_id,
            None if endpoint is None else endpoint.uid,
            event.failing_since if event.failing_since is not None else event.at,
        )
        return await self._emit(ENDPOINT_DISABLED, data, subject)

    async def _app_uid(self, app_id: str) -> str | None:
        hit = self._app_uids.get(app_id)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        app = await self._store.find_app(app_id)
        uid = None if app is None else app.uid
        if len(self._app_uids) >= APP_UID_MAX_ENTRIES:
            self._app_uids.clear()
        self._app_uids[app_id] = (uid, now + APP_UID_SECONDS)
        return uid

    async def _emit(self, event_type: str, data: EventData, subject: dict[str, str]) -> bool:
        """Write one event message; True when it was written. Logs, never raises.

        Log fields: ``msg_id`` is the operational message (as in the worker's ``delivery_attempt``
        for its delivery); ``subject_*`` name what the event is about. No payload, no URL.
        """
        message = Message(
            id=ids.new(ids.MESSAGE),
            app_id=self.app_id,
            event_type=event_type,
            payload=encode(event_type, data),
            created_at=self._store.now(),
        )
        try:
            tasks = await self._store.create_message(message)
        except Exception:
            log.exception(
                "operational_webhook_failed", event_type=event_type, msg_id=message.id, **subject
            )
            return False
        if tasks == 0:
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "operational_webhook_dropped",
                    reason="the operator endpoint is disabled; restart hookline to enable it",
                    event_type=event_type,
                    msg_id=message.id,
                    **subject,
                )
            return True
        self._dropping = False
        log.debug("operational_webhook_queued", event_type=event_type, msg_id=message.id, **subject)
        return True


# start-up --------------------------------------------------------------------------------------
def _check_settings(url: str, secret: str | None, settings: Settings) -> str:
    """The secret in ``whsec_`` form; exits naming the setting when URL or secret is unusable."""
    try:
        parsed = yarl.URL(url)
    except ValueError as exc:
        raise SystemExit(f"hookline: invalid HOOKLINE_OPERATIONAL_WEBHOOK_URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise SystemExit(
            "hookline: invalid HOOKLINE_OPERATIONAL_WEBHOOK_URL: not an absolute http(s) URL"
        )
    refusal = egress.EgressPolicy(allowed=settings.allowed_subnets).refusal_for_url(parsed)
    if refusal is not None:
        # every delivery there would be refused: say so now, not in each attempt's record
        raise SystemExit(
            f"hookline: HOOKLINE_OPERATIONAL_WEBHOOK_URL: {refusal}"
            " (allow it with HOOKLINE_ALLOWED_SUBNETS)"
        )
    if not secret:
        raise SystemExit(
            "hookline: HOOKLINE_OPERATIONAL_WEBHOOK_URL needs HOOKLINE_OPERATIONAL_WEBHOOK_SECRET"
        )
    try:
        signing.decode_secret(secret)
    except ValueError as exc:
        # the message names the problem, never the value
        raise SystemExit(f"hookline: invalid HOOKLINE_OPERATIONAL_WEBHOOK_SECRET: {exc}") from None
    return secret if secret.startswith(signing.SECRET_PREFIX) else signing.SECRET_PREFIX + secret


async def _ensure_app(store: Store, org_id: str, now: float) -> Application:
    new = Application(
        id=ids.new(ids.APP),
        org_id=org_id,
        name=APP_NAME,
        uid=APP_UID,
        created_at=now,
        updated_at=now,
    )
    return await _get_or_create(
        lambda: store.get_app(org_id, APP_UID), lambda: store.create_app(new), "application"
    )


async def _get_or_create(
    get: Callable[[], Awaitable[T | None]], create: Callable[[], Awaitable[None]], what: str
) -> T:
    """Read it; else create it, where another process starting at the same moment may win
    (a ``Conflict``), and read whichever was stored."""
    found = await get()
    if found is None:
        with contextlib.suppress(errors.Conflict):
            await create()
        found = await get()
        if found is None:
            raise RuntimeError(f"the operational {what} vanished while being created")
    return found


async def _ensure_endpoint(
    store: Store, app_id: str, url: str, secret: str, now: float
) -> Endpoint:
    keys = (SigningKey(secret=secret),)
    new = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app_id,
        url=url,
        uid=ENDPOINT_UID,
        description="hookline's own events",
        keys=keys,
        created_at=now,
        updated_at=now,
    )
    # possibly created by another process meanwhile, with other settings: brought up to date
    endpoint = await _get_or_create(
        lambda: store.get_endpoint(app_id, ENDPOINT_UID),
        lambda: store.create_endpoint(new),
        "endpoint",
    )
    if endpoint.url != url or endpoint.keys != keys or endpoint.disabled:
        # Settings win: a new URL or secret applies at once (the old secret stops signing,
        # the operator changed both ends), and only a restart can enable it again.
        log.info(
            "operator_endpoint_updated",
            endpoint_id=endpoint.id,
            url_changed=endpoint.url != url,
            secret_changed=endpoint.keys != keys,
            enabled_again=endpoint.disabled,
        )
        endpoint = msgspec.structs.replace(
            endpoint, url=url, keys=keys, disabled=False, updated_at=now
        )
        await store.update_endpoint(endpoint)
    return endpoint
