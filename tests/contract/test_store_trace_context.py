"""``Message.trace_context``: the ingest span's traceparent reaches the worker with the claim."""

from __future__ import annotations

import time

import msgspec

from hookline.models import Application, ClaimPolicy
from hookline.store.base import Store

from .conftest import LEASE, add_endpoint, make_message

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_trace_context_is_stored_and_comes_back_with_the_claim(
    store: Store, app: Application
) -> None:
    now = time.time()
    await add_endpoint(store, app.id)
    traced = msgspec.structs.replace(
        make_message(app.id, created_at=now), trace_context=TRACEPARENT
    )
    untraced = make_message(app.id, created_at=now)
    await store.create_message(traced)
    await store.create_message(untraced)

    assert await store.get_message(app.id, traced.id) == traced
    claims = await store.claim_due(now, ClaimPolicy(limit=10), LEASE)
    contexts = {c.message.id: c.message.trace_context for c in claims}
    assert contexts == {traced.id: TRACEPARENT, untraced.id: None}
