"""Prefixed, time-sortable identifiers.

Ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford base32) behind a resource
prefix, so they sort by creation time; list paging relies on that ordering.
"""

from __future__ import annotations

import os
import random
import time

from ulid import ULID

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


def new(prefix: str) -> str:
    """Return a new id such as ``msg_01JD...``."""
    millis = time.time_ns() // 1_000_000
    raw = millis.to_bytes(6, "big") + _random.getrandbits(80).to_bytes(10, "big")
    return f"{prefix}_{ULID.from_bytes(raw)}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when ``value`` looks like an id of this resource (used to tell ids from uids)."""
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
