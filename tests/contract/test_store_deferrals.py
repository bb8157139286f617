"""What a claim held back and why (``ClaimPolicy.deferred``), and the endpoint gauges' counts.

Every backend must report the same reasons and counts for the same situation: the worker turns
them into ``hookline_deliveries_deferred`` and an operator compares that rate with attempts.
One count is one due task that fell due after ``deferred_since`` and that the claim left
waiting because its endpoint could take no more (rate limit, open circuit, busy slots).
"""

from __future__ import annotations

import time

from msgspec.structs import replace

from hookline.models import (
    DEFER_CIRCUIT_OPEN,
    DEFER_ENDPOINT_BUSY,
    DEFER_RATE_LIMITED,
    Application,
    ClaimPolicy,
    EndpointSummary,
    MessageStatus,
)
from hookline.store.base import Store

from .conftest import LEASE, add_endpoint, add_message, completion_for, make_app
from .test_store_claim_policy import FAST_CIRCUIT, fail_times, rate_limited


def counting(limit: int = 100, since: float = 0.0, **kw: object) -> ClaimPolicy:
    return ClaimPolicy(limit=limit, deferred_since=since, **kw)  # type: ignore[arg-type]


async def test_a_rate_limited_endpoint_defers_what_its_bucket_cannot_take(
    store: Store, app: Application
) -> None:
    now = time.time()
    await rate_limited(store, app.id, 1)  # a bucket of one token
    for _ in range(4):
        await add_message(store, app.id, created_at=now - 1)
    policy = counting(since=now - 10)
    claims = await store.claim_due(now, policy, LEASE)
    assert len(claims) == 1
    assert policy.deferred == {DEFER_RATE_LIMITED: 3}


async def test_a_task_is_counted_once_not_at_every_claim_it_waits_through(
    store: Store, app: Application
) -> None:
    now = time.time()
    await rate_limited(store, app.id, 1)
    for _ in range(3):
        await add_message(store, app.id, created_at=now - 1)
    first = counting(since=now - 10)
    await store.claim_due(now, first, LEASE)
    assert first.deferred == {DEFER_RATE_LIMITED: 2}
    # the next claim (bucket still empty) starts counting where the last one stopped
    again = counting(since=now)
    assert await store.claim_due(now + 0.1, again, LEASE) == []
    assert again.deferred == {}
    # a task that falls due after the last claim is new
    await add_message(store, app.id, created_at=now + 0.2)
    later = counting(since=now + 0.1)
    await store.claim_due(now + 0.3, later, LEASE)
    assert later.deferred == {DEFER_RATE_LIMITED: 1}


async def test_an_open_circuit_defers_its_due_tasks_and_a_probe_goes_alone(
    store: Store, app: Application
) -> None:
    now = time.time()
    failing = await add_endpoint(store, app.id)
    await fail_times(store, app.id, failing, 3, now)  # open until now + 10; retries at now + 1
    for _ in range(2):
        await add_message(store, app.id, created_at=now + 2)
    cooling = counting(since=now)
    assert await store.claim_due(now + 5, cooling, LEASE) == []
    assert cooling.deferred == {DEFER_CIRCUIT_OPEN: 5}  # 3 retries and 2 new messages
    # the cool-down is over: one probe goes, the rest wait for its outcome
    probing = counting(since=now - 100)
    [probe] = await store.claim_due(now + 10, probing, LEASE)
    assert probe.endpoint.id == failing.id
    assert probing.deferred == {DEFER_CIRCUIT_OPEN: 4}


