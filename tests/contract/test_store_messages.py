"""Messages: event_id uniqueness, fan-out routing, lookups, filters and delivery listings."""

from __future__ import annotations

import time

import pytest

from hookline import errors
from hookline.models import Application, ClaimPolicy, MessageStatus, Page, StoredResponse, Trigger
from hookline.store.base import IdempotentWrite, MessageFilter, Store

from .conftest import LEASE, add_endpoint, add_message, completion_for, make_message


async def test_message_is_found_by_id_and_event_id_within_its_app(
    store: Store, app: Application, other_app: Application
) -> None:
    message = await add_message(store, app.id, event_id="evt-1")
    assert await store.get_message(app.id, message.id) == message
    assert await store.get_message(app.id, "evt-1") == message
    assert await store.get_message(other_app.id, message.id) is None
    assert await store.get_message(other_app.id, "evt-1") is None
    assert await store.get_message(app.id, "evt-2") is None


async def test_message_payload_and_channels_round_trip(store: Store, app: Application) -> None:
    payload = b'{"name":"J\xc3\xbcrgen","n":1.50,"nested":{"z":1,"a":2}}'
    message = make_message(app.id, payload=payload, channels=("eu", "vip"))
    await store.create_message(message)
    found = await store.get_message(app.id, message.id)
    assert found is not None
    assert found.payload == payload  # byte for byte: signatures are computed over it
    assert found.channels == ("eu", "vip")


