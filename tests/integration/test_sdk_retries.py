"""Acceptance 3: retries follow the schedule; 3xx and exhaustion fail; 410 disables.

The server runs with HOOKLINE_RETRY_SCHEDULE=0.2,0.2: at most three attempts, 0.2 s (+/-20 %
jitter) apart.
"""

from __future__ import annotations

import itertools

from svix.api import (
    ApplicationOut,
    EndpointIn,
    MessageAttemptTriggerType,
    MessageIn,
    MessageStatus,
    Svix,
)

from tests.support.receiver import Receiver
from tests.support.sdk import attempts, destinations, wait_attempts, wait_status
from tests.support.wait import until

MAX_ATTEMPTS = 3  # one try plus the two retries of the test schedule
MIN_GAP_SECONDS = 0.15  # 0.2 s step minus the 20 % jitter, minus rounding
MAX_GAP_SECONDS = 1.5  # 0.24 s at most, plus generous room for a loaded CI machine
QUIET_SECONDS = 0.6  # more than twice the longest retry step: a further attempt would show


def _send(svix: Svix, app_id: str, **payload: object) -> str:
    return svix.message.create(app_id, MessageIn(event_type="invoice.paid", payload=payload)).id


def test_failing_endpoint_is_retried_on_schedule_until_it_succeeds(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("flaky")
    receiver.script(path, 500, 500, then=200)
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))

    msg_id = _send(svix, app.id, invoice=1)

    received = receiver.wait_for(path, 3)
    assert {r.headers["webhook-id"] for r in received} == {msg_id}
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    assert all(MIN_GAP_SECONDS <= gap < MAX_GAP_SECONDS for gap in gaps), gaps

    made = wait_attempts(svix, app.id, msg_id, 3)
    assert [a.response_status_code for a in made] == [500, 500, 200]
    assert [a.status for a in made] == [
        MessageStatus.FAIL,
        MessageStatus.FAIL,
        MessageStatus.SUCCESS,
    ]
    assert {a.endpoint_id for a in made} == {ep.id}
    assert {a.trigger_type for a in made} == {MessageAttemptTriggerType.SCHEDULED}
    wait_status(svix, app.id, msg_id, ep.id, MessageStatus.SUCCESS)
    receiver.assert_no_more(path, 3, seconds=QUIET_SECONDS)


def test_endpoint_that_always_fails_gets_three_attempts_then_the_message_fails(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("down")
    receiver.script(path, then=500)
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))

    msg_id = _send(svix, app.id, invoice=2)

    receiver.wait_for(path, MAX_ATTEMPTS)
    wait_status(svix, app.id, msg_id, ep.id, MessageStatus.FAIL)
    made = attempts(svix, app.id, msg_id)
    assert [(a.response_status_code, a.status) for a in made] == [(500, MessageStatus.FAIL)] * 3
    receiver.assert_no_more(path, MAX_ATTEMPTS, seconds=QUIET_SECONDS)
    assert len(attempts(svix, app.id, msg_id)) == MAX_ATTEMPTS


def test_redirect_is_not_followed_and_counts_as_a_failure(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    target = receiver.new_path("target")
    path = receiver.new_path("moved")
    receiver.redirect(path, to=target, status=302)
    ep = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))

    msg_id = _send(svix, app.id, invoice=3)

    received = receiver.wait_for(path, MAX_ATTEMPTS)
    assert received[0].status == 302  # the receiver did answer with a redirect
    wait_status(svix, app.id, msg_id, ep.id, MessageStatus.FAIL)
    made = attempts(svix, app.id, msg_id)
    assert [(a.response_status_code, a.status) for a in made] == [(302, MessageStatus.FAIL)] * 3
    assert receiver.requests(target) == []


def test_gone_disables_the_endpoint_and_later_messages_skip_it(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    gone_path, control_path = receiver.new_path("gone"), receiver.new_path("control")
    receiver.script(gone_path, then=410)
    gone = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(gone_path)))
    control = svix.endpoint.create(app.id, EndpointIn(url=receiver.url(control_path)))

    first = _send(svix, app.id, invoice=4)

    receiver.wait_for(gone_path, 1)
    until(
        lambda: svix.endpoint.get(app.id, gone.id).disabled,
        lambda disabled: disabled is True,
        what="the endpoint that answered 410 to be disabled",
    )
    wait_status(svix, app.id, first, gone.id, MessageStatus.FAIL)
    made = attempts(svix, app.id, first)
    gone_attempts = [a for a in made if a.endpoint_id == gone.id]
    assert [(a.response_status_code, a.status) for a in gone_attempts] == [
        (410, MessageStatus.FAIL)
    ]  # 410 is final: no retries

    second = _send(svix, app.id, invoice=5)

    # The healthy endpoint gets both; once it has the second, the disabled one would have too.
    delivered = receiver.wait_for(control_path, 2)
    assert [r.headers["webhook-id"] for r in delivered] == [first, second]
    assert set(destinations(svix, app.id, second)) == {control.id}
    receiver.assert_no_more(gone_path, 1, seconds=QUIET_SECONDS)
    assert svix.endpoint.get(app.id, gone.id).disabled is True
