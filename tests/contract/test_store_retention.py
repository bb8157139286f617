"""Retention: payloads expire and old messages are pruned, in batches, never under a delivery.

Messages here carry ids made at their ``created_at`` (``message_at``), as the API makes them:
pruning walks ids, which sort by creation time.
"""

from __future__ import annotations

import os
import time

import pytest
from msgspec.structs import replace

from hookline import errors, ids
from hookline.models import Application, ClaimPolicy, Endpoint, Message, MessageStatus, Page
from hookline.store.base import (
    EXPIRED_PAYLOAD,
    EXPUNGED_RESPONSE,
    AttemptFilter,
    MessageFilter,
    Store,
)

from .conftest import LEASE, add_endpoint, completion_for

PAYLOAD = b'{"card":"4242"}'
DAY = 86400.0


def message_at(app_id: str, created_at: float, *, expires_at: float | None = None) -> Message:
    """A message as the API would have made it at ``created_at`` (its id from that time)."""
    raw = int(created_at * 1000).to_bytes(6, "big") + os.urandom(10)
    return Message(
        id=f"{ids.MESSAGE}_{ids.base32_of(raw)}",
        app_id=app_id,
        event_type="card.charged",
        payload=PAYLOAD,
        created_at=created_at,
        expires_at=expires_at,
    )


async def add(store: Store, message: Message) -> Message:
    await store.create_message(message)
    return message


async def deliver_all(store: Store, now: float) -> None:
    """Claim every due task and record a successful attempt for each (response body "ok")."""
    claims = await store.claim_due(now, ClaimPolicy(limit=1000), LEASE)
    await store.complete([completion_for(c, created_at=now) for c in claims], now)


async def payload_of(store: Store, m: Message) -> bytes:
    found = await store.get_message(m.app_id, m.id)
    assert found is not None
    return found.payload


async def responses(store: Store, m: Message) -> list[str]:
    found = await store.list_attempts(m.app_id, AttemptFilter(msg_id=m.id), Page())
    return [a.response for a in found]


# payload expiry ----------------------------------------------------------------------------------