async def test_a_busy_endpoint_defers_what_its_slots_cannot_take(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    full = await add_endpoint(store, app.id)
    partly = await add_endpoint(store, other_app.id)
    for _ in range(3):
        await add_message(store, app.id, created_at=now - 1)
    for _ in range(5):
        await add_message(store, other_app.id, created_at=now - 1)
    policy = counting(since=now - 10, endpoint_slots=2, in_flight={full.id: 2})
    claims = await store.claim_due(now, policy, LEASE)
    assert [c.endpoint.id for c in claims] == [partly.id, partly.id]
    assert policy.deferred == {DEFER_ENDPOINT_BUSY: 3 + 3}


async def test_a_blocked_endpoints_whole_backlog_is_counted_not_only_what_a_batch_reads(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    blocked = await add_endpoint(store, app.id)
    await add_endpoint(store, other_app.id)
    for i in range(300):  # more than a claim batch
        await add_message(store, app.id, created_at=now - 100 + i * 0.01)
    for _ in range(3):
        await add_message(store, other_app.id, created_at=now)
    policy = counting(limit=256, since=now - 200, endpoint_slots=16, in_flight={blocked.id: 16})
    claims = await store.claim_due(now, policy, LEASE)
    assert len(claims) == 3
    assert policy.deferred == {DEFER_ENDPOINT_BUSY: 300}


async def test_tasks_left_because_the_claimer_is_full_are_not_deferred(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    for _ in range(5):
        await add_message(store, app.id, created_at=now - 1)
    policy = counting(limit=2, since=now - 10)
    assert len(await store.claim_due(now, policy, LEASE)) == 2
    assert policy.deferred == {}


async def test_every_reason_in_one_claim_and_the_circuit_wins_a_tie(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    third = make_app(app.org_id, uid="third")
    await store.create_app(third)
    limited = await rate_limited(store, app.id, 1)
    busy = await add_endpoint(store, other_app.id)
    failing = await add_endpoint(store, third.id)
    await fail_times(store, third.id, failing, 3, now - 5)  # open until now + 5, retries due
    for app_id in (app.id, other_app.id, third.id):
        for _ in range(2):
            await add_message(store, app_id, created_at=now - 1)
    # the failing endpoint is also full at this claimer: the circuit is the reason reported
    in_flight = {busy.id: 1, failing.id: 1}
    policy = counting(since=now - 2, endpoint_slots=1, in_flight=in_flight)
    claims = await store.claim_due(now, policy, LEASE)
    assert [c.endpoint.id for c in claims] == [limited.id]
    assert policy.deferred == {DEFER_RATE_LIMITED: 1, DEFER_ENDPOINT_BUSY: 2, DEFER_CIRCUIT_OPEN: 2}


async def test_without_deferred_since_nothing_is_counted(store: Store, app: Application) -> None:
    now = time.time()
    await rate_limited(store, app.id, 1)
    for _ in range(3):
        await add_message(store, app.id, created_at=now - 1)
    policy = ClaimPolicy(limit=100)
    assert len(await store.claim_due(now, policy, LEASE)) == 1
    assert policy.deferred == {}


async def test_a_disabled_endpoints_tasks_are_failed_not_deferred(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    for _ in range(2):
        await add_message(store, app.id, created_at=now - 1)
    await store.update_endpoint(replace(endpoint, disabled=True, updated_at=now))
    policy = counting(since=now - 10, endpoint_slots=0)
    assert await store.claim_due(now, policy, LEASE) == []
    assert policy.deferred == {}


# the endpoint gauges ---------------------------------------------------------------------------


async def test_endpoint_summary_counts_open_circuits_and_disabled_endpoints(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=0, disabled=0)
    failing = await add_endpoint(store, app.id)
    await add_endpoint(store, other_app.id)
    await add_endpoint(store, other_app.id, disabled=True)
    await fail_times(store, app.id, failing, 3, now)
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=1, disabled=1)
    # a rate-limited endpoint has a health row too, with its circuit closed
    limited = await rate_limited(store, other_app.id, 1)
    await add_message(store, other_app.id, created_at=now)
    await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert (await store.endpoint_health(limited.id)) is not None
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=1, disabled=1)
    # disabled with its circuit open: counted as disabled only
    await store.update_endpoint(replace(failing, disabled=True, updated_at=now))
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=0, disabled=2)


async def test_endpoint_summary_sees_a_410_disable_and_a_closed_circuit(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    gone = await add_endpoint(store, app.id)
    await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    done = completion_for(
        claim, next_status=MessageStatus.FAIL, code=410, disable_endpoint=True, created_at=now
    )
    await store.complete([done], now, FAST_CIRCUIT)
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=0, disabled=1)
    flaky = await add_endpoint(store, other_app.id)
    await fail_times(store, other_app.id, flaky, 3, now)
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=1, disabled=1)
    [probe] = await store.claim_due(now + 10, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(probe, created_at=now + 11)], now + 11, FAST_CIRCUIT)
    assert await store.endpoint_summary() == EndpointSummary(circuits_open=0, disabled=1)
    assert gone.id != flaky.id
