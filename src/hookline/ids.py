"""Prefixed, time-sortable identifiers.

Ids are ULIDs (48-bit millisecond time + 80 random bits, Crockford base32) behind a resource
prefix, so they sort by creation time; list paging relies on that ordering.
"""

from __future__ import annotations

from ulid import ULID

APP = "app"
ENDPOINT = "ep"
MESSAGE = "msg"
ATTEMPT = "atmpt"
TOKEN = "tok"  # noqa: S105  (an id prefix, not a secret)
ORG = "org"


def new(prefix: str) -> str:
    """Return a new id such as ``msg_01JD...``."""
    return f"{prefix}_{ULID()}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when ``value`` looks like an id of this resource (used to tell ids from uids)."""
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
