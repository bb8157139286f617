"""Several processes on one database: every backend that can be shared (SQLite, PostgreSQL).

Each ``shared_database()`` call opens another store on the same database, as another
``hookline api`` or ``hookline worker`` process would; the memory store is one process only.
"""

from __future__ import annotations

import asyncio
import time

from hookline.models import ClaimPolicy

from .conftest import LEASE, OpenStore, add_endpoint, add_message, make_app


async def test_stores_migrating_at_once_each_apply_the_schema_once(
    shared_database: OpenStore,
) -> None:
    # Four processes starting together on an empty database: none may fail on a table
    # another one is creating, and none may apply a migration twice.
    stores = [await shared_database() for _ in range(4)]
    await asyncio.gather(*(s.migrate() for s in stores))
    await asyncio.gather(*(s.migrate() for s in stores))  # and again: nothing left to do

    org = await stores[0].ensure_org("acme", time.time())
    assert [(await s.ensure_org("acme", time.time())).id for s in stores] == [org.id] * 4
    application = make_app(org.id)
    await stores[1].create_app(application)
    assert await stores[3].get_app(org.id, application.id) == application


async def test_work_committed_by_one_store_is_claimed_by_another(
    shared_database: OpenStore,
) -> None:
    api = await shared_database()
    await api.migrate()
    worker = await shared_database()
    org = await api.ensure_org("acme", time.time())
    application = make_app(org.id)
    await api.create_app(application)
    endpoint = await add_endpoint(api, application.id)
    now = time.time()
    message = await add_message(api, application.id, created_at=now)

    assert await worker.next_due_at() == now
    [claim] = await worker.claim_due(now, ClaimPolicy(limit=10), LEASE)
    assert (claim.message, claim.endpoint) == (message, endpoint)
    assert await api.claim_due(now, ClaimPolicy(limit=10), LEASE) == []
