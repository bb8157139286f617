"""Acceptance 2: messages reach exactly the endpoints whose filters select them, signed."""

from __future__ import annotations

import json
from collections.abc import Callable

from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.api import ApplicationOut, EndpointIn, MessageIn, Svix
from svix.webhooks import Webhook as SvixWebhook

from tests.support.receiver import Receiver
from tests.support.sdk import unique


def test_messages_reach_exactly_the_endpoints_their_filters_select(
    app: ApplicationOut, svix: Svix, receiver: Receiver, new_event_type: Callable[[str], str]
) -> None:
    created, paid = new_event_type("order.created"), new_event_type("order.paid")
    eu, us = unique("eu"), unique("us")
    by_type_path, by_channel_path = receiver.new_path("by-type"), receiver.new_path("by-channel")
    by_type = svix.endpoint.create(
        app.id, EndpointIn(url=receiver.url(by_type_path), event_types=[created])
    )
    by_channel = svix.endpoint.create(
        app.id, EndpointIn(url=receiver.url(by_channel_path), channels=[eu])
    )

    # every combination of type and channels; the filters decide independently of each other
    cases: list[tuple[str, list[str] | None]] = [
        (created, None),
        (created, [eu]),
        (created, [us]),
        (paid, None),
        (paid, [eu]),
        (paid, [us]),
        (paid, [us, eu]),
    ]
    payloads: dict[str, dict[str, object]] = {}
    routes: dict[str, set[str]] = {}
    for n, (event_type, channels) in enumerate(cases):
        payload = {"case": n, "type": event_type, "channels": channels}
        msg = svix.message.create(
            app.id, MessageIn(event_type=event_type, payload=payload, channels=channels)
        )
        payloads[msg.id] = payload
        routes[msg.id] = set()
        if event_type == created:
            routes[msg.id].add(by_type.id)
        if channels is not None and eu in channels:
            routes[msg.id].add(by_channel.id)

    expected = {
        by_type_path: {m for m, eps in routes.items() if by_type.id in eps},
        by_channel_path: {m for m, eps in routes.items() if by_channel.id in eps},
    }
    assert len(expected[by_type_path]) == 3 and len(expected[by_channel_path]) == 3

    # Routing is decided when a message is accepted: what the API lists as a message's
    # destinations is everything that will ever be attempted, so nothing else can arrive later.
    for msg_id, endpoint_ids in routes.items():
        destinations = svix.message_attempt.list_attempted_destinations(app.id, msg_id).data
        assert {d.id for d in destinations} == endpoint_ids, payloads[msg_id]

    secrets = {
        by_type_path: svix.endpoint.get_secret(app.id, by_type.id).key,
        by_channel_path: svix.endpoint.get_secret(app.id, by_channel.id).key,
    }
    for path, msg_ids in expected.items():
        received = receiver.wait_for(path, len(msg_ids))
        receiver.assert_no_more(path, len(msg_ids), seconds=0.3)
        assert sorted(r.headers["webhook-id"] for r in received) == sorted(msg_ids)
        for r in received:
            msg_id = r.headers["webhook-id"]
            assert r.method == "POST"
            assert r.headers["user-agent"].startswith("hookline/")
            assert r.headers["content-type"] == "application/json"
            assert json.loads(r.body) == payloads[msg_id]
            # Standard Webhooks and the svix library both accept the signature (no exception)
            StandardWebhook(secrets[path]).verify(r.body, r.headers)
            SvixWebhook(secrets[path]).verify(r.body, r.headers)

    others = [r.path for r in receiver.requests() if r.headers.get("webhook-id") in payloads]
    assert sorted(others) == sorted(
        [by_type_path] * len(expected[by_type_path])
        + [by_channel_path] * len(expected[by_channel_path])
    )
