"""Operational webhooks: Svix's payload shapes, which outcome announces what, and the hidden
application they travel through (on the in-memory store: no I/O)."""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

import pytest
from msgspec.structs import replace

from hookline import errors, ids, operational
from hookline.models import (
    Application,
    Attempt,
    Completion,
    Endpoint,
    HealthChange,
    HealthEvent,
    Message,
    MessageStatus,
    Page,
    Trigger,
)
from hookline.settings import Settings
from hookline.store.base import MessageFilter
from hookline.store.memory import MemoryStore

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"t" * 24).decode()
OPS_URL = "https://ops.example.com/hookline"


class CountingWakeup:
    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1

    async def wait(self, seconds: float) -> bool:
        return False


def settings(url: str | None = OPS_URL, secret: str | None = SECRET, **more: Any) -> Settings:
    return Settings(operational_webhook_url=url, operational_webhook_secret=secret, **more)


def app_(uid: str | None = "billing") -> Application:
    return Application(
        id=ids.new(ids.APP), org_id="org_x", name="Billing", uid=uid, created_at=NOW, updated_at=NOW
    )


def endpoint_(app_id: str, uid: str | None = "primary") -> Endpoint:
    return Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id=app_id,
        url="https://customer.example.com/hook",
        uid=uid,
        created_at=NOW,
        updated_at=NOW,
    )


def attempt_(
    app_id: str = "app_x",
    endpoint_id: str = "ep_x",
    msg_id: str = "msg_x",
    *,
    status: MessageStatus = MessageStatus.FAIL,
    code: int = 500,
    at: float = NOW,
) -> Attempt:
    return Attempt(
        id=ids.new(ids.ATTEMPT),
        msg_id=msg_id,
        endpoint_id=endpoint_id,
        app_id=app_id,
        url="https://customer.example.com/hook",
        status=status,
        response_status_code=code,
        response="",
        duration_ms=3,
        trigger=Trigger.SCHEDULED,
        created_at=at,
    )


def done(
    number: int,
    next_status: MessageStatus,
    *,
    succeeded: bool = False,
    attempt: Attempt | None = None,
) -> Completion:
    status = MessageStatus.SUCCESS if succeeded else MessageStatus.FAIL
    a = attempt or attempt_(status=status, code=200 if succeeded else 500)
    return Completion(
        attempt=replace(a, status=status),
        lease=1,
        next_status=next_status,
        next_attempt_at=None,
        attempt_number=number,
    )


# payloads ------------------------------------------------------------------------------------


def test_endpoint_events_have_svixs_type_and_camel_case_fields() -> None:
    app = app_()
    ep = endpoint_(app.id)
    body = json.loads(operational.encode("endpoint.created", operational.endpoint_event(app, ep)))
    assert body == {
        "type": "endpoint.created",
        "data": {
            "appId": app.id,
            "appUid": "billing",
            "endpointId": ep.id,
            "endpointUid": "primary",
        },
    }


def test_missing_uids_are_null_not_left_out() -> None:
    app = app_(uid=None)
    ep = endpoint_(app.id, uid=None)
    data = json.loads(operational.encode("endpoint.deleted", operational.endpoint_event(app, ep)))
    assert data["data"]["appUid"] is None
    assert data["data"]["endpointUid"] is None


def test_disabled_event_says_since_when_in_rfc_3339() -> None:
    data = operational.disabled_event("app_1", "billing", "ep_1", "primary", NOW + 0.25)
    body = json.loads(operational.encode("endpoint.disabled", data))
    assert body == {
        "type": "endpoint.disabled",
        "data": {
            "appId": "app_1",
            "appUid": "billing",
            "endpointId": "ep_1",
            "endpointUid": "primary",
            "failSince": "2027-01-15T08:00:00.250Z",
        },
    }


def test_attempt_events_carry_the_message_and_the_last_attempt() -> None:
    a = attempt_("app_1", "ep_1", "msg_1", code=503, at=NOW)
    body = json.loads(
        operational.encode("message.attempt.exhausted", operational.attempt_event(a, None, "ev-7"))
    )
    assert body == {
        "type": "message.attempt.exhausted",
        "data": {
            "appId": "app_1",
            "appUid": None,
            "msgId": "msg_1",
            "msgEventId": "ev-7",
            "endpointId": "ep_1",
            "lastAttempt": {
                "id": a.id,
                "responseStatusCode": 503,
                "timestamp": "2027-01-15T08:00:00.000Z",
            },
        },
    }


