"""Payload retention through the API: payloadRetentionPeriod, expired messages, refused resends.

Payloads are expired by calling the store's ``expire_payloads`` with a clock past their time,
as the cleaner would once that time has come; nothing here waits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline import app, ids, settings
from hookline.app import Hookline
from hookline.models import Attempt, ClaimPolicy, Completion, MessageStatus, Trigger

from .conftest import ADMIN_TOKEN, assert_error, assert_invalid, create_app, create_endpoint

DAY = 86400.0
EXPIRED = {"expired": True}  # what Svix's server shows for a payload that expired


async def expire_all(hl: Hookline, days_ahead: float = 100) -> int:
    """Run the cleaner's store call as if ``days_ahead`` days had passed; payloads expired."""
    batch = await hl.store.expire_payloads(time.time() + days_ahead * DAY, 90 * DAY, 1000)
    return batch.expired


async def post(client: httpx.AsyncClient, app_id: str, **fields: Any) -> httpx.Response:
    body = {"eventType": "card.charged", "payload": {"card": "4242"}, **fields}
    return await client.post(f"/api/v1/app/{app_id}/msg", json=body)


# payloadRetentionPeriod --------------------------------------------------------------------------


@pytest.mark.parametrize("days", [4, 91, 0, -1, 1.5, "30", True])
async def test_a_retention_period_outside_svix_bounds_is_422_naming_it(
    client: httpx.AsyncClient, days: object
) -> None:
    a = await create_app(client)
    assert_invalid(
        await post(client, a["id"], payloadRetentionPeriod=days), ["body", "payloadRetentionPeriod"]
    )
    listed = await client.get(f"/api/v1/app/{a['id']}/msg")
    assert listed.json()["data"] == []  # nothing was written


@pytest.mark.parametrize("days", [5, 30, 90])
async def test_the_message_expires_its_own_period_after_creation(
    client: httpx.AsyncClient, hl: Hookline, days: int
) -> None:
    a = await create_app(client)
    before = time.time()
    resp = await post(client, a["id"], payloadRetentionPeriod=days)
    assert resp.status_code == 202, resp.text
    stored = await hl.store.get_message(a["id"], resp.json()["id"])
    assert stored is not None and stored.expires_at is not None
    assert stored.expires_at - stored.created_at == pytest.approx(days * DAY)
    assert before <= stored.created_at <= time.time()


async def test_without_a_period_the_setting_decides_in_fractions_of_a_day(
    tmp_path: Path,
) -> None:
    s = settings.Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        admin_token=ADMIN_TOKEN,
        payload_retention_days=0.25,
    )
    async with app.opened(s) as hl:
        await app.seed_admin_token(hl)
        transport = httpx.ASGITransport(app=app.asgi(hl))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as c:
            a = await create_app(c)
            for fields in ({}, {"payloadRetentionPeriod": None}):
                resp = await post(c, a["id"], **fields)
                stored = await hl.store.get_message(a["id"], resp.json()["id"])
                assert stored is not None and stored.expires_at is not None
                assert stored.expires_at - stored.created_at == pytest.approx(0.25 * DAY)


# an expired message ------------------------------------------------------------------------------


async def test_an_expired_message_reads_as_svix_shows_it_in_get_and_list(
    client: httpx.AsyncClient, hl: Hookline
) -> None:
    a = await create_app(client)
    short = (await post(client, a["id"], payloadRetentionPeriod=5, eventId="short")).json()
    long = (await post(client, a["id"], payloadRetentionPeriod=90)).json()
    assert await expire_all(hl, days_ahead=6) == 1  # 5 days passed for one, not for the other

    got = await client.get(f"/api/v1/app/{a['id']}/msg/{short['id']}")
    assert got.status_code == 200
    assert got.json() == {**short, "payload": EXPIRED}  # all else as it was
    by_event_id = await client.get(f"/api/v1/app/{a['id']}/msg/short")
    assert by_event_id.json()["payload"] == EXPIRED
    listed = (await client.get(f"/api/v1/app/{a['id']}/msg")).json()["data"]
    assert [(m["id"], m["payload"]) for m in listed] == [
        (long["id"], {"card": "4242"}),
        (short["id"], EXPIRED),
    ]
    without = await client.get(f"/api/v1/app/{a['id']}/msg", params={"with_content": "false"})
    assert [m["payload"] for m in without.json()["data"]] == [{}, {}]


