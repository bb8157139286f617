"""Small readers over the svix SDK for tests: unique names, attempts in order, delivery status."""

from __future__ import annotations

import uuid

from svix.api import MessageAttemptOut, MessageEndpointOut, MessageStatus, Svix

from tests.support.wait import until


def unique(label: str) -> str:
    """``label`` plus a random suffix, valid as a uid, event type or channel name."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def attempts(svix: Svix, app_id: str, msg_id: str) -> list[MessageAttemptOut]:
    """Every attempt made for a message, oldest first."""
    listed = svix.message_attempt.list_by_msg(app_id, msg_id).data
    return sorted(listed, key=lambda a: a.timestamp)


def wait_attempts(svix: Svix, app_id: str, msg_id: str, count: int) -> list[MessageAttemptOut]:
    """Wait until ``count`` attempts are recorded (the receiver sees a request a moment earlier)."""
    return until(
        lambda: attempts(svix, app_id, msg_id),
        lambda got: len(got) >= count,
        what=f"{count} recorded attempt(s) of {msg_id}",
    )


def destinations(svix: Svix, app_id: str, msg_id: str) -> dict[str, MessageEndpointOut]:
    """The message's delivery state towards each endpoint it was routed to, by endpoint id."""
    listed = svix.message_attempt.list_attempted_destinations(app_id, msg_id).data
    return {d.id: d for d in listed}


def wait_status(
    svix: Svix, app_id: str, msg_id: str, endpoint_id: str, status: MessageStatus
) -> MessageEndpointOut:
    """Wait until the message's status towards the endpoint is ``status``."""
    got = until(
        lambda: destinations(svix, app_id, msg_id).get(endpoint_id),
        lambda d: d is not None and d.status == status,
        what=f"{msg_id} to reach status {status.name} towards {endpoint_id}",
    )
    assert got is not None
    return got
