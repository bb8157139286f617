"""Payload retention as the svix SDK sees it: the period field, an expired message, its resend.

These tests run their own server (on SQLite and on PostgreSQL) whose payloads are kept
``PAYLOAD_SECONDS`` (``HOOKLINE_PAYLOAD_RETENTION_DAYS`` as a fraction of a day): the smallest
``payloadRetentionPeriod`` Svix allows is five days, too long to wait for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from svix.api import (
    ApplicationIn,
    EndpointIn,
    MessageGetOptions,
    MessageIn,
    MessageListOptions,
    MessageOut,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError

from tests.support.receiver import Receiver
from tests.support.sdk import unique, wait_attempts
from tests.support.server import HooklineServer
from tests.support.wait import until

PAYLOAD_SECONDS = 1.0
CONTENT = MessageGetOptions(with_content=True)  # the SDK asks for none unless told


@pytest.fixture
def short_lived(
    start_server: Callable[..., HooklineServer], backend_env: dict[str, str]
) -> Iterator[Svix]:
    server = start_server(
        env={
            **backend_env,
            "HOOKLINE_PAYLOAD_RETENTION_DAYS": repr(PAYLOAD_SECONDS / 86400),
            "HOOKLINE_RETENTION_INTERVAL": "0.2",
        }
    )
    client = Svix(server.token, SvixOptions(server_url=server.base_url))
    yield client
    client._httpx_client.close()  # the SDK offers no close() (see integration/conftest.py)


def test_a_delivered_message_expires_reads_expired_and_cannot_be_resent(
    short_lived: Svix, receiver: Receiver
) -> None:
    svix = short_lived
    app = svix.application.create(ApplicationIn(name="retention", uid=unique("app")))
    path = receiver.new_path("expiring")
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    msg = svix.message.create(app.id, MessageIn(event_type="card.charged", payload={"pan": "4242"}))
    (arrived,) = receiver.wait_for(path, 1)
    assert b"4242" in arrived.body
    [attempt] = wait_attempts(svix, app.id, msg.id, 1)

    expired: MessageOut = until(
        lambda: svix.message.get(app.id, msg.id, CONTENT),
        lambda m: m.payload == {"expired": True},
        what="the payload to expire",
    )
    assert (expired.id, expired.event_type) == (msg.id, msg.event_type)
    listed = svix.message.list(app.id, MessageListOptions(with_content=True)).data
    assert [(m.id, m.payload) for m in listed] == [(msg.id, {"expired": True})]
    after = svix.message_attempt.get(app.id, msg.id, attempt.id)
    assert (after.response, after.response_status_code) == (
        "EXPUNGED",
        attempt.response_status_code,
    )

    with pytest.raises(HttpError) as refused:
        svix.message_attempt.resend(app.id, msg.id, ep.id)
    assert refused.value.status_code == 400
    assert refused.value.code == "missing_payload"
    receiver.assert_no_more(path, 1, seconds=0.5)


def test_payload_retention_period_is_taken_within_svix_bounds(short_lived: Svix) -> None:
    svix = short_lived
    app = svix.application.create(ApplicationIn(name="retention", uid=unique("app")))
    kept = svix.message.create(
        app.id, MessageIn(event_type="card.charged", payload={"n": 1}, payload_retention_period=5)
    )
    plain = svix.message.create(app.id, MessageIn(event_type="card.charged", payload={"n": 2}))
    until(
        lambda: svix.message.get(app.id, plain.id, CONTENT).payload,
        lambda p: p == {"expired": True},
        what="the message without a period to expire after the server's second",
    )
    # five days, not the server's second: kept through the same cleaner pass
    assert svix.message.get(app.id, kept.id, CONTENT).payload == {"n": 1}
    for days in (4, 91):
        with pytest.raises(HTTPValidationError) as refused:
            svix.message.create(
                app.id,
                MessageIn(event_type="card.charged", payload={}, payload_retention_period=days),
            )
        assert refused.value.status_code == 422
        assert refused.value.detail[0].loc == ["body", "payloadRetentionPeriod"]
