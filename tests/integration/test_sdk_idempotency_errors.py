"""The svix SDK reads hookline's idempotency refusals as ``HttpError``s it can inspect.

The SDK parses every 422 as a validation error whose ``detail`` is a list; a refusal with any
other shape must use another status, or the SDK crashes instead of raising.
"""

from __future__ import annotations

import asyncio

import pytest
from svix.api import ApplicationOut, MessageCreateOptions, MessageIn, Svix, SvixAsync, SvixOptions
from svix.exceptions import HttpError

from tests.support.sdk import unique
from tests.support.server import HooklineServer


def test_key_reused_with_another_body_raises_an_http_error_with_status_and_code(
    app: ApplicationOut, svix: Svix
) -> None:
    options = MessageCreateOptions(idempotency_key=unique("reused"))
    first = svix.message.create(app.id, MessageIn(event_type="order.placed", payload={"n": 1}))
    svix.message.create(app.id, MessageIn(event_type="order.placed", payload={"n": 1}), options)

    with pytest.raises(HttpError) as refused:
        svix.message.create(app.id, MessageIn(event_type="order.placed", payload={"n": 2}), options)

    assert refused.value.status_code == 409
    assert refused.value.code == "idempotency_key_mismatch"
    assert "different request" in refused.value.detail
    # the refused request wrote nothing: the plain message and the keyed one
    assert len(svix.message.list(app.id).data) == 2
    assert first.id in {m.id for m in svix.message.list(app.id).data}


def test_async_client_raises_the_same_http_error(
    app: ApplicationOut, server: HooklineServer
) -> None:
    options = MessageCreateOptions(idempotency_key=unique("reused-async"))

    async def reuse() -> HttpError:
        client = SvixAsync(server.token, SvixOptions(server_url=server.base_url))
        try:
            await client.message.create(app.id, MessageIn(event_type="a.b", payload={}), options)
            with pytest.raises(HttpError) as refused:
                await client.message.create(
                    app.id, MessageIn(event_type="a.b", payload={"x": 1}), options
                )
            return refused.value
        finally:
            await client._httpx_client.aclose()

    error = asyncio.run(reuse())
    assert (error.status_code, error.code) == (409, "idempotency_key_mismatch")
