"""The delivery queue: claim, lease, complete, fencing, manual resend and recovery."""

from __future__ import annotations

import time

import pytest
from msgspec.structs import replace

from hookline import errors
from hookline.models import Application, ClaimPolicy, MessageStatus, Page, Trigger
from hookline.store.base import AttemptFilter, Store

from .conftest import LEASE, add_endpoint, add_message, completion_for, make_message


async def status_of(store: Store, app_id: str, msg_id: str, endpoint_id: str) -> MessageStatus:
    for endpoint, delivery in await store.list_deliveries(app_id, msg_id, Page()):
        if endpoint.id == endpoint_id:
            return delivery.status
    raise AssertionError(f"no task for {msg_id} -> {endpoint_id}")


# claiming --------------------------------------------------------------------------------------


async def test_claim_hands_out_a_due_task_with_everything_to_send_it(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)

    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)

    assert claim.message == message
    assert claim.endpoint == endpoint
    assert claim.attempts == 0
    assert claim.trigger == Trigger.SCHEDULED
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.SENDING


async def test_a_leased_task_is_not_handed_out_twice(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now)
    assert len(await store.claim_due(now, ClaimPolicy(limit=10), LEASE)) == 1
    assert await store.claim_due(now, ClaimPolicy(limit=10), LEASE) == []
    assert await store.claim_due(now + LEASE - 1, ClaimPolicy(limit=10), LEASE) == []


async def test_tasks_scheduled_later_are_not_due_yet(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now + 10)
    assert await store.claim_due(now, ClaimPolicy(limit=10), LEASE) == []
    assert await store.next_due_at() == now + 10
    assert (
        len(await store.claim_due(now + 10, ClaimPolicy(limit=10), LEASE)) == 1
    )  # due exactly at its time


