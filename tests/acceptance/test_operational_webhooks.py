"""Operational webhooks from a real ``hookline serve``: what an operator's receiver gets.

The operator's URL is a path on the scripted receiver; customer endpoints are other paths on it.
Every operational request is checked the way an operator checks it: the Standard Webhooks
signature with the ``standardwebhooks`` library, then the JSON against Svix's schema.
The circuit breaker is set out of reach (``CIRCUIT_FAILURES``) so that it never holds back the
retries these tests count.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support import wait
from tests.support.receiver import Receiver, Recorded
from tests.support.server import HooklineServer

EVENT_TIMEOUT_SECONDS = 10.0
QUICK_RETRIES = ",".join(["0.1"] * 5)  # six attempts in about half a second


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class Operator:
    """The operator's side: a receiver path, the secret, and the events that arrived there."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.path = receiver.new_path("operator")
        self.secret = _secret()

    def env(self, **more: str) -> dict[str, str]:
        return {
            "HOOKLINE_OPERATIONAL_WEBHOOK_URL": self.receiver.url(self.path),
            "HOOKLINE_OPERATIONAL_WEBHOOK_SECRET": self.secret,
            "HOOKLINE_CIRCUIT_FAILURES": "1000",
            **more,
        }

    def verified(self, request: Recorded) -> dict[str, Any]:
        """The event of one request, after its signature verified (raises otherwise)."""
        event = Webhook(self.secret).verify(request.body, request.headers)
        assert isinstance(event, dict)
        assert request.headers["content-type"] == "application/json"
        return event

    def events(self) -> list[dict[str, Any]]:
        """Every verified event so far, in arrival order (a retried delivery counts again)."""
        return [self.verified(r) for r in self.receiver.requests(self.path)]

    def wait_for(self, event_type: str, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``count`` different messages of ``event_type`` arrived; return them."""

        def of_type() -> list[tuple[str, dict[str, Any]]]:
            seen: dict[str, dict[str, Any]] = {}
            for r in self.receiver.requests(self.path):
                event = self.verified(r)
                if event["type"] == event_type:
                    seen.setdefault(r.headers["webhook-id"], event)
            return list(seen.items())

        found = wait.until(
            of_type,
            lambda got: len(got) >= count,
            what=f"{count} {event_type} event(s) at the operator's receiver",
            timeout=EVENT_TIMEOUT_SECONDS,
        )
        return [event for _, event in found]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]


@pytest.fixture
def operator(receiver: Receiver) -> Operator:
    return Operator(receiver)


@pytest.fixture
def api() -> Iterator[Callable[[HooklineServer], httpx.Client]]:
    clients: list[httpx.Client] = []

    def open_(server: HooklineServer) -> httpx.Client:
        client = httpx.Client(
            base_url=server.base_url + "/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=10.0,
        )
        clients.append(client)
        return client

    yield open_
    for client in clients:
        client.close()


def _app_with_endpoint(
    client: httpx.Client, url: str, *, app_uid: str, endpoint_uid: str
) -> tuple[str, str]:
    app = client.post("/app", json={"name": "Customer", "uid": app_uid})
    assert app.status_code == 201, app.text
    ep = client.post(f"/app/{app.json()['id']}/endpoint", json={"url": url, "uid": endpoint_uid})
    assert ep.status_code == 201, ep.text
    return app.json()["id"], ep.json()["id"]


def _send(client: httpx.Client, app_id: str, event_id: str | None = None) -> str:
    body: dict[str, Any] = {"eventType": "order.created", "payload": {"order": 1}}
    if event_id is not None:
        body["eventId"] = event_id
    msg = client.post(f"/app/{app_id}/msg", json=body)
    assert msg.status_code == 202, msg.text
    msg_id: str = msg.json()["id"]
    return msg_id


def _rfc3339(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_auto_disabled_endpoint_is_reported_signed_to_the_operator(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    operator: Operator,
    api: Callable[[HooklineServer], httpx.Client],
) -> None:
    """The acceptance item: ENDPOINT_DISABLE_AFTER=1 s, a customer endpoint failing for good."""
    server = start_server(
        env=operator.env(
            HOOKLINE_ENDPOINT_DISABLE_AFTER="1",
            HOOKLINE_RETRY_SCHEDULE=",".join(["0.1"] * 30),  # failing for ~3 s unless disabled
        )
    )
    client = api(server)
    broken = receiver.new_path("broken")
    receiver.script(broken, then=500)
    app_id, endpoint_id = _app_with_endpoint(
        client, receiver.url(broken), app_uid="shop", endpoint_uid="orders"
    )
    started = datetime.now(UTC)
    _send(client, app_id)

    [event] = operator.wait_for("endpoint.disabled")
    data = event["data"]
    assert set(data) == {"appId", "appUid", "endpointId", "endpointUid", "failSince"}
    assert (data["appId"], data["appUid"]) == (app_id, "shop")
    assert (data["endpointId"], data["endpointUid"]) == (endpoint_id, "orders")
    # failing since the first attempt, which went out right after the message was sent
    fail_since = _rfc3339(data["failSince"])
    assert started - timedelta(seconds=1) <= fail_since <= started + timedelta(seconds=5)

    ep = client.get(f"/app/{app_id}/endpoint/{endpoint_id}")
    assert ep.status_code == 200, ep.text
    assert ep.json()["disabled"] is True
    # disabled after about a second of failure, not after the whole retry schedule
    assert len(receiver.requests(broken)) < 30
    assert operator.types().count("endpoint.created") >= 1
    assert operator.secret not in server.output()  # the secret is never logged


def test_endpoint_changes_through_the_api_are_reported(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    operator: Operator,
    api: Callable[[HooklineServer], httpx.Client],
) -> None:
    server = start_server(env=operator.env())
    client = api(server)
    app_id, endpoint_id = _app_with_endpoint(
        client, receiver.url(receiver.new_path("hook")), app_uid="crm", endpoint_uid="sync"
    )
    expected = {"appId": app_id, "appUid": "crm", "endpointId": endpoint_id}
    [created] = operator.wait_for("endpoint.created")
    assert created == {"type": "endpoint.created", "data": {**expected, "endpointUid": "sync"}}

    patched = client.patch(f"/app/{app_id}/endpoint/{endpoint_id}", json={"uid": "sync-2"})
    assert patched.status_code == 200, patched.text
    [updated] = operator.wait_for("endpoint.updated")
    assert updated["data"] == {**expected, "endpointUid": "sync-2"}

    put = client.put(
        f"/app/{app_id}/endpoint/{endpoint_id}",
        json={"url": receiver.url(receiver.new_path("moved")), "uid": "sync-3"},
    )
    assert put.status_code == 200, put.text
    assert operator.wait_for("endpoint.updated", 2)[1]["data"]["endpointUid"] == "sync-3"

    deleted = client.delete(f"/app/{app_id}/endpoint/{endpoint_id}")
    assert deleted.status_code == 204, deleted.text
    [gone] = operator.wait_for("endpoint.deleted")
    assert gone["data"] == {**expected, "endpointUid": "sync-3"}
    # the hidden application is nobody's: the tenant's token does not list it
    apps = client.get("/app").json()["data"]
    assert [a["id"] for a in apps] == [app_id]


def test_attempts_failing_then_exhausted_are_reported(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    operator: Operator,
    api: Callable[[HooklineServer], httpx.Client],
) -> None:
    server = start_server(env=operator.env(HOOKLINE_RETRY_SCHEDULE=QUICK_RETRIES))
    client = api(server)
    broken = receiver.new_path("broken")
    receiver.script(broken, then=503)
    app_id, endpoint_id = _app_with_endpoint(
        client, receiver.url(broken), app_uid="billing", endpoint_uid="ledger"
    )
    msg_id = _send(client, app_id, event_id="invoice-77")

    [exhausted] = operator.wait_for("message.attempt.exhausted")
    [failing] = operator.wait_for("message.attempt.failing")
    assert len(receiver.requests(broken)) == 6  # the first attempt and five retries
    attempts = client.get(f"/app/{app_id}/attempt/msg/{msg_id}").json()["data"]
    by_time = sorted(attempts, key=lambda a: a["id"])  # ids sort by creation
    assert len(by_time) == 6
    for event, attempt in ((failing, by_time[3]), (exhausted, by_time[5])):
        data = event["data"]
        assert set(data) == {
            "appId",
            "appUid",
            "msgId",
            "msgEventId",
            "endpointId",
            "lastAttempt",
        }
        assert (data["appId"], data["appUid"], data["endpointId"]) == (
            app_id,
            "billing",
            endpoint_id,
        )
        assert (data["msgId"], data["msgEventId"]) == (msg_id, "invoice-77")
        assert data["lastAttempt"] == {
            "id": attempt["id"],
            "responseStatusCode": 503,
            "timestamp": attempt["timestamp"],
        }
    order = [t for t in operator.types() if t.startswith("message.")]
    assert order == ["message.attempt.failing", "message.attempt.exhausted"]


def test_a_success_after_the_failing_event_is_reported_as_recovered(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    operator: Operator,
    api: Callable[[HooklineServer], httpx.Client],
) -> None:
    server = start_server(env=operator.env(HOOKLINE_RETRY_SCHEDULE=QUICK_RETRIES))
    client = api(server)
    flaky = receiver.new_path("flaky")
    receiver.script(flaky, 500, 500, 500, 500, then=200)  # succeeds on the 5th attempt
    app_id, endpoint_id = _app_with_endpoint(
        client, receiver.url(flaky), app_uid="mail", endpoint_uid="smtp"
    )
    msg_id = _send(client, app_id)

    [recovered] = operator.wait_for("message.attempt.recovered")
    data = recovered["data"]
    assert (data["msgId"], data["msgEventId"], data["endpointId"]) == (msg_id, None, endpoint_id)
    assert data["lastAttempt"]["responseStatusCode"] == 200
    assert len(receiver.requests(flaky)) == 5
    order = [t for t in operator.types() if t.startswith("message.")]
    assert order == ["message.attempt.failing", "message.attempt.recovered"]


def test_a_failing_operator_endpoint_does_not_report_on_itself(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    operator: Operator,
    api: Callable[[HooklineServer], httpx.Client],
) -> None:
    # The operator's receiver fails five times, then accepts: the endpoint.created event is
    # retried into success, and its own 4th failure must not become a message.attempt.failing.
    receiver.script(operator.path, 500, 500, 500, 500, 500, then=200)
    server = start_server(env=operator.env(HOOKLINE_RETRY_SCHEDULE=QUICK_RETRIES))
    client = api(server)
    _app_with_endpoint(
        client, receiver.url(receiver.new_path("hook")), app_uid="app", endpoint_uid="ep"
    )
    requests = receiver.wait_for(operator.path, 6, timeout=EVENT_TIMEOUT_SECONDS)
    assert [r.status for r in requests] == [500] * 5 + [200]
    assert {r.headers["webhook-id"] for r in requests} == {requests[0].headers["webhook-id"]}
    # nothing more: no failing/recovered events about the operator endpoint itself
    receiver.assert_no_more(operator.path, 6, seconds=1.0)
    assert set(operator.types()) == {"endpoint.created"}