# trigger rules -------------------------------------------------------------------------------

P, F, S = MessageStatus.PENDING, MessageStatus.FAIL, MessageStatus.SUCCESS


@pytest.mark.parametrize(
    ("number", "succeeded", "next_status", "expected"),
    [
        (1, False, P, None),
        (3, False, P, None),
        (4, False, P, "message.attempt.failing"),  # the 4th failure, a retry to come
        (5, False, P, None),  # failing is said once per run of attempts
        (4, False, F, "message.attempt.exhausted"),  # the 4th was the last: exhausted says it
        (6, False, F, "message.attempt.exhausted"),
        (1, False, F, "message.attempt.exhausted"),  # 410 Gone, or no retries configured
        (0, False, F, "message.attempt.exhausted"),  # attempt number unknown
        (0, False, P, None),
        (1, True, S, None),
        (4, True, S, None),  # three failures before: no failing event was sent
        (5, True, S, "message.attempt.recovered"),
        (9, True, S, "message.attempt.recovered"),
    ],
)
def test_which_attempt_announces_what(
    number: int, succeeded: bool, next_status: MessageStatus, expected: str | None
) -> None:
    assert (
        operational.attempt_event_type(done(number, next_status, succeeded=succeeded)) == expected
    )


def test_only_disabling_is_announced_of_the_health_changes() -> None:
    def event(change: HealthChange) -> HealthEvent:
        return HealthEvent(endpoint_id="ep_1", change=change, at=NOW, failures=3)

    assert operational.is_disable(event(HealthChange.DISABLED))
    assert not operational.is_disable(event(HealthChange.CIRCUIT_OPENED))
    assert not operational.is_disable(event(HealthChange.CIRCUIT_CLOSED))


# configure -----------------------------------------------------------------------------------


async def test_nothing_is_set_up_without_a_url() -> None:
    store = MemoryStore()
    assert (
        await operational.OperationalWebhooks.configure(store, Settings(), CountingWakeup()) is None
    )
    assert await store.count_tokens() == 0


async def test_configure_is_idempotent_and_hides_the_app_in_its_own_org() -> None:
    store = MemoryStore()
    first = await operational.OperationalWebhooks.configure(store, settings(), CountingWakeup())
    again = await operational.OperationalWebhooks.configure(store, settings(), CountingWakeup())
    assert first is not None and again is not None
    assert (again.app_id, again.endpoint_id) == (first.app_id, first.endpoint_id)
    org = await store.ensure_org(operational.ORG_NAME, NOW)
    assert await store.get_app(org.id, "operational") is not None
    default = await store.ensure_org("default", NOW)
    assert await store.get_app(default.id, first.app_id) is None  # not a tenant's app
    ep = await store.get_endpoint(first.app_id, "operator")
    assert ep is not None
    assert ep.url == OPS_URL
    assert [k.secret for k in ep.keys] == [SECRET]


async def test_changed_settings_update_the_operator_endpoint_and_enable_it_again() -> None:
    store = MemoryStore()
    ops = await operational.OperationalWebhooks.configure(store, settings(), CountingWakeup())
    assert ops is not None
    ep = await store.get_endpoint(ops.app_id, ops.endpoint_id)
    assert ep is not None
    await store.update_endpoint(replace(ep, disabled=True))  # auto-disabled while failing
    bare = OTHER_SECRET.removeprefix("whsec_")  # the prefix is optional, as for endpoints
    again = await operational.OperationalWebhooks.configure(
        store, settings("https://ops2.example.com/in", bare), CountingWakeup()
    )
    assert again is not None and again.endpoint_id == ops.endpoint_id
    ep = await store.get_endpoint(ops.app_id, ops.endpoint_id)
    assert ep is not None
    assert ep.url == "https://ops2.example.com/in"
    assert [k.secret for k in ep.keys] == [OTHER_SECRET]
    assert not ep.disabled