async def test_claim_respects_limit_and_takes_oldest_first(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    newest = await add_message(store, app.id, created_at=now - 1)
    oldest = await add_message(store, app.id, created_at=now - 30)
    middle = await add_message(store, app.id, created_at=now - 10)

    first = await store.claim_due(now, ClaimPolicy(limit=2), LEASE)
    assert [c.message.id for c in first] == [oldest.id, middle.id]
    rest = await store.claim_due(now, ClaimPolicy(limit=2), LEASE)
    assert [c.message.id for c in rest] == [newest.id]


async def test_expired_lease_is_reclaimed_with_a_new_token(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now)
    [first] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert await store.next_due_at() == now + LEASE

    # The first worker died without completing: after the lease the task is due again.
    [second] = await store.claim_due(now + LEASE, ClaimPolicy(limit=10), LEASE)
    assert second.message == first.message
    assert second.endpoint == first.endpoint
    assert second.lease > first.lease
    assert second.attempts == 0  # a lost send is not counted as an attempt


async def test_due_task_of_a_disabled_endpoint_fails_instead_of_being_sent(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    healthy = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    await store.update_endpoint(replace(endpoint, disabled=True))

    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)

    assert [c.endpoint.id for c in claims] == [healthy.id]
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.FAIL
    stats = await store.endpoint_stats(app.id, endpoint.id, None, None)
    assert (stats.fail, stats.pending, stats.sending) == (1, 0, 0)
    later = await store.claim_due(now + 3600, ClaimPolicy(limit=10), LEASE)
    assert [c.endpoint.id for c in later] == [healthy.id]  # only the expired lease comes back


# completing ------------------------------------------------------------------------------------


async def test_successful_completion_finishes_the_task(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    done = completion_for(claim, created_at=now + 1)

    await store.complete([done], now + 1)

    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.status == MessageStatus.SUCCESS
    assert delivery.attempts == 1
    assert await store.get_attempt(app.id, message.id, done.attempt.id) == done.attempt
    assert await store.claim_due(now + 3600, ClaimPolicy(limit=10), LEASE) == []
    assert await store.next_due_at() is None


async def test_retry_is_scheduled_and_counts_the_attempt(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete(
        [
            completion_for(
                claim, next_status=MessageStatus.PENDING, code=503, next_attempt_at=now + 60
            )
        ],
        now,
    )

    assert await store.next_due_at() == now + 60
    assert await store.claim_due(now + 59, ClaimPolicy(limit=10), LEASE) == []
    [retry] = await store.claim_due(now + 60, ClaimPolicy(limit=10), LEASE)
    assert retry.attempts == 1
    assert retry.trigger == Trigger.SCHEDULED


async def test_final_failure_is_not_retried(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(claim, next_status=MessageStatus.FAIL, code=500)], now)
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.FAIL
    assert await store.claim_due(now + 86400, ClaimPolicy(limit=10), LEASE) == []
    assert await store.next_due_at() is None


async def test_completion_with_a_stale_lease_only_records_the_attempt(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [slow] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    # slow's lease ran out
    [fast] = await store.claim_due(now + LEASE, ClaimPolicy(limit=10), LEASE)

    late = completion_for(
        slow, next_status=MessageStatus.FAIL, code=500, disable_endpoint=True, created_at=now + 31
    )
    await store.complete([late], now + LEASE + 1)

    # The request really went out, so it is in the log, but the task still belongs to `fast`.
    assert await store.get_attempt(app.id, message.id, late.attempt.id) == late.attempt
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.SENDING
    current = await store.get_endpoint(app.id, endpoint.id)
    assert current is not None
    assert not current.disabled

    await store.complete([completion_for(fast)], now + LEASE + 2)
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.SUCCESS
    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.attempts == 1


async def test_completing_twice_applies_once(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    retry = completion_for(
        claim, next_status=MessageStatus.PENDING, code=500, next_attempt_at=now + 5
    )
    await store.complete([retry], now)
    # A duplicate report of the same claim must not bump the count or reschedule.
    await store.complete(
        [completion_for(claim, next_status=MessageStatus.SUCCESS, code=200)], now + 1
    )
    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.status == MessageStatus.PENDING
    assert delivery.attempts == 1
    assert delivery.next_attempt_at == now + 5


async def test_completion_can_disable_the_endpoint(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    queued = await add_message(store, app.id, created_at=now + 1)
    await store.complete(
        [completion_for(claim, next_status=MessageStatus.FAIL, code=410, disable_endpoint=True)],
        now,
    )
    current = await store.get_endpoint(app.id, endpoint.id)
    assert current is not None
    assert current.disabled
    # New messages are no longer routed to it, and what was queued for it fails.
    assert await store.create_message(make_message(app.id)) == 0
    assert await store.claim_due(now + 1, ClaimPolicy(limit=10), LEASE) == []
    assert await status_of(store, app.id, queued.id, endpoint.id) == MessageStatus.FAIL


async def test_completion_for_a_deleted_endpoint_keeps_the_attempt(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.delete_endpoint(app.id, endpoint.id)
    done = completion_for(claim)
    await store.complete([done], now + 1)
    assert await store.get_attempt(app.id, message.id, done.attempt.id) == done.attempt


async def test_complete_applies_a_batch(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    first = await add_message(store, app.id, created_at=now)
    second = await add_message(store, app.id, created_at=now)
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(c) for c in claims], now)
    for message in (first, second):
        [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
        assert delivery.status == MessageStatus.SUCCESS


async def test_next_due_at_is_the_earliest_claimable_moment(store: Store, app: Application) -> None:
    now = time.time()
    assert await store.next_due_at() is None
    await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now + 100)
    await add_message(store, app.id, created_at=now)
    assert await store.next_due_at() == now
    await store.claim_due(
        now, ClaimPolicy(limit=10), LEASE
    )  # leases the first one until now + LEASE
    assert await store.next_due_at() == now + LEASE


# manual resend ---------------------------------------------------------------------------------


async def test_requeue_resends_a_delivered_message(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(claim)], now)

    await store.requeue(app.id, message.id, endpoint.id, now + 100)

    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.status == MessageStatus.PENDING
    assert delivery.attempts == 0
    assert delivery.next_attempt_at == now + 100
    assert await store.claim_due(now + 99, ClaimPolicy(limit=10), LEASE) == []
    [manual] = await store.claim_due(now + 100, ClaimPolicy(limit=10), LEASE)
    assert manual.trigger == Trigger.MANUAL
    assert manual.attempts == 0

    # After a failed manual attempt the retries are ordinary scheduled ones again.
    await store.complete(
        [
            completion_for(
                manual, next_status=MessageStatus.PENDING, code=500, next_attempt_at=now + 110
            )
        ],
        now + 100,
    )
    [retry] = await store.claim_due(now + 110, ClaimPolicy(limit=10), LEASE)
    assert retry.trigger == Trigger.SCHEDULED
    assert retry.attempts == 1


async def test_requeue_fences_off_the_in_flight_send(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [in_flight] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)

    await store.requeue(app.id, message.id, endpoint.id, now + 1)
    await store.complete(
        [completion_for(in_flight, next_status=MessageStatus.FAIL, code=500)], now + 2
    )

    # The old send's failure does not cancel the resend the user asked for.
    assert await status_of(store, app.id, message.id, endpoint.id) == MessageStatus.PENDING
    [resend] = await store.claim_due(now + 2, ClaimPolicy(limit=10), LEASE)
    assert resend.trigger == Trigger.MANUAL
    assert resend.lease != in_flight.lease


async def test_requeue_creates_a_task_for_an_endpoint_added_later(
    store: Store, app: Application
) -> None:
    now = time.time()
    message = await add_message(store, app.id, created_at=now)
    endpoint = await add_endpoint(store, app.id)
    assert await store.list_deliveries(app.id, message.id, Page()) == []

    await store.requeue(app.id, message.id, endpoint.id, now)

    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert (claim.message.id, claim.endpoint.id, claim.trigger) == (
        message.id,
        endpoint.id,
        Trigger.MANUAL,
    )


async def test_requeue_needs_message_and_endpoint_of_the_app(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    their_endpoint = await add_endpoint(store, other_app.id)
    their_message = await add_message(store, other_app.id, created_at=now)

    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, "msg_missing", endpoint.id, now)
    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, message.id, "ep_missing", now)
    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, their_message.id, endpoint.id, now)
    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, message.id, their_endpoint.id, now)
    with pytest.raises(errors.NotFound):
        await store.requeue(other_app.id, message.id, endpoint.id, now)
    assert await store.next_due_at() == now  # only the two original tasks are queued


# recovery --------------------------------------------------------------------------------------


async def fail_everything(store: Store, now: float) -> None:
    claims = await store.claim_due(now, ClaimPolicy(limit=100), LEASE)
    await store.complete(
        [completion_for(c, next_status=MessageStatus.FAIL, code=500) for c in claims], now
    )


async def test_recover_requeues_failed_tasks_in_the_window(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    too_old = await add_message(store, app.id, created_at=now - 300)
    at_since = await add_message(store, app.id, created_at=now - 200)
    inside = await add_message(store, app.id, created_at=now - 150)
    at_until = await add_message(store, app.id, created_at=now - 100)
    await fail_everything(store, now)

    recovered = await store.recover(app.id, endpoint.id, now - 200, now - 100, now + 1)

    assert recovered == 2
    for message, status in [
        (too_old, MessageStatus.FAIL),
        (at_since, MessageStatus.PENDING),
        (inside, MessageStatus.PENDING),
        (at_until, MessageStatus.FAIL),
    ]:
        assert await status_of(store, app.id, message.id, endpoint.id) == status
    claims = await store.claim_due(now + 1, ClaimPolicy(limit=10), LEASE)
    assert sorted(c.message.id for c in claims) == sorted([at_since.id, inside.id])
    assert all(c.trigger == Trigger.MANUAL and c.attempts == 0 for c in claims)


async def test_recover_without_until_takes_everything_since(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now - 300)
    await add_message(store, app.id, created_at=now - 10)
    await fail_everything(store, now)
    assert await store.recover(app.id, endpoint.id, now - 300, None, now) == 2
    assert (await store.endpoint_stats(app.id, endpoint.id, None, None)).pending == 2


async def test_recover_leaves_other_tasks_alone(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    other = await add_endpoint(store, app.id)
    delivered = await add_message(store, app.id, created_at=now - 10)
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    await store.complete(
        [
            completion_for(c)
            if c.endpoint.id == endpoint.id
            else completion_for(c, next_status=MessageStatus.FAIL, code=500)
            for c in claims
        ],
        now,
    )
    await add_message(store, app.id, created_at=now - 5)  # pending on both

    # Only the endpoint named is recovered, and only its failed tasks.
    assert await store.recover(app.id, endpoint.id, now - 60, None, now) == 0
    assert await status_of(store, app.id, delivered.id, endpoint.id) == MessageStatus.SUCCESS
    assert await status_of(store, app.id, delivered.id, other.id) == MessageStatus.FAIL
    assert await store.recover(app.id, other.id, now - 60, None, now) == 1
    assert await status_of(store, app.id, delivered.id, other.id) == MessageStatus.PENDING


async def test_attempts_are_logged_for_each_send(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    for i in range(3):
        [claim] = await store.claim_due(now + i, ClaimPolicy(limit=10), LEASE)
        await store.complete(
            [
                completion_for(
                    claim,
                    next_status=MessageStatus.PENDING,
                    code=500,
                    next_attempt_at=now + i + 1,
                    created_at=now + i,
                )
            ],
            now + i,
        )
    attempts = await store.list_attempts(app.id, AttemptFilter(msg_id=message.id), Page())
    assert len(attempts) == 3
    assert {a.response_status_code for a in attempts} == {500}


async def test_requeue_takes_ids_not_uids_or_event_ids(store: Store, app: Application) -> None:
    # The API resolves uids and event ids first; a store handed one must answer 404, not fail
    # with a database error (a 500 for the user) or queue a task for a key that matches nothing.
    now = time.time()
    endpoint = await add_endpoint(store, app.id, uid="primary")
    message = await add_message(store, app.id, event_id="evt-1", created_at=now)
    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, "evt-1", endpoint.id, now)
    with pytest.raises(errors.NotFound):
        await store.requeue(app.id, message.id, "primary", now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert (claim.message.id, claim.endpoint.id) == (message.id, endpoint.id)