async def test_duplicate_event_id_conflicts_and_writes_nothing(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    first = await add_message(store, app.id, event_id="evt-1", created_at=now)
    duplicate = make_message(app.id, event_id="evt-1", created_at=now)
    write = IdempotentWrite(
        key="idem-dup", response=StoredResponse(status=202, body=b"{}"), expires_at=now + 3600
    )

    with pytest.raises(errors.Conflict):
        await store.create_message(duplicate, write)

    assert await store.get_message(app.id, duplicate.id) is None
    assert await store.get_message(app.id, "evt-1") == first
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert [c.message.id for c in claims] == [first.id]  # no task for the duplicate
    # The idempotency key was not consumed by the failed write.
    state = await store.idempotency_begin("idem-dup", "fp", now, 30)
    assert state.state == "owner"


async def test_message_for_a_deleted_app_is_not_found_and_writes_nothing(
    store: Store, app: Application
) -> None:
    # An API process may still hold the app in its short-lived cache after another deleted it.
    now = time.time()
    write = IdempotentWrite(
        key="idem-gone", response=StoredResponse(status=202, body=b"{}"), expires_at=now + 3600
    )
    assert await store.delete_app(app.org_id, app.id)

    with pytest.raises(errors.NotFound):
        await store.create_message(make_message(app.id, created_at=now), write)

    assert await store.claim_due(now, ClaimPolicy(limit=10), LEASE) == []
    assert (await store.idempotency_begin("idem-gone", "fp", now, 30)).state == "owner"


async def test_event_id_may_repeat_across_apps_and_be_absent(
    store: Store, app: Application, other_app: Application
) -> None:
    await add_message(store, app.id, event_id="evt-1")
    theirs = await add_message(store, other_app.id, event_id="evt-1")
    assert await store.get_message(other_app.id, "evt-1") == theirs
    await add_message(store, app.id)
    await add_message(store, app.id)
    assert len(await store.list_messages(app.id, MessageFilter(), Page())) == 3


async def test_create_message_fans_out_to_every_accepting_endpoint(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    everything = await add_endpoint(store, app.id)
    invoices = await add_endpoint(store, app.id, event_types=("invoice.paid", "invoice.void"))
    users = await add_endpoint(store, app.id, event_types=("user.created",))
    await add_endpoint(store, app.id, disabled=True)
    await add_endpoint(store, other_app.id)  # never sees this app's messages

    message = make_message(app.id, event_type="invoice.paid", created_at=now)
    assert await store.create_message(message) == 2

    deliveries = await store.list_deliveries(app.id, message.id, Page())
    assert sorted(e.id for e, _ in deliveries) == sorted([everything.id, invoices.id])
    for _, delivery in deliveries:
        assert delivery.msg_id == message.id
        assert delivery.app_id == app.id
        assert delivery.status == MessageStatus.PENDING
        assert delivery.attempts == 0
        assert delivery.next_attempt_at == now

    user_msg = make_message(app.id, event_type="user.created", created_at=now)
    assert await store.create_message(user_msg) == 2
    routed = await store.list_deliveries(app.id, user_msg.id, Page())
    assert sorted(e.id for e, _ in routed) == sorted([everything.id, users.id])


async def test_channel_filtered_endpoints_get_only_matching_channels(
    store: Store, app: Application
) -> None:
    any_channel = await add_endpoint(store, app.id)
    europe = await add_endpoint(store, app.id, channels=("eu", "uk"))

    async def routed_to(channels: tuple[str, ...] | None) -> set[str]:
        message = make_message(app.id, channels=channels)
        count = await store.create_message(message)
        endpoints = {e.id for e, _ in await store.list_deliveries(app.id, message.id, Page())}
        assert count == len(endpoints)
        return endpoints

    assert await routed_to(("uk",)) == {any_channel.id, europe.id}
    assert await routed_to(("us", "eu")) == {any_channel.id, europe.id}
    assert await routed_to(("us",)) == {any_channel.id}
    assert await routed_to(None) == {any_channel.id}


async def test_event_type_and_channel_filters_both_apply(store: Store, app: Application) -> None:
    narrow = await add_endpoint(store, app.id, event_types=("invoice.paid",), channels=("eu",))
    assert await store.create_message(make_message(app.id, channels=("eu",))) == 1
    assert await store.create_message(make_message(app.id, event_type="x.y", channels=("eu",))) == 0
    assert await store.create_message(make_message(app.id, channels=("us",))) == 0
    assert (await store.endpoint_stats(app.id, narrow.id, None, None)).pending == 1


async def test_message_without_endpoints_is_still_stored(store: Store, app: Application) -> None:
    message = make_message(app.id)
    assert await store.create_message(message) == 0
    assert await store.get_message(app.id, message.id) == message
    assert await store.next_due_at() is None


async def test_create_message_records_the_idempotent_answer(store: Store, app: Application) -> None:
    now = time.time()
    assert (await store.idempotency_begin("idem-1", "fp-1", now, 30)).state == "owner"
    response = StoredResponse(status=202, body=b'{"id":"msg_x"}')
    write = IdempotentWrite(key="idem-1", response=response, expires_at=now + 3600)
    await store.create_message(make_message(app.id), write)

    replay = await store.idempotency_begin("idem-1", "fp-1", now + 1, 30)
    assert replay.state == "done"
    assert replay.response == response


async def test_list_messages_filters(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    old = await add_message(store, app.id, event_type="a.old", created_at=now - 100)
    eu = await add_message(store, app.id, event_type="b.eu", channels=("eu",), created_at=now - 50)
    both = await add_message(
        store, app.id, event_type="c.both", channels=("eu", "us"), created_at=now
    )
    await add_message(store, other_app.id, event_type="b.eu", channels=("eu",), created_at=now)

    async def listed(flt: MessageFilter) -> set[str]:
        return {m.id for m in await store.list_messages(app.id, flt, Page())}

    assert await listed(MessageFilter()) == {old.id, eu.id, both.id}
    assert await listed(MessageFilter(channel="eu")) == {eu.id, both.id}
    assert await listed(MessageFilter(channel="us")) == {both.id}
    assert await listed(MessageFilter(channel="apac")) == set()
    assert await listed(MessageFilter(event_types=("a.old", "c.both"))) == {old.id, both.id}
    assert await listed(MessageFilter(before=now - 50)) == {old.id}  # strictly before
    assert await listed(MessageFilter(after=now - 50)) == {both.id}  # strictly after
    assert await listed(MessageFilter(after=now - 101, before=now)) == {old.id, eu.id}
    assert await listed(MessageFilter(channel="eu", event_types=("b.eu",))) == {eu.id}


async def test_list_messages_pages_by_id(store: Store, app: Application) -> None:
    ordered = sorted([(await add_message(store, app.id)).id for _ in range(5)])

    async def listed(page: Page) -> list[str]:
        return [m.id for m in await store.list_messages(app.id, MessageFilter(), page)]

    assert await listed(Page(limit=3)) == ordered[:3]
    assert await listed(Page(limit=3, after=ordered[2])) == ordered[3:]
    assert await listed(Page(descending=True, limit=2)) == [ordered[4], ordered[3]]
    assert await listed(Page(descending=True, after=ordered[1])) == [ordered[0]]
    assert await listed(Page(descending=True, after=ordered[0])) == []


async def test_list_deliveries_pages_by_endpoint_and_skips_deleted(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    endpoints = sorted([(await add_endpoint(store, app.id)).id for _ in range(4)])
    message = await add_message(store, app.id, created_at=now)
    assert await store.delete_endpoint(app.id, endpoints[1]) is True
    alive = [endpoints[0], endpoints[2], endpoints[3]]

    async def listed(page: Page) -> list[str]:
        return [e.id for e, _ in await store.list_deliveries(app.id, message.id, page)]

    assert await listed(Page()) == alive
    assert await listed(Page(limit=2)) == alive[:2]
    assert await listed(Page(after=endpoints[0])) == alive[1:]
    assert await listed(Page(descending=True)) == alive[::-1]
    assert await listed(Page(descending=True, after=endpoints[2])) == [endpoints[0]]
    # Another app cannot see this message's deliveries.
    assert await store.list_deliveries(other_app.id, message.id, Page()) == []


async def test_list_deliveries_shows_progress(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    [(_, sending)] = await store.list_deliveries(app.id, message.id, Page())
    assert sending.status == MessageStatus.SENDING
    assert sending.next_attempt_at is None  # only a pending task shows a next attempt
    assert claim.trigger == Trigger.SCHEDULED

    await store.complete(
        [
            completion_for(
                claim, next_status=MessageStatus.PENDING, code=500, next_attempt_at=now + 30
            )
        ],
        now + 1,
    )
    [(listed_endpoint, retrying)] = await store.list_deliveries(app.id, message.id, Page())
    assert listed_endpoint == endpoint
    assert retrying.status == MessageStatus.PENDING
    assert retrying.attempts == 1
    assert retrying.next_attempt_at == now + 30
    assert retrying.updated_at == now + 1
