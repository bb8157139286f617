"""The stores time their write transactions: ingest, claim and complete, with batch sizes.

SQLite and PostgreSQL record into the ``Metrics`` they were built with
(``hookline_store_commit_duration_seconds``, ``hookline_store_batch_size``); the memory store has
no transactions and records nothing. An operator reads group commit from these: how many
messages share one commit, and how long a commit takes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hookline import metrics as metrics_
from hookline import store as store_
from hookline.models import ClaimPolicy, MessageStatus
from hookline.store.base import Store

from .conftest import LEASE, add_endpoint, completion_for, make_app, make_message

Measured = tuple[Store, metrics_.Metrics]


@pytest.fixture(params=["sqlite", "postgres"])
async def measured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Measured]:
    metrics = metrics_.Metrics()
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hookline.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    backend = store_.from_url(url, pool_size=4, metrics=metrics)
    await backend.open()
    try:
        await backend.migrate()
        yield backend, metrics
    finally:
        await backend.close()


def sample(metrics: metrics_.Metrics, name: str, operation: str) -> float:
    value = metrics.registry.get_sample_value(name, {"operation": operation})
    assert value is not None, f"{name} has no {operation} series"
    return value


async def test_ingest_claim_and_complete_are_timed_with_their_batch_sizes(
    measured: Measured,
) -> None:
    store, metrics = measured
    now = time.time()
    org = await store.ensure_org("acme", now)
    app = make_app(org.id)
    await store.create_app(app)
    await add_endpoint(store, app.id)
    before = {
        op: sample(metrics, "hookline_store_batch_size_sum", op) for op in metrics_.STORE_OPERATIONS
    }

    # 20 messages at once: group commit puts several in one transaction
    await asyncio.gather(
        *(store.create_message(make_message(app.id, created_at=now)) for _ in range(20))
    )
    ingest_commits = sample(metrics, "hookline_store_commit_duration_seconds_count", "ingest")
    assert sample(metrics, "hookline_store_batch_size_sum", "ingest") - before["ingest"] == 20
    assert 1 <= ingest_commits <= 20
    assert sample(metrics, "hookline_store_batch_size_count", "ingest") == ingest_commits
    assert sample(metrics, "hookline_store_commit_duration_seconds_sum", "ingest") > 0

    claims = await store.claim_due(now + 1, ClaimPolicy(limit=15), LEASE)
    assert len(claims) == 15
    assert sample(metrics, "hookline_store_batch_size_sum", "claim") - before["claim"] == 15
    assert sample(metrics, "hookline_store_commit_duration_seconds_count", "claim") == 1

    done = [completion_for(c, created_at=now + 2) for c in claims[:10]]
    done += [
        completion_for(c, next_status=MessageStatus.PENDING, code=500, next_attempt_at=now + 9)
        for c in claims[10:]
    ]
    await store.complete(done, now + 2)
    assert sample(metrics, "hookline_store_batch_size_sum", "complete") - before["complete"] == 15
    assert sample(metrics, "hookline_store_commit_duration_seconds_count", "complete") == 1


async def test_a_refused_message_is_not_counted_as_written(measured: Measured) -> None:
    store, metrics = measured
    now = time.time()
    org = await store.ensure_org("acme", now)
    app = make_app(org.id)
    await store.create_app(app)
    await store.create_message(make_message(app.id, event_id="evt-1", created_at=now))
    written = sample(metrics, "hookline_store_batch_size_sum", "ingest")
    with pytest.raises(Exception, match="already exists"):
        await store.create_message(make_message(app.id, event_id="evt-1", created_at=now))
    assert sample(metrics, "hookline_store_batch_size_sum", "ingest") == written


async def test_the_memory_store_records_nothing() -> None:
    metrics = metrics_.Metrics()
    memory = store_.from_url("memory://", metrics=metrics)
    await memory.open()
    now = time.time()
    org = await memory.ensure_org("acme", now)
    app = make_app(org.id)
    await memory.create_app(app)
    await memory.create_message(make_message(app.id, created_at=now))
    await memory.claim_due(now, ClaimPolicy(limit=10), LEASE)
    for op in metrics_.STORE_OPERATIONS:
        assert sample(metrics, "hookline_store_batch_size_count", op) == 0
    await memory.close()
