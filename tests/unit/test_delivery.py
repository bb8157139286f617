"""The pure delivery stages: what is sent, and what an answer turns into."""

from __future__ import annotations

import base64
import time

from standardwebhooks.webhooks import Webhook

from hookline import delivery, ids
from hookline.models import Claim, Endpoint, Message, MessageStatus, SigningKey, Trigger

NOW = 1_800_000_000.0
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 24).decode()


def claim(*, keys: tuple[SigningKey, ...] = (SigningKey(secret=OLD),), attempts: int = 0) -> Claim:
    msg = Message(
        id=ids.new(ids.MESSAGE),
        app_id="app_x",
        event_type="invoice.paid",
        payload=b'{"amount": 42}',
        created_at=NOW,
    )
    ep = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id="app_x",
        url="https://example.com/hook",
        headers={"x-tenant": "42"},
        keys=keys,
        created_at=NOW,
        updated_at=NOW,
    )
    return Claim(message=msg, endpoint=ep, attempts=attempts, lease=3, trigger=Trigger.SCHEDULED)


def test_prepare_sends_the_stored_bytes_with_standard_and_svix_headers() -> None:
    c = claim()
    req = delivery.prepare(c, NOW)
    assert req.body == b'{"amount": 42}'
    assert req.url == "https://example.com/hook"
    h = req.headers
    assert h["webhook-id"] == h["svix-id"] == c.message.id
    assert h["webhook-timestamp"] == h["svix-timestamp"] == str(int(NOW))
    assert h["webhook-signature"] == h["svix-signature"]
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("hookline/")
    assert h["x-tenant"] == "42"


def test_rotated_key_signs_alongside_the_new_one_until_it_expires() -> None:
    now = time.time()  # the verifiers check the timestamp against the real clock
    keys = (SigningKey(secret=NEW), SigningKey(secret=OLD, expires_at=now + 60))
    c = claim(keys=keys)
    req = delivery.prepare(c, now)
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    for secret in (OLD, NEW):
        Webhook(secret).verify(req.body, dict(req.headers))  # raises if not signed by it
    later = delivery.prepare(c, now + 61)
    assert len(later.headers["webhook-signature"].split(" ")) == 1


def test_custom_headers_cannot_override_signature_headers() -> None:
    c = claim()
    c = Claim(
        message=c.message,
        endpoint=Endpoint(**{**_fields(c.endpoint), "headers": {"webhook-id": "forged"}}),
        attempts=0,
        lease=1,
        trigger=Trigger.SCHEDULED,
    )
    assert delivery.prepare(c, NOW).headers["webhook-id"] == c.message.id


def _fields(ep: Endpoint) -> dict[str, object]:
    return {f: getattr(ep, f) for f in ep.__struct_fields__}


def _classify(status: int, attempts: int = 0, error: str | None = None) -> delivery.Completion:
    c = claim(attempts=attempts)
    req = delivery.prepare(c, NOW)
    resp = delivery.Response(
        status=status, body="ok", retry_after=None, duration_ms=12, error=error
    )
    return delivery.classify(c, req, resp, schedule=(5.0, 60.0), now=NOW, rand=lambda: 0.5)


def test_success_records_the_attempt_and_finishes_the_task() -> None:
    done = _classify(200)
    assert done.next_status is MessageStatus.SUCCESS
    assert done.next_attempt_at is None
    assert done.attempt.status is MessageStatus.SUCCESS
    assert done.attempt.response_status_code == 200
    assert done.attempt.duration_ms == 12
    assert done.lease == 3


def test_failure_schedules_the_next_step() -> None:
    done = _classify(500, attempts=1)
    assert done.next_status is MessageStatus.PENDING
    assert done.next_attempt_at == NOW + 60.0  # rand=0.5 → no jitter
    assert done.attempt.status is MessageStatus.FAIL


def test_last_step_exhausts() -> None:
    done = _classify(500, attempts=2)
    assert done.next_status is MessageStatus.FAIL
    assert done.next_attempt_at is None


def test_gone_disables_the_endpoint() -> None:
    done = _classify(410)
    assert done.disable_endpoint
    assert done.next_status is MessageStatus.FAIL


def test_transport_error_text_is_kept_on_the_attempt() -> None:
    done = _classify(0, error="egress refused: 10.0.0.1 is a private address")
    assert done.attempt.response_status_code == 0
    assert "egress refused" in done.attempt.response
    assert done.next_status is MessageStatus.PENDING
