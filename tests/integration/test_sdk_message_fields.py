"""What the svix SDK's ``MessageIn`` carries beyond the basics: deliverAt, tags, application.

A Svix field hookline does not implement is refused with a 422 naming it, never dropped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from svix.api import (
    ApplicationIn,
    ApplicationOut,
    EndpointIn,
    MessageIn,
    MessageListOptions,
    Svix,
)
from svix.exceptions import HttpError, HTTPValidationError

from tests.support.receiver import Receiver
from tests.support.sdk import unique


def test_deliver_at_two_seconds_ahead_arrives_no_earlier(
    app: ApplicationOut, svix: Svix, receiver: Receiver
) -> None:
    path = receiver.new_path("scheduled")
    svix.endpoint.create(app.id, EndpointIn(url=receiver.url(path)))
    sent_mono = time.monotonic()
    deliver_at = datetime.now(UTC) + timedelta(seconds=2)
    msg = svix.message.create(
        app.id, MessageIn(event_type="report.ready", payload={"n": 1}, deliver_at=deliver_at)
    )
    assert msg.deliver_at is not None
    assert abs((msg.deliver_at - deliver_at).total_seconds()) < 0.001  # ms precision on the wire

    (arrived,) = receiver.wait_for(path, 1, timeout=10)
    # wall and monotonic clocks read a few microseconds apart: allow 10 ms for that, no more
    assert arrived.at - sent_mono >= 2.0 - 0.01
    assert arrived.headers["webhook-id"] == msg.id


def test_deliver_at_more_than_a_day_ahead_is_refused(app: ApplicationOut, svix: Svix) -> None:
    too_far = datetime.now(UTC) + timedelta(hours=25)
    with pytest.raises(HTTPValidationError) as refused:
        svix.message.create(
            app.id, MessageIn(event_type="report.ready", payload={}, deliver_at=too_far)
        )
    assert refused.value.status_code == 422
    assert refused.value.detail[0].loc == ["body", "deliverAt"]
    assert svix.message.list(app.id).data == []


def test_tags_round_trip_and_filter_the_message_list(app: ApplicationOut, svix: Svix) -> None:
    billing = svix.message.create(
        app.id, MessageIn(event_type="invoice.paid", payload={}, tags=["billing", "eu"])
    )
    eu_only = svix.message.create(
        app.id, MessageIn(event_type="user.moved", payload={}, tags=["eu"])
    )
    untagged = svix.message.create(app.id, MessageIn(event_type="user.moved", payload={}))

    assert billing.tags == ["billing", "eu"]
    assert svix.message.get(app.id, billing.id).tags == ["billing", "eu"]
    assert untagged.tags is None

    def listed(tag: str) -> set[str]:
        return {m.id for m in svix.message.list(app.id, MessageListOptions(tag=tag)).data}

    assert listed("billing") == {billing.id}
    assert listed("eu") == {billing.id, eu_only.id}
    assert listed("missing") == set()
    assert len(svix.message.list(app.id).data) == 3


def test_a_tag_svix_would_refuse_is_422(app: ApplicationOut, svix: Svix) -> None:
    with pytest.raises(HTTPValidationError) as refused:
        svix.message.create(app.id, MessageIn(event_type="a", payload={}, tags=["has space"]))
    assert refused.value.status_code == 422
    assert refused.value.detail[0].loc == ["body", "tags", 0]


def test_application_creates_the_app_named_by_the_path(svix: Svix) -> None:
    uid = unique("inline-app")
    msg = svix.message.create(
        uid,
        MessageIn(
            event_type="user.signup",
            payload={"n": 1},
            application=ApplicationIn(name="Created inline", metadata={"k": "v"}),
        ),
    )
    app = svix.application.get(uid)
    assert (app.uid, app.name, app.metadata) == (uid, "Created inline", {"k": "v"})
    assert [m.id for m in svix.message.list(uid).data] == [msg.id]

    # the app exists now: a second ``application`` is ignored, as Svix documents
    svix.message.create(
        uid,
        MessageIn(event_type="user.signup", payload={}, application=ApplicationIn(name="Other")),
    )
    assert svix.application.get(uid).name == "Created inline"
    assert len(svix.message.list(uid).data) == 2


def test_without_application_an_unknown_app_is_still_404(svix: Svix) -> None:
    with pytest.raises(HttpError) as refused:
        svix.message.create(unique("no-such-app"), MessageIn(event_type="a", payload={}))
    assert refused.value.status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [("transformations_params", {"x": 1}), ("payload_retention_hours", 24)],
)
def test_a_svix_field_hookline_does_not_implement_is_422_naming_it(
    app: ApplicationOut, svix: Svix, field: str, value: object
) -> None:
    wire = {"transformations_params": "transformationsParams"}.get(field, "payloadRetentionHours")
    with pytest.raises(HTTPValidationError) as refused:
        svix.message.create(app.id, MessageIn(event_type="a", payload={}, **{field: value}))
    assert refused.value.status_code == 422
    error = refused.value.detail[0]
    assert error.loc == ["body", wire]
    assert wire in error.msg
    assert svix.message.list(app.id).data == []  # refused, not stored without it