async def test_an_expired_message_cannot_be_resent(client: httpx.AsyncClient, hl: Hookline) -> None:
    a = await create_app(client)
    msg = (await post(client, a["id"])).json()  # no endpoint yet: no delivery holds it back
    assert await expire_all(hl) == 1
    ep = await create_endpoint(client, a["id"])

    resp = await client.post(f"/api/v1/app/{a['id']}/msg/{msg['id']}/endpoint/{ep['id']}/resend")

    body = assert_error(resp, 400, "missing_payload")
    assert "expired" in body["detail"]
    destinations = await client.get(f"/api/v1/app/{a['id']}/msg/{msg['id']}/endpoint")
    assert destinations.json()["data"] == []  # no delivery was queued
    assert await hl.store.claim_due(time.time(), ClaimPolicy(limit=10), 30) == []


async def test_a_live_message_is_still_resent(client: httpx.AsyncClient, hl: Hookline) -> None:
    a = await create_app(client)
    msg = (await post(client, a["id"])).json()
    ep = await create_endpoint(client, a["id"])
    resp = await client.post(f"/api/v1/app/{a['id']}/msg/{msg['id']}/endpoint/{ep['id']}/resend")
    assert resp.status_code == 202, resp.text


async def test_an_expired_messages_attempts_keep_everything_but_the_response_body(
    client: httpx.AsyncClient, hl: Hookline
) -> None:
    a = await create_app(client)
    ep = await create_endpoint(client, a["id"])
    msg = (await post(client, a["id"])).json()
    now = time.time()
    [claim] = await hl.store.claim_due(now, ClaimPolicy(limit=10), 30)
    attempt = Attempt(
        id=ids.new(ids.ATTEMPT),
        msg_id=msg["id"],
        endpoint_id=ep["id"],
        app_id=a["id"],
        url=ep["url"],
        status=MessageStatus.SUCCESS,
        response_status_code=200,
        response='{"secret":"the receiver echoed the card"}',
        duration_ms=7,
        trigger=Trigger.SCHEDULED,
        created_at=now,
    )
    done = Completion(
        attempt=attempt, lease=claim.lease, next_status=MessageStatus.SUCCESS, next_attempt_at=None
    )
    await hl.store.complete([done], now)
    before = (await client.get(f"/api/v1/app/{a['id']}/attempt/msg/{msg['id']}")).json()["data"]
    assert await expire_all(hl) == 1

    paths = [
        f"/api/v1/app/{a['id']}/attempt/msg/{msg['id']}",
        f"/api/v1/app/{a['id']}/attempt/endpoint/{ep['id']}",
    ]
    for path in paths:
        [after] = (await client.get(path)).json()["data"]
        assert after == {**before[0], "response": "EXPUNGED"}
    one = await client.get(f"/api/v1/app/{a['id']}/msg/{msg['id']}/attempt/{attempt.id}")
    assert one.json()["response"] == "EXPUNGED"
    assert one.json()["responseStatusCode"] == 200


async def test_a_message_whose_delivery_is_pending_keeps_its_payload_past_its_time(
    client: httpx.AsyncClient, hl: Hookline
) -> None:
    a = await create_app(client)
    await create_endpoint(client, a["id"])
    msg = (await post(client, a["id"], payloadRetentionPeriod=5)).json()
    assert await expire_all(hl) == 0  # nobody has delivered it yet (no worker runs here)
    got = await client.get(f"/api/v1/app/{a['id']}/msg/{msg['id']}")
    assert got.json()["payload"] == {"card": "4242"}
