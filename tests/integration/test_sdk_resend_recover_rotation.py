"""Acceptance 4: manual resend, recovering failed messages, and secret rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from svix.api import (
    ApplicationOut,
    EndpointIn,
    EndpointSecretRotateIn,
    MessageAttemptTriggerType,
    MessageIn,
    MessageStatus,
    RecoverIn,
    Svix,
)
from svix.webhooks import Webhook as SvixWebhook

from tests.support.receiver import Receiver
from tests.support.sdk import attempts, wait_attempts, wait_status

MAX_ATTEMPTS = 3  # one try plus the two retries of the test schedule
QUIET_SECONDS = 0.5  # more than twice the longest retry step


def _send(svix: Svix, app_id: str, **payload: object) -> str:
    return svix.message.create(app_id, MessageIn(event_type="user.updated", payload=payload)).id


def test_resend_delivers_the_message_again_as_a_manual_attempt(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("resend")
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    msg_id = _send(svix, app.id, user=1)
    receiver.wait_for(path, 1)
    wait_status(svix, app.id, msg_id, ep.id, MessageStatus.SUCCESS)

    svix.message_attempt.resend(app.id, msg_id, ep.id)

    first, again = receiver.wait_for(path, 2)
    assert again.headers["webhook-id"] == msg_id
    assert again.body == first.body
    made = wait_attempts(svix, app.id, msg_id, 2)
    assert [a.trigger_type for a in made] == [
        MessageAttemptTriggerType.SCHEDULED,
        MessageAttemptTriggerType.MANUAL,
    ]
    assert [a.status for a in made] == [MessageStatus.SUCCESS, MessageStatus.SUCCESS]
    receiver.assert_no_more(path, 2, seconds=QUIET_SECONDS)


def test_recover_redelivers_failed_messages_once_the_endpoint_is_healthy(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("outage")
    receiver.script(path, then=500)
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    # server and test share one clock; the margin covers sub-second rounding
    since = datetime.now(UTC) - timedelta(seconds=5)
    failed = [_send(svix, app.id, user=n) for n in range(2)]
    receiver.wait_for(path, MAX_ATTEMPTS * len(failed))
    for msg_id in failed:
        wait_status(svix, app.id, msg_id, ep.id, MessageStatus.FAIL)

    receiver.script(path, then=200)  # the outage ends
    svix.endpoint.recover(app.id, ep.id, RecoverIn(since=since))

    received = receiver.wait_for(path, MAX_ATTEMPTS * len(failed) + len(failed))
    recovered = received[MAX_ATTEMPTS * len(failed) :]
    assert sorted(r.headers["webhook-id"] for r in recovered) == sorted(failed)
    assert {r.status for r in recovered} == {200}
    for msg_id in failed:
        wait_status(svix, app.id, msg_id, ep.id, MessageStatus.SUCCESS)
        made = attempts(svix, app.id, msg_id)
        assert [a.response_status_code for a in made] == [500, 500, 500, 200]
    receiver.assert_no_more(path, len(received), seconds=QUIET_SECONDS)


def test_after_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("rotated")
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    old = svix.endpoint.get_secret(app.id, ep.id).key

    svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn())

    new = svix.endpoint.get_secret(app.id, ep.id).key
    assert new != old
    msg_id = _send(svix, app.id, user=3)
    (delivery,) = receiver.wait_for(path, 1)
    assert delivery.headers["webhook-id"] == msg_id
    assert len(delivery.headers["webhook-signature"].split()) == 2  # one per active secret
    # each secret alone verifies: receivers can switch at any moment of the grace period
    for secret in (old, new):
        StandardWebhook(secret).verify(delivery.body, delivery.headers)
        SvixWebhook(secret).verify(delivery.body, delivery.headers)
    stranger = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(receiver.new_path())))
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(svix.endpoint.get_secret(app.id, stranger.id).key).verify(
            delivery.body, delivery.headers
        )