async def test_a_due_payload_and_its_response_bodies_are_deleted_the_message_stays(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    due = await add(store, message_at(app.id, now - 10, expires_at=now - 1))
    kept = await add(store, message_at(app.id, now - 9, expires_at=now + 60))
    await deliver_all(store, now - 5)

    batch = await store.expire_payloads(now, 90 * DAY, 100)

    assert (batch.expired, batch.skipped, batch.cursor) == (1, 0, None)
    assert await payload_of(store, due) == EXPIRED_PAYLOAD
    assert await responses(store, due) == [EXPUNGED_RESPONSE]
    assert await payload_of(store, kept) == PAYLOAD
    assert await responses(store, kept) == ["ok"]
    listed = await store.list_messages(app.id, MessageFilter(), Page())
    assert {m.id for m in listed} == {due.id, kept.id}  # listed still, as Svix lists it
    [(_, delivery)] = await store.list_deliveries(app.id, due.id, Page())
    assert delivery.status == MessageStatus.SUCCESS  # its history is kept
    # expiring again finds nothing: the expired one left the work list
    assert (await store.expire_payloads(now, 90 * DAY, 100)).expired == 0


async def test_a_payload_with_a_delivery_pending_or_sending_is_kept_until_it_ends(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    pending = await add(store, message_at(app.id, now - 10, expires_at=now - 1))
    batch = await store.expire_payloads(now, 90 * DAY, 100)
    assert (batch.expired, batch.skipped) == (0, 1)
    assert await payload_of(store, pending) == PAYLOAD

    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)  # now being sent
    assert (await store.expire_payloads(now, 90 * DAY, 100)).skipped == 1
    assert await payload_of(store, pending) == PAYLOAD

    await store.complete([completion_for(claim, created_at=now)], now)
    assert (await store.expire_payloads(now, 90 * DAY, 100)).expired == 1
    assert await payload_of(store, pending) == EXPIRED_PAYLOAD


async def test_a_message_without_an_expiry_gets_one_from_the_setting(
    store: Store, app: Application
) -> None:
    """Rows written before retention was enforced carry no expires_at (migration 0007)."""
    now = time.time()
    old = await add(store, message_at(app.id, now - 3 * DAY))
    young = await add(store, message_at(app.id, now - 1 * DAY))

    batch = await store.expire_payloads(now, 2 * DAY, 100)

    assert batch.expired == 1
    assert await payload_of(store, old) == EXPIRED_PAYLOAD
    assert await payload_of(store, young) == PAYLOAD
    found = await store.get_message(app.id, young.id)
    assert found is not None and found.expires_at == pytest.approx(young.created_at + 2 * DAY)


async def test_expiry_goes_in_batches_of_the_limit_oldest_expiry_first(
    store: Store, app: Application
) -> None:
    now = time.time()
    messages = [
        await add(store, message_at(app.id, now - 100 + i, expires_at=now - 50 + i))
        for i in range(5)
    ]
    first = await store.expire_payloads(now, 90 * DAY, 2)
    assert first.expired == 2
    assert first.cursor == pytest.approx(now - 49)
    assert [await payload_of(store, m) for m in messages[:3]] == [b"", b"", PAYLOAD]
    second = await store.expire_payloads(now, 90 * DAY, 2, after=first.cursor)
    third = await store.expire_payloads(now, 90 * DAY, 2, after=second.cursor)
    assert (second.expired, third.expired, third.cursor) == (2, 1, None)
    assert all([await payload_of(store, m) == EXPIRED_PAYLOAD for m in messages])


async def test_the_cursor_passes_over_kept_payloads_within_a_pass(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    waiting = [
        await add(store, message_at(app.id, now - 100 + i, expires_at=now - 50 + i))
        for i in range(2)
    ]
    finished = await add(store, message_at(app.id, now - 10, expires_at=now - 5))
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    done = [c for c in claims if c.message.id == finished.id]
    await store.complete([completion_for(c, created_at=now) for c in done], now)

    first = await store.expire_payloads(now, 90 * DAY, 2)  # the two still being sent
    assert (first.expired, first.skipped) == (0, 2)
    second = await store.expire_payloads(now, 90 * DAY, 2, after=first.cursor)
    assert (second.expired, second.skipped, second.cursor) == (1, 0, None)
    assert [await payload_of(store, m) for m in waiting] == [PAYLOAD, PAYLOAD]


async def test_an_expired_message_cannot_be_resent_or_recovered(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    msg = await add(store, message_at(app.id, now - 10, expires_at=now - 1))
    claims = await store.claim_due(now - 5, ClaimPolicy(limit=10), LEASE)
    failed = [completion_for(c, next_status=MessageStatus.FAIL, code=500) for c in claims]
    await store.complete(failed, now - 5)
    assert (await store.expire_payloads(now, 90 * DAY, 100)).expired == 1

    with pytest.raises(errors.PayloadMissing):
        await store.requeue(app.id, msg.id, endpoint.id, now)
    assert await store.recover(app.id, endpoint.id, now - 60, None, now) == 0
    [(_, delivery)] = await store.list_deliveries(app.id, msg.id, Page())
    assert delivery.status == MessageStatus.FAIL  # left as it was
    assert await store.claim_due(now, ClaimPolicy(limit=10), LEASE) == []


# pruning ---------------------------------------------------------------------------------------


async def _finished(store: Store, app: Application, endpoint: Endpoint, at: float) -> Message:
    msg = await add(store, message_at(app.id, at))
    [claim] = await store.claim_due(at, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(claim, created_at=at)], at)
    return msg


async def test_prune_deletes_old_messages_with_their_deliveries_and_attempts(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    old = await _finished(store, app, endpoint, now - 3 * DAY)
    young = await _finished(store, app, endpoint, now - 1 * DAY)
    assert await store.count_messages_before(now - 2 * DAY) == 1

    batch = await store.prune_messages(now - 2 * DAY, now, 100)

    assert (batch.deleted, batch.skipped, batch.cursor) == (1, 0, None)
    assert await store.get_message(app.id, old.id) is None
    assert await store.list_deliveries(app.id, old.id, Page()) == []
    by_endpoint = await store.list_attempts(app.id, AttemptFilter(endpoint_id=endpoint.id), Page())
    assert [a.msg_id for a in by_endpoint] == [young.id]  # the old one's attempt went too
    assert await store.get_message(app.id, young.id) is not None
    assert await store.count_messages_before(now - 2 * DAY) == 0


async def test_prune_keeps_messages_whose_deliveries_are_not_finished(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    pending = await add(store, message_at(app.id, now - 3 * DAY))
    batch = await store.prune_messages(now - 2 * DAY, now, 100)
    assert (batch.deleted, batch.skipped) == (0, 1)
    assert await store.get_message(app.id, pending.id) is not None


async def test_prune_with_pending_included_still_spares_a_delivery_being_sent(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    sending = await add(store, message_at(app.id, now - 4 * DAY))
    [claim] = await store.claim_due(now, ClaimPolicy(limit=1), LEASE)
    assert claim.message.id == sending.id
    pending = await add(store, message_at(app.id, now - 3 * DAY))

    batch = await store.prune_messages(now - 2 * DAY, now, 100, include_pending=True)

    assert (batch.deleted, batch.skipped) == (1, 1)
    assert await store.get_message(app.id, pending.id) is None
    assert await store.get_message(app.id, sending.id) is not None
    # once its lease has run out nobody is sending it any more: then it goes too
    later = await store.prune_messages(now - 2 * DAY, now + LEASE + 1, 100, include_pending=True)
    assert later.deleted == 1


async def test_prune_goes_in_batches_oldest_first_across_apps(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    messages = [
        await add(store, message_at((app, other_app)[i % 2].id, now - 10 * DAY + i))
        for i in range(5)
    ]
    first = await store.prune_messages(now - DAY, now, 2)
    assert first.deleted == 2 and first.cursor == messages[1].id
    assert await store.get_message(app.id, messages[0].id) is None
    assert await store.get_message(app.id, messages[2].id) is not None
    second = await store.prune_messages(now - DAY, now, 2, after=first.cursor)
    third = await store.prune_messages(now - DAY, now, 2, after=second.cursor)
    assert (second.deleted, third.deleted, third.cursor) == (2, 1, None)
    assert await store.count_messages_before(now) == 0


async def test_prune_touches_nothing_created_at_or_after_the_cut(
    store: Store, app: Application
) -> None:
    now = time.time()
    at_cut = await add(store, message_at(app.id, now - DAY))
    batch = await store.prune_messages(now - DAY, now, 100)
    assert batch.deleted == 0
    assert await store.get_message(app.id, at_cut.id) is not None
    assert await store.count_messages_before(now - DAY) == 0


async def test_an_expired_message_is_pruned_like_any_other(store: Store, app: Application) -> None:
    now = time.time()
    msg = await add(store, message_at(app.id, now - 10 * DAY, expires_at=now - 5 * DAY))
    assert (await store.expire_payloads(now, 90 * DAY, 10)).expired == 1
    assert (await store.prune_messages(now - DAY, now, 10)).deleted == 1
    assert await store.get_message(app.id, msg.id) is None


async def test_a_message_can_be_written_and_read_with_its_expiry(
    store: Store, app: Application
) -> None:
    now = time.time()
    msg = replace(message_at(app.id, now), expires_at=now + 5 * DAY)
    await store.create_message(msg)
    found = await store.get_message(app.id, msg.id)
    assert found is not None and found.expires_at == pytest.approx(now + 5 * DAY)
    [listed] = await store.list_messages(app.id, MessageFilter(), Page())
    assert listed.expires_at == pytest.approx(now + 5 * DAY)
