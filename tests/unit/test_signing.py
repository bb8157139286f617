from __future__ import annotations

import re
import time

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

from hookline.signing import (
    SECRET_PATTERN,
    decode_secret,
    generate_secret,
    sign,
    signature_header,
)

# Test vector from the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_standard_webhooks_vector() -> None:
    key = decode_secret(SPEC_SECRET)
    assert sign(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_secret_prefix_is_optional() -> None:
    assert decode_secret(SPEC_SECRET.removeprefix("whsec_")) == decode_secret(SPEC_SECRET)


def test_signature_header_has_one_entry_per_key_in_order() -> None:
    first, second = decode_secret(SPEC_SECRET), decode_secret(generate_secret())
    header = signature_header([first, second], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert header.split(" ") == [
        SPEC_SIGNATURE,
        sign(second, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
    ]


def test_signature_header_with_no_keys_is_empty() -> None:
    assert signature_header([], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == ""


def _rotation_headers(secrets: list[str]) -> tuple[str, str, bytes, str]:
    msg_id = "msg_2Xl4Yv0mYj4kH0tW2uQ3bU9vRcN"
    timestamp = int(time.time())  # receivers reject timestamps > 5 min off
    body = '{"type": "invoice.paid", "data": {"amount": 1200, "note": "é"}}'.encode()
    keys = [decode_secret(s) for s in secrets]
    return msg_id, str(timestamp), body, signature_header(keys, msg_id, timestamp, body)


@pytest.mark.parametrize("which", [0, 1])
def test_standardwebhooks_verifies_with_either_secret(which: int) -> None:
    secrets = [generate_secret(), SPEC_SECRET]
    msg_id, timestamp, body, signature = _rotation_headers(secrets)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    payload = StandardWebhook(secrets[which]).verify(body, headers)
    assert payload["data"]["amount"] == 1200


@pytest.mark.parametrize("which", [0, 1])
def test_svix_verifies_with_either_secret(which: int) -> None:
    secrets = [generate_secret(), SPEC_SECRET]
    msg_id, timestamp, body, signature = _rotation_headers(secrets)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": signature,
    }
    SvixWebhook(secrets[which]).verify(body, headers)  # raises on mismatch


def test_svix_rejects_a_secret_that_was_not_used() -> None:
    msg_id, timestamp, body, signature = _rotation_headers([generate_secret()])
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": signature,
    }
    with pytest.raises(Exception, match="No matching signature"):
        SvixWebhook(generate_secret()).verify(body, headers)


def test_generated_secrets_are_well_formed_and_distinct() -> None:
    generated = {generate_secret() for _ in range(20)}
    assert len(generated) == 20
    for secret in generated:
        assert re.fullmatch(SECRET_PATTERN, secret)
        assert len(decode_secret(secret)) == 24


def test_secret_pattern_is_the_svix_pattern() -> None:
    assert SECRET_PATTERN == r"^(whsec_)?[a-zA-Z0-9+/=]{32,100}$"
    assert re.fullmatch(SECRET_PATTERN, SPEC_SECRET)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "empty"),
        ("whsec_", "empty"),
        ("whsec_not base64!!", "not valid base64"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "not valid base64"),  # padding
        ("whsec_MfKQ-r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not valid base64"),  # url-safe
        ("whsec_c2hvcnQ=", "decodes to 5 bytes"),
        ("whsec_AAAAAAAAAAAAAAAAAAAA", "decodes to 15 bytes"),
    ],
)
def test_bad_secrets_raise_value_error(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_secret(secret)


def test_sixteen_byte_secret_is_accepted() -> None:
    assert len(decode_secret("whsec_AAAAAAAAAAAAAAAAAAAAAA==")) == 16