class RacingStore(MemoryStore):
    """Another process creates the rows between this one's read and its insert."""

    def __init__(self) -> None:
        super().__init__()
        self.raced: list[str] = []

    async def create_app(self, app: Application) -> None:
        await super().create_app(replace(app, id=ids.new(ids.APP)))  # theirs
        self.raced.append("app")
        await super().create_app(app)  # ours: Conflict on the uid

    async def create_endpoint(self, endpoint: Endpoint) -> None:
        await super().create_endpoint(replace(endpoint, id=ids.new(ids.ENDPOINT), url="x:"))
        self.raced.append("endpoint")
        await super().create_endpoint(endpoint)


async def test_configure_reads_back_rows_another_process_created_meanwhile() -> None:
    store = RacingStore()
    ops = await operational.OperationalWebhooks.configure(store, settings(), CountingWakeup())
    assert store.raced == ["app", "endpoint"]
    assert ops is not None
    ep = await store.get_endpoint(ops.app_id, "operator")
    assert ep is not None and ep.id == ops.endpoint_id
    assert ep.url == OPS_URL  # theirs, brought up to date with these settings


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        (OPS_URL, "whsec_short", "HOOKLINE_OPERATIONAL_WEBHOOK_SECRET"),
        (OPS_URL, None, "HOOKLINE_OPERATIONAL_WEBHOOK_SECRET"),
        ("ops.example.com/hook", SECRET, "HOOKLINE_OPERATIONAL_WEBHOOK_URL"),
        ("http://127.0.0.1:9000/ops", SECRET, "HOOKLINE_ALLOWED_SUBNETS"),
    ],
)
async def test_unusable_settings_stop_the_start_with_the_settings_name(
    url: str, secret: str | None, says: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        await operational.OperationalWebhooks.configure(
            MemoryStore(), settings(url, secret), CountingWakeup()
        )
    assert says in str(exc.value)
    assert "whsec_short" not in str(exc.value)  # a secret is never echoed


async def test_a_loopback_url_is_fine_once_allowed() -> None:
    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    ops = await operational.OperationalWebhooks.configure(
        MemoryStore(),
        settings("http://127.0.0.1:9000/ops", allowed_subnets=allowed),
        CountingWakeup(),
    )
    assert ops is not None


# emitting ------------------------------------------------------------------------------------


class World:
    """A customer app with one endpoint and one message, and the operational webhooks."""

    def __init__(
        self, store: MemoryStore, ops: operational.OperationalWebhooks, wakeup: CountingWakeup
    ) -> None:
        self.store, self.ops, self.wakeup = store, ops, wakeup
        self.app = app_()
        self.endpoint = endpoint_(self.app.id)
        self.message = Message(
            id=ids.new(ids.MESSAGE),
            app_id=self.app.id,
            event_type="invoice.paid",
            payload=b"{}",
            event_id="inv-42",
            created_at=NOW,
        )

    def attempt(self, **kw: Any) -> Attempt:
        return attempt_(self.app.id, self.endpoint.id, self.message.id, **kw)

    async def messages(self) -> list[Message]:
        """The operational messages written so far, oldest first."""
        return await self.store.list_messages(self.ops.app_id, MessageFilter(), Page())

    async def sent(self) -> list[dict[str, Any]]:
        """The operational events written so far (payloads), oldest first."""
        page = await self.messages()
        for m in page:
            body = json.loads(m.payload)
            assert m.event_type == body["type"]
        return [json.loads(m.payload) for m in page]


@pytest.fixture
async def world() -> World:
    store = MemoryStore()
    wakeup = CountingWakeup()
    ops = await operational.OperationalWebhooks.configure(store, settings(), wakeup)
    assert ops is not None
    w = World(store, ops, wakeup)
    await store.create_app(w.app)
    await store.create_endpoint(w.endpoint)
    await store.create_message(w.message)
    return w


async def test_an_endpoint_change_is_written_for_the_operator_and_wakes_the_worker(
    world: World,
) -> None:
    await world.ops.endpoint_changed("updated", world.app, world.endpoint)
    assert await world.sent() == [
        {
            "type": "endpoint.updated",
            "data": {
                "appId": world.app.id,
                "appUid": "billing",
                "endpointId": world.endpoint.id,
                "endpointUid": "primary",
            },
        }
    ]
    assert world.wakeup.notified == 1
    # a delivery task to the operator endpoint exists: the worker will send and retry it
    [message] = await world.messages()
    deliveries = await world.store.list_deliveries(world.ops.app_id, message.id, Page())
    assert [ep.id for ep, _ in deliveries] == [world.ops.endpoint_id]


async def test_attempt_events_look_up_the_app_uid_and_the_event_id(world: World) -> None:
    fourth = done(4, P, attempt=world.attempt(code=502))
    await world.ops.after_outcomes([fourth], [])
    [event] = await world.sent()
    assert event["type"] == "message.attempt.failing"
    assert event["data"]["appUid"] == "billing"
    assert event["data"]["msgEventId"] == "inv-42"
    assert event["data"]["lastAttempt"]["id"] == fourth.attempt.id
    assert event["data"]["lastAttempt"]["responseStatusCode"] == 502


async def test_a_disabled_endpoint_is_announced_with_its_uid_and_fail_since(world: World) -> None:
    last = done(2, P, attempt=world.attempt(at=NOW + 5))
    disabled = HealthEvent(
        endpoint_id=world.endpoint.id,
        change=HealthChange.DISABLED,
        at=NOW + 5,
        failures=7,
        failing_since=NOW,
    )
    opened = replace(disabled, change=HealthChange.CIRCUIT_OPENED)
    await world.ops.after_outcomes([last], [opened, disabled])
    assert await world.sent() == [
        {
            "type": "endpoint.disabled",
            "data": {
                "appId": world.app.id,
                "appUid": "billing",
                "endpointId": world.endpoint.id,
                "endpointUid": "primary",
                "failSince": "2027-01-15T08:00:00.000Z",
            },
        }
    ]


async def test_an_ordinary_batch_writes_nothing_and_wakes_nobody(world: World) -> None:
    batch = [
        done(1, S, succeeded=True, attempt=world.attempt()),
        done(2, P, attempt=world.attempt()),
    ]
    await world.ops.after_outcomes(batch, [])
    assert await world.sent() == []
    assert world.wakeup.notified == 0


async def test_the_operational_app_never_reports_about_itself(world: World) -> None:
    own = attempt_(world.ops.app_id, world.ops.endpoint_id, "msg_op")
    own_disabled = HealthEvent(
        endpoint_id=world.ops.endpoint_id, change=HealthChange.DISABLED, at=NOW, failures=9
    )
    await world.ops.after_outcomes(
        [done(4, P, attempt=own), done(6, F, attempt=own)], [own_disabled]
    )
    ops_app = Application(
        id=world.ops.app_id, org_id="org_ops", name="ops", created_at=NOW, updated_at=NOW
    )
    await world.ops.endpoint_changed("updated", ops_app, endpoint_(world.ops.app_id))
    assert await world.sent() == []
    assert world.wakeup.notified == 0


async def test_a_store_failure_is_logged_not_raised(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(message: Message, idempotency: object = None) -> int:
        raise errors.Unavailable("disk full")

    monkeypatch.setattr(world.store, "create_message", unavailable)
    await world.ops.endpoint_changed("created", world.app, world.endpoint)
    await world.ops.after_outcomes([done(6, F, attempt=world.attempt())], [])
    assert world.wakeup.notified == 0


async def test_events_while_the_operator_endpoint_is_disabled_are_kept_but_not_queued(
    world: World,
) -> None:
    ep = await world.store.get_endpoint(world.ops.app_id, world.ops.endpoint_id)
    assert ep is not None
    await world.store.update_endpoint(replace(ep, disabled=True))
    await world.ops.after_outcomes([done(6, F, attempt=world.attempt())], [])
    [event] = await world.sent()
    assert event["type"] == "message.attempt.exhausted"
    [message] = await world.messages()
    assert await world.store.list_deliveries(world.ops.app_id, message.id, Page()) == []
