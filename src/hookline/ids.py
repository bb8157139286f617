"""Prefixed, time-sortable identifiers.

Ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford base32) behind a resource
prefix, so they sort by creation time; list paging relies on that ordering.
"""

from __future__ import annotations

import base64
import os
import random
import time

APP = "app"
ENDPOINT = "ep"
MESSAGE = "msg"
ATTEMPT = "atmpt"
TOKEN = "tok"  # noqa: S105  (an id prefix, not a secret)
ORG = "org"


# The random part comes from a generator seeded once per process from the OS. ULID() reads
# os.urandom for every id, a system call that also releases the GIL; on the ingest and delivery
# paths that was a thread switch per id. Ids need uniqueness, not secrecy: nothing is
# authorised by knowing one, and 80 bits per millisecond keep collisions out of reach.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))  # no shared sequence


# ULID text is the 128 bits in Crockford base32, 26 characters with two zero bits in front.
# The standard library's base32 (in C) gives the same digits in another alphabet once the value
# is padded to 160 bits; dropping the six all-zero digits leaves the ULID's 26.
_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)
_PAD = b"\0\0\0\0"


def new(prefix: str) -> str:
    """Return a new id such as ``msg_01JD...``."""
    millis = time.time_ns() // 1_000_000
    raw = millis.to_bytes(6, "big") + _random.getrandbits(80).to_bytes(10, "big")
    return f"{prefix}_{base32_of(raw)}"


def base32_of(raw: bytes) -> str:
    """The 26-character ULID text of 16 bytes."""
    return base64.b32encode(_PAD + raw)[6:].translate(_CROCKFORD).decode()


def has_prefix(value: str, prefix: str) -> bool:
    """True when ``value`` looks like an id of this resource (used to tell ids from uids)."""
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
