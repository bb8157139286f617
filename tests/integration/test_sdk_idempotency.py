"""Acceptance 5: one idempotency key, one message, however many times and however concurrently."""

from __future__ import annotations

import asyncio
import collections
import json

import httpx
from svix.api import ApplicationOut, EndpointIn, MessageCreateOptions, MessageIn, Svix

from tests.support.receiver import Receiver
from tests.support.sdk import unique
from tests.support.server import HooklineServer

CONCURRENT_REQUESTS = 50
QUIET_SECONDS = 0.5  # a duplicate delivery would be sent at once, not after a retry step


def test_concurrent_posts_with_one_key_get_one_answer_and_make_one_message(
    app: ApplicationOut, server: HooklineServer, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("idempotent")
    svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    url = f"/api/v1/app/{app.id}/msg"
    key = unique("order-42")
    body = {"eventType": "order.placed", "payload": {"order": 42}}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {server.token}", "idempotency-key": key},
            limits=httpx.Limits(max_connections=CONCURRENT_REQUESTS),
            timeout=30.0,
        ) as client:
            return await asyncio.gather(
                *(client.post(url, json=body) for _ in range(CONCURRENT_REQUESTS))
            )

    answers = asyncio.run(burst())

    distinct = collections.Counter((r.status_code, r.content) for r in answers)
    assert len(distinct) == 1, distinct
    first = answers[0]
    assert first.status_code == 202, first.text
    msg_id = first.json()["id"]
    assert [m.id for m in svix.message.list(app.id).data] == [msg_id]
    (delivery,) = receiver.wait_for(path, 1)
    assert delivery.headers["webhook-id"] == msg_id
    assert json.loads(delivery.body) == body["payload"]
    receiver.assert_no_more(path, 1, seconds=QUIET_SECONDS)

    other = {"eventType": "order.placed", "payload": {"order": 43}}
    headers = {"Authorization": f"Bearer {server.token}", "idempotency-key": key}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        mismatch = client.post(url, json=other)
    assert mismatch.status_code == 409, mismatch.text
    assert mismatch.json()["code"] == "idempotency_key_mismatch"
    assert [m.id for m in svix.message.list(app.id).data] == [msg_id]


def test_sdk_create_with_the_same_idempotency_key_returns_the_same_message(
    app: ApplicationOut, svix: Svix
) -> None:
    options = MessageCreateOptions(idempotency_key=unique("sdk-key"))
    message = MessageIn(event_type="order.placed", payload={"order": 7})

    first = svix.message.create(app.id, message, options)
    again = svix.message.create(app.id, message, options)

    assert again.id == first.id
    assert [m.id for m in svix.message.list(app.id).data] == [first.id]
    # without a key of our own the SDK sends a fresh one per call: a second message
    third = svix.message.create(app.id, message)
    assert third.id != first.id
