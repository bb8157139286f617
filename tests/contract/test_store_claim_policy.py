"""The claim contract: only what may go now is handed out; release; endpoint health.

Every test runs on every backend. Time is passed explicitly, so buckets, leases and cool-downs
are exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from msgspec.structs import replace

from hookline.circuit import CircuitPolicy
from hookline.models import (
    Application,
    ClaimPolicy,
    Endpoint,
    HealthChange,
    MessageStatus,
    Page,
    Release,
)
from hookline.store.base import Store

from .conftest import (
    LEASE,
    OpenStore,
    add_endpoint,
    add_message,
    completion_for,
    make_app,
    make_endpoint,
)

FAST_CIRCUIT = CircuitPolicy(failures=3, cooldown=10.0, cooldown_max=25.0, disable_after=3600.0)


async def rate_limited(store: Store, app_id: str, rate: int) -> Endpoint:
    endpoint = replace(make_endpoint(app_id), rate_limit=rate)
    await store.create_endpoint(endpoint)
    return endpoint


async def fail_times(
    store: Store, app_id: str, endpoint: Endpoint, n: int, at: float
) -> list[HealthChange]:
    """Send and fail ``n`` messages to ``endpoint`` at ``at``; return the state changes."""
    changes = []
    for _ in range(n):
        await add_message(store, app_id, created_at=at)
    claims = await store.claim_due(at, ClaimPolicy(limit=n), LEASE)
    for claim in claims:
        done = completion_for(
            claim,
            next_status=MessageStatus.PENDING,
            code=500,
            next_attempt_at=at + 1,
            created_at=at,
        )
        changes += [e.change for e in await store.complete([done], at, FAST_CIRCUIT)]
    return changes


# per-endpoint slots ----------------------------------------------------------------------------


async def test_an_endpoint_gets_no_more_than_its_free_slots(store: Store, app: Application) -> None:
    now = time.time()
    busy = await add_endpoint(store, app.id, uid="busy")
    for _ in range(10):
        await add_message(store, app.id, created_at=now)
    policy = ClaimPolicy(limit=100, endpoint_slots=4, in_flight={busy.id: 1})
    claims = await store.claim_due(now, policy, LEASE)
    assert len(claims) == 3  # 4 slots, one already in flight at this claimer
    assert await store.claim_due(now, ClaimPolicy(limit=100, endpoint_slots=0), LEASE) == []


async def test_a_blocked_endpoints_backlog_does_not_hide_other_endpoints_work(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    blocked = await add_endpoint(store, app.id)
    healthy = await add_endpoint(store, other_app.id)
    for i in range(300):  # older than everything else: they fill a whole claim batch
        await add_message(store, app.id, created_at=now - 100 + i * 0.01)
    fresh = [await add_message(store, other_app.id, created_at=now) for _ in range(5)]
    policy = ClaimPolicy(limit=256, endpoint_slots=16, in_flight={blocked.id: 16})

    claims = await store.claim_due(now, policy, LEASE)

    assert {c.endpoint.id for c in claims} == {healthy.id}
    assert sorted(c.message.id for c in claims) == sorted(m.id for m in fresh)


async def test_claims_keep_due_order_across_endpoints_when_some_are_held_back(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    first = await add_endpoint(store, app.id)
    second = await add_endpoint(store, other_app.id)
    a = [await add_message(store, app.id, created_at=now - 10 + i) for i in range(3)]
    b = [await add_message(store, other_app.id, created_at=now - 9.5 + i) for i in range(3)]
    policy = ClaimPolicy(limit=4, endpoint_slots=2)
    claims = await store.claim_due(now, policy, LEASE)
    assert [c.message.id for c in claims] == [a[0].id, b[0].id, a[1].id, b[1].id]
    assert {c.endpoint.id for c in claims} == {first.id, second.id}


# rate limits -----------------------------------------------------------------------------------


async def test_rate_limit_hands_out_the_burst_then_the_refill(
    store: Store, app: Application
) -> None:
    now = time.time()
    endpoint = await rate_limited(store, app.id, 20)  # burst: a quarter second = 5
    for _ in range(30):
        await add_message(store, app.id, created_at=now - 1)
    assert len(await store.claim_due(now, ClaimPolicy(limit=100), LEASE)) == 5
    assert await store.claim_due(now + 0.01, ClaimPolicy(limit=100), LEASE) == []
    assert len(await store.claim_due(now + 0.1, ClaimPolicy(limit=100), LEASE)) == 2
    # an idle endpoint's bucket fills up to the burst, not beyond
    assert len(await store.claim_due(now + 60, ClaimPolicy(limit=100), LEASE)) == 5
    health = await store.endpoint_health(endpoint.id)
    assert health is not None and health.tokens is not None and health.tokens < 1


async def test_rate_limited_tasks_wait_without_attempts(store: Store, app: Application) -> None:
    now = time.time()
    await rate_limited(store, app.id, 1)
    messages = [await add_message(store, app.id, created_at=now) for _ in range(3)]
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    for message in messages:
        if message.id == claim.message.id:
            continue
        [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
        assert delivery.status == MessageStatus.PENDING
        assert delivery.attempts == 0


# circuit breaking ------------------------------------------------------------------------------


async def test_circuit_opens_probes_after_the_cooldown_and_closes_on_success(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    failing = await add_endpoint(store, app.id)
    assert await fail_times(store, app.id, failing, 3, now) == [HealthChange.CIRCUIT_OPENED]
    health = await store.endpoint_health(failing.id)
    assert health is not None and health.circuit_open and health.paused_until == now + 10

    # open: retries fall due but nothing is handed out, other endpoints still flow
    other = await add_endpoint(store, other_app.id)
    await add_message(store, other_app.id, created_at=now + 5)
    [only] = await store.claim_due(now + 5, ClaimPolicy(limit=10), LEASE)
    assert only.endpoint.id == other.id
    # the cool-down is over: exactly one probe
    [probe] = await store.claim_due(now + 10, ClaimPolicy(limit=10), LEASE)
    assert probe.endpoint.id == failing.id
    assert await store.claim_due(now + 11, ClaimPolicy(limit=10), LEASE) == []
    # the probe fails: the cool-down doubles
    failed = completion_for(
        probe,
        next_status=MessageStatus.PENDING,
        code=500,
        next_attempt_at=now + 11,
        created_at=now + 12,
    )
    assert await store.complete([failed], now + 12, FAST_CIRCUIT) == []
    health = await store.endpoint_health(failing.id)
    assert health is not None and health.paused_until == now + 12 + 20
    assert await store.claim_due(now + 31, ClaimPolicy(limit=10), LEASE) == []
    [probe] = await store.claim_due(now + 32, ClaimPolicy(limit=10), LEASE)
    # the probe succeeds: closed, the backlog flows again
    events = await store.complete(
        [completion_for(probe, created_at=now + 33)], now + 33, FAST_CIRCUIT
    )
    assert [e.change for e in events] == [HealthChange.CIRCUIT_CLOSED]
    assert len(await store.claim_due(now + 34, ClaimPolicy(limit=10), LEASE)) == 2


async def test_cooldown_is_capped(store: Store, app: Application) -> None:
    now = time.time()
    failing = await add_endpoint(store, app.id)
    await fail_times(store, app.id, failing, 3, now)
    at = now + 10
    for expected in (20.0, 25.0, 25.0):
        [probe] = await store.claim_due(at, ClaimPolicy(limit=10), LEASE)
        done = completion_for(
            probe,
            next_status=MessageStatus.PENDING,
            code=500,
            next_attempt_at=at,
            created_at=at,
        )
        await store.complete([done], at, FAST_CIRCUIT)
        health = await store.endpoint_health(failing.id)
        assert health is not None and health.cooldown == expected
        at += expected


async def test_continuous_failure_disables_the_endpoint(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    policy = CircuitPolicy(failures=1000, disable_after=60.0)
    for at, code in ((now, 500), (now + 30, 0), (now + 60, 503)):
        await add_message(store, app.id, created_at=at)
        [claim] = await store.claim_due(at, ClaimPolicy(limit=1), LEASE)
        done = completion_for(claim, next_status=MessageStatus.FAIL, code=code, created_at=at)
        events = await store.complete([done], at, policy)
    assert [e.change for e in events] == [HealthChange.DISABLED]
    assert events[0].failing_since == now
    current = await store.get_endpoint(app.id, endpoint.id)
    assert current is not None and current.disabled
    # enabling it again by hand forgets the failure history
    await store.update_endpoint(replace(current, disabled=False))
    assert await store.endpoint_health(endpoint.id) is None


async def test_a_success_resets_the_failure_run(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    await fail_times(store, app.id, endpoint, 2, now)
    await add_message(store, app.id, created_at=now)
    claims = await store.claim_due(now + 1, ClaimPolicy(limit=10), LEASE)
    await store.complete([completion_for(c, created_at=now + 1) for c in claims], now + 1)
    health = await store.endpoint_health(endpoint.id)
    assert health is None or (health.failures == 0 and health.failing_since is None)


# release ---------------------------------------------------------------------------------------


async def test_release_puts_a_task_back_without_an_attempt(store: Store, app: Application) -> None:
    now = time.time()
    endpoint = await add_endpoint(store, app.id)
    message = await add_message(store, app.id, created_at=now)
    [claim] = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    released = Release(
        msg_id=message.id, endpoint_id=endpoint.id, lease=claim.lease, due_at=now + 1
    )
    assert await store.release([released], now) == 1
    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.status == MessageStatus.PENDING and delivery.attempts == 0
    assert await store.next_due_at() == now + 1
    # the old lease is fenced off: its release and its completion no longer apply
    assert await store.release([released], now) == 0
    await store.complete([completion_for(claim)], now)
    [again] = await store.claim_due(now + 1, ClaimPolicy(limit=10), LEASE)
    assert again.attempts == 0 and again.lease > claim.lease


# several claimers ------------------------------------------------------------------------------


async def test_concurrent_claimers_never_get_the_same_task(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    await add_endpoint(store, app.id)
    for _ in range(100):
        await add_message(store, app.id, created_at=now)
    batches = await asyncio.gather(
        *(store.claim_due(now, ClaimPolicy(limit=30), LEASE) for _ in range(8))
    )
    keys = [(c.message.id, c.endpoint.id) for batch in batches for c in batch]
    assert len(keys) == len(set(keys)) == 200


async def test_count_due_is_capped(store: Store, app: Application) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    for i in range(12):
        await add_message(store, app.id, created_at=now + (100 if i >= 10 else 0))
    assert await store.count_due(now, 1000) == 10
    assert await store.count_due(now, 4) == 4


async def test_two_stores_on_one_database_share_buckets_and_never_share_tasks(
    shared_database: OpenStore,
) -> None:
    """Two processes on one database, as `hookline worker` twice: one bucket, disjoint claims."""
    first = await shared_database()
    await first.migrate()
    second = await shared_database()
    org = await first.ensure_org("acme", time.time())
    application = make_app(org.id)
    await first.create_app(application)
    now = time.time()
    await rate_limited(first, application.id, 20)
    for _ in range(50):
        await add_message(first, application.id, created_at=now - 1)
    a, b = await asyncio.gather(
        first.claim_due(now, ClaimPolicy(limit=50), LEASE),
        second.claim_due(now, ClaimPolicy(limit=50), LEASE),
    )
    assert len(a) + len(b) == 5  # one bucket of 5 between them
    assert not {c.message.id for c in a} & {c.message.id for c in b}
    # the bucket the two spent is one row: it refills once, for whichever claims next
    later = await asyncio.gather(
        first.claim_due(now + 0.1, ClaimPolicy(limit=50), LEASE),
        second.claim_due(now + 0.1, ClaimPolicy(limit=50), LEASE),
    )
    assert sum(len(batch) for batch in later) == 2


async def test_claimers_in_two_stores_never_get_the_same_task(shared_database: OpenStore) -> None:
    first = await shared_database()
    await first.migrate()
    second = await shared_database()
    org = await first.ensure_org("acme", time.time())
    application = make_app(org.id)
    await first.create_app(application)
    now = time.time()
    await add_endpoint(first, application.id)
    await add_endpoint(second, application.id)
    for _ in range(100):
        await add_message(first, application.id, created_at=now)
    batches = await asyncio.gather(
        *(
            (first if i % 2 else second).claim_due(now, ClaimPolicy(limit=30), LEASE)
            for i in range(8)
        )
    )
    keys = [(c.message.id, c.endpoint.id) for batch in batches for c in batch]
    assert len(keys) == len(set(keys)) == 200
    # each store's four claims hold at most 120: both took part
    assert sum(len(b) for b in batches[0::2]) >= 80 and sum(len(b) for b in batches[1::2]) >= 80


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_circuit_state_survives_reopening_the_database(tmp_path: Path, backend: str) -> None:
    from hookline.store import sqlite

    from .conftest import make_app

    path = tmp_path / "h.db"
    store = sqlite.SqliteStore(path)
    await store.open()
    await store.migrate()
    org = await store.ensure_org("acme", time.time())
    application = make_app(org.id)
    await store.create_app(application)
    endpoint = await add_endpoint(store, application.id)
    now = time.time()
    await fail_times(store, application.id, endpoint, 3, now)
    await store.close()

    reopened = sqlite.SqliteStore(path)
    await reopened.open()
    try:
        health = await reopened.endpoint_health(endpoint.id)
        assert health is not None and health.circuit_open and health.paused_until == now + 10
        assert await reopened.claim_due(now + 5, ClaimPolicy(limit=10), LEASE) == []
    finally:
        await reopened.close()


async def test_an_open_circuits_backlog_does_not_hide_other_endpoints_work(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    failing = await add_endpoint(store, app.id)
    await fail_times(store, app.id, failing, 3, now - 5)
    for i in range(300):  # its retries and new messages pile up at the head of the queue
        await add_message(store, app.id, created_at=now - 4 + i * 0.001)
    healthy = await add_endpoint(store, other_app.id)
    fresh = [await add_message(store, other_app.id, created_at=now) for _ in range(3)]
    claims = await store.claim_due(now, ClaimPolicy(limit=256), LEASE)
    assert {c.endpoint.id for c in claims} == {healthy.id}
    assert {c.message.id for c in claims} == {m.id for m in fresh}


async def test_an_empty_bucket_does_not_hide_other_endpoints_work(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    await rate_limited(store, app.id, 4)
    for _ in range(300):
        await add_message(store, app.id, created_at=now - 10)
    assert len(await store.claim_due(now, ClaimPolicy(limit=256), LEASE)) == 1
    healthy = await add_endpoint(store, other_app.id)
    await add_message(store, other_app.id, created_at=now)
    [claim] = await store.claim_due(now + 0.01, ClaimPolicy(limit=256), LEASE)
    assert claim.endpoint.id == healthy.id


async def test_blocked_claims_share_the_batch_between_endpoints(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    busy = await add_endpoint(store, app.id)
    one, two = await add_endpoint(store, other_app.id), await add_endpoint(store, other_app.id)
    for _ in range(20):
        await add_message(store, other_app.id, created_at=now - 1)
    await add_message(store, app.id, created_at=now - 2)
    policy = ClaimPolicy(limit=10, endpoint_slots=16, in_flight={busy.id: 16})
    claims = await store.claim_due(now, policy, LEASE)
    counts = {e.id: sum(1 for c in claims if c.endpoint.id == e.id) for e in (one, two)}
    assert counts == {one.id: 5, two.id: 5}


async def test_a_disabled_endpoints_tasks_fail_while_others_are_blocked(
    store: Store, app: Application, other_app: Application
) -> None:
    now = time.time()
    gone = await add_endpoint(store, app.id)
    busy = await add_endpoint(store, other_app.id)
    message = await add_message(store, app.id, created_at=now - 1)
    await store.update_endpoint(replace(gone, disabled=True))
    policy = ClaimPolicy(limit=10, endpoint_slots=1, in_flight={busy.id: 1})
    assert await store.claim_due(now, policy, LEASE) == []
    [(_, delivery)] = await store.list_deliveries(app.id, message.id, Page())
    assert delivery.status == MessageStatus.FAIL
