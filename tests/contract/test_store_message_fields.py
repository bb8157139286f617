"""Svix's ``deliverAt`` and ``tags`` on messages: scheduling, storage and the list filter."""

from __future__ import annotations

import time

import msgspec

from hookline.models import Application, ClaimPolicy, Message, Page
from hookline.store.base import MessageFilter, Store

from .conftest import LEASE, add_endpoint, make_message


async def test_deliver_at_in_the_future_holds_the_first_attempt_until_then(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    message = msgspec.structs.replace(make_message(app.id, created_at=now), deliver_at=now + 60)
    assert await store.create_message(message) == 1

    assert await store.next_due_at() == now + 60  # an idle worker sleeps until then
    assert await store.count_due(now + 59, 10) == 0
    assert await store.claim_due(now + 59, ClaimPolicy(limit=10), LEASE) == []
    claims = await store.claim_due(now + 60, ClaimPolicy(limit=10), LEASE)
    assert [c.message.id for c in claims] == [message.id]
    assert claims[0].message.deliver_at == now + 60


async def test_deliver_at_in_the_past_means_now(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    message = msgspec.structs.replace(make_message(app.id, created_at=now), deliver_at=now - 600)
    await store.create_message(message)

    assert await store.next_due_at() == now  # never due before the message existed
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert [c.message.id for c in claims] == [message.id]


async def test_tags_and_deliver_at_read_back_as_stored(store: Store, app: Application) -> None:
    now = time.time()
    message = msgspec.structs.replace(
        make_message(app.id, created_at=now), tags=("billing", "eu/west#1"), deliver_at=now + 5
    )
    await store.create_message(message)
    assert await store.get_message(app.id, message.id) == message
    listed = await store.list_messages(app.id, MessageFilter(), Page())
    assert listed == [message]


async def test_message_list_filters_on_one_tag(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    both = msgspec.structs.replace(make_message(app.id, created_at=now), tags=("a", "b"))
    only_b = msgspec.structs.replace(make_message(app.id, created_at=now), tags=("b",))
    untagged = make_message(app.id, created_at=now)
    elsewhere = msgspec.structs.replace(make_message(other_app.id, created_at=now), tags=("a",))
    for m in (both, only_b, untagged, elsewhere):
        await store.create_message(m)

    def ids(msgs: list[Message]) -> set[str]:
        return {m.id for m in msgs}

    assert ids(await store.list_messages(app.id, MessageFilter(tag="a"), Page())) == {both.id}
    assert ids(await store.list_messages(app.id, MessageFilter(tag="b"), Page())) == {
        both.id,
        only_b.id,
    }
    assert await store.list_messages(app.id, MessageFilter(tag="c"), Page()) == []
    combined = MessageFilter(tag="b", event_types=("nope",))
    assert await store.list_messages(app.id, combined, Page()) == []
