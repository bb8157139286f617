"""Retention on PostgreSQL: expiring payloads and pruning messages, one bounded batch at a time.

Each function runs inside one transaction of ``PostgresStore`` and touches at most ``limit``
messages. Candidates are locked with ``FOR UPDATE SKIP LOCKED``: several cleaners (one per
worker process, on any host) share the work instead of queueing on each other, and a message
a resend holds (``message_resendable`` locks it ``FOR SHARE``) is passed over. The change that
follows is a statement of its own, so under READ COMMITTED it sees every delivery committed
before the locks were taken: a payload is never emptied, nor a message deleted, from under a
delivery that became pending meanwhile.

Freed space is left to autovacuum, which makes dead rows' space reusable by later inserts
(the table does not shrink; see docs/retention.md).
"""

from __future__ import annotations

from typing import Any

from hookline.store import queries
from hookline.store.base import (
    EXPUNGED_RESPONSE,
    ID_CLOCK_SLACK_SECONDS,
    ExpiryBatch,
    PruneBatch,
    message_id_floor,
)

Q = queries.load("postgres")
NEVER = -1e18  # an ``after`` before every expires_at


async def expire(
    c: Any, now: float, default_seconds: float, limit: int, after: float | None
) -> ExpiryBatch:
    """Empty the due payloads among the next ``limit`` (see ``Store.expire_payloads``)."""
    await c.execute(Q["retention_fill"], default_seconds, limit)
    due = await c.fetch(Q["retention_due"], now, NEVER if after is None else after, limit)
    if not due:
        return ExpiryBatch()
    expired = [r[0] for r in await c.fetch(Q["retention_expire"], [r[0] for r in due])]
    if expired:
        await c.execute(Q["retention_expunge_attempts"], expired, EXPUNGED_RESPONSE)
    return ExpiryBatch(
        expired=len(expired),
        skipped=len(due) - len(expired),
        cursor=float(due[-1][1]) if len(due) == limit else None,
    )


async def prune(
    c: Any, before: float, now: float, limit: int, include_pending: bool, after: str | None
) -> PruneBatch:
    """Delete the next ``limit`` messages created before ``before`` that nothing still sends."""
    bound = message_id_floor(before + ID_CLOCK_SLACK_SECONDS)
    old = [r[0] for r in await c.fetch(Q["prune_candidates"], after or "", bound, before, limit)]
    if not old:
        return PruneBatch()
    gone = [r[0] for r in await c.fetch(Q["prune_delete"], old, not include_pending, now)]
    if gone:
        await c.execute(Q["prune_attempts"], gone)
    return PruneBatch(
        deleted=len(gone),
        skipped=len(old) - len(gone),
        cursor=old[-1] if len(old) == limit else None,
    )


async def count_before(c: Any, before: float) -> int:
    """Messages created before ``before``, found by id as ``prune`` finds them."""
    bound = message_id_floor(before + ID_CLOCK_SLACK_SECONDS)
    return int(await c.fetchval(Q["prune_count"], bound, before))
