"""Standard Webhooks v1 signatures (the scheme Svix uses).

A signature is ``v1,`` followed by the base64 HMAC-SHA256 of
``"{msg_id}.{timestamp}.{body}"`` keyed with the decoded endpoint secret.
Several signatures may be sent in one header, separated by spaces, so that a
receiver keeps verifying while a secret is being rotated.

This module is pure: no I/O, no clock. Callers pass the timestamp in.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = [
    "MIN_SECRET_BYTES",
    "SECRET_BYTES",
    "SECRET_PATTERN",
    "SECRET_PREFIX",
    "decode_secret",
    "generate_secret",
    "sign",
    "signature_header",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
# The shape Svix accepts for user-supplied endpoint secrets.
SECRET_PATTERN = r"^(whsec_)?[a-zA-Z0-9+/=]{32,100}$"  # noqa: S105 - a regex
SECRET_BYTES = 24  # bytes of entropy in a generated secret (Svix's default)
# Shorter keys are rejected: below 128 bits an HMAC key is guessable in
# principle, and nothing legitimate hands out such short secrets.
MIN_SECRET_BYTES = 16  # bytes

_VERSION_PREFIX = "v1,"


def generate_secret() -> str:
    """Return a fresh endpoint secret: ``whsec_`` + base64 of 24 random bytes."""
    raw = secrets.token_bytes(SECRET_BYTES)
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """Return the HMAC key encoded in ``secret``.

    The ``whsec_`` prefix is optional. Raises ``ValueError`` when the rest is
    not strict base64 or decodes to fewer than ``MIN_SECRET_BYTES`` bytes.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    if not encoded:
        raise ValueError("webhook secret is empty")
    try:
        # validate=True: silently skipping stray characters would turn a typo
        # into a different key and every signature would mismatch.
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(
            f"webhook secret is not valid base64 ({exc}); "
            f"expected a value matching {SECRET_PATTERN}"
        ) from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"webhook secret decodes to {len(key)} bytes; "
            f"at least {MIN_SECRET_BYTES} bytes are required"
        )
    return key


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    # Built once per message and shared by every key in signature_header.
    return f"{msg_id}.{timestamp}.".encode() + body


def _sign_content(key: bytes, content: bytes) -> str:
    # A copy of a keyed HMAC saves the key schedule and the digest lookup, and for payloads
    # under 2 KiB runs without releasing the GIL. hmac.digest() always releases it, which in a
    # busy event loop with store threads waiting turned every signature into a thread switch.
    mac = _keyed(key).copy()
    mac.update(content)
    return _VERSION_PREFIX + base64.b64encode(mac.digest()).decode("ascii")


@functools.lru_cache(maxsize=4096)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of one message under one key.

    ``timestamp`` is whole seconds since the epoch, exactly as sent in the
    ``webhook-timestamp`` header.
    """
    return _sign_content(key, _signed_content(msg_id, timestamp, body))


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` header value: one entry per key.

    Entries are space-separated and keep the order of ``keys``, so the
    newest secret can be listed first during a rotation.
    """
    content = _signed_content(msg_id, timestamp, body)
    return " ".join(_sign_content(key, content) for key in keys)
