"""Retention on SQLite: expiring payloads and pruning messages, one bounded batch at a time.

Each function here is one operation of the writer (``SqliteStore`` runs it with ``bulk=True``,
on the writer thread): it reads at most ``limit`` candidates from an index and changes at most
those, so a batch holds the one write lock for a bounded time (measured: 33 ms to prune a
batch of 1,000 delivered messages) and the ingest and claims queued behind it wait that long at
most. The pauses between batches are the caller's (``retention.Cleaner``, ``hookline prune``).

Why the candidates are read inside the write transaction and not on a reader first: the checks
that decide (no delivery pending or being sent) must be true when the change commits, and a
bounded index range costs the writer less than the second round trip would.

Pages that pruning empties go to SQLite's freelist (``auto_vacuum`` stays NONE) and later
inserts reuse them, so under steady traffic the file stops growing once pruning deletes as much
as comes in; it never shrinks by itself (``VACUUM`` does that, offline). Emptying a payload small
enough to live inside its row's page frees space only inside that page, which appended rows
never reuse (measured in docs/retention.md).
"""

from __future__ import annotations

import sqlite3

import msgspec

from hookline.store import queries
from hookline.store.base import (
    EXPUNGED_RESPONSE,
    ID_CLOCK_SLACK_SECONDS,
    ExpiryBatch,
    PruneBatch,
    message_id_floor,
)

Q = queries.load("sqlite")
NEVER = -1e18  # an ``after`` before every expires_at
_ids = msgspec.json.Encoder()


def expire(
    c: sqlite3.Connection, now: float, default_seconds: float, limit: int, after: float | None
) -> ExpiryBatch:
    """Empty the due payloads among the next ``limit`` (see ``Store.expire_payloads``)."""
    c.execute(Q["retention_fill"], {"seconds": default_seconds, "limit": limit})
    due = c.execute(
        Q["retention_due"], {"now": now, "after": NEVER if after is None else after, "limit": limit}
    ).fetchall()
    if not due:
        return ExpiryBatch()
    ids = _ids.encode([msg_id for msg_id, _ in due])
    expired = [r[0] for r in c.execute(Q["retention_expire"], {"ids": ids}).fetchall()]
    if expired:
        c.execute(
            Q["retention_expunge_attempts"],
            {"ids": _ids.encode(expired), "response": EXPUNGED_RESPONSE},
        )
    return ExpiryBatch(
        expired=len(expired),
        skipped=len(due) - len(expired),
        cursor=float(due[-1][1]) if len(due) == limit else None,
    )


def prune(
    c: sqlite3.Connection,
    before: float,
    now: float,
    limit: int,
    include_pending: bool,
    after: str | None,
) -> PruneBatch:
    """Delete the next ``limit`` messages created before ``before`` that nothing still sends."""
    old = [
        r[0]
        for r in c.execute(
            Q["prune_candidates"],
            {
                "after": after or "",
                "bound": message_id_floor(before + ID_CLOCK_SLACK_SECONDS),
                "before": before,
                "limit": limit,
            },
        ).fetchall()
    ]
    if not old:
        return PruneBatch()
    gone = [
        r[0]
        for r in c.execute(
            Q["prune_delete"],
            {"ids": _ids.encode(old), "strict": not include_pending, "now": now},
        ).fetchall()
    ]
    if gone:
        c.execute(Q["prune_attempts"], {"ids": _ids.encode(gone)})
    return PruneBatch(
        deleted=len(gone),
        skipped=len(old) - len(gone),
        cursor=old[-1] if len(old) == limit else None,
    )


def count_before(c: sqlite3.Connection, before: float) -> int:
    """Messages created before ``before``, found by id as ``prune`` finds them."""
    bound = message_id_floor(before + ID_CLOCK_SLACK_SECONDS)
    return int(c.execute(Q["prune_count"], {"bound": bound, "before": before}).fetchone()[0])
