"""Claims and completions of the PostgreSQL store, each run inside one transaction.

The same algorithm as the SQLite store (``sqlite.SqliteStore.claim_due``, ``sqlite_claiming``),
made safe for claimers in several processes at once:

- Due tasks are read ``FOR UPDATE SKIP LOCKED``: a row another claimer's transaction holds is
  skipped, never waited for and never handed out twice; once that claim commits the row is
  sending with a later ``due_at`` and no longer due.
- The shared state that gates sending (``endpoint_health``: the rate-limit bucket, the circuit)
  is read ``FOR UPDATE``, so two claimers spending one endpoint's bucket take turns and the
  second sees what the first spent. A rate-limited endpoint that has no row yet (a full
  bucket) gets one first (``health_ensure``), since a missing row cannot be locked; rows left
  in the default state are deleted again before commit. Completions lock the same rows before
  folding outcomes into them, so neither overwrites the other's change.
- Rows are locked in id order within a statement; a claim that finds more endpoints later
  (``per_endpoint``) may still meet another transaction in the opposite order, which
  PostgreSQL answers with a deadlock error: the store runs the transaction again
  (``postgres_pool.Database._retrying``).

Per-endpoint slots (``ClaimPolicy.endpoint_slots``) are per claimer, as in every store: each
process bounds what it holds open itself, so N worker processes may have N times the slots
in flight towards one endpoint; the bucket and the circuit are exact across processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hookline import admission as admission_
from hookline.admission import Admission, rate_of
from hookline.circuit import CircuitPolicy, after_attempts, gone_event
from hookline.models import (
    Claim,
    ClaimPolicy,
    Completion,
    Endpoint,
    EndpointHealth,
    HealthChange,
    HealthEvent,
    Message,
    MessageStatus,
    Trigger,
)
from hookline.store import postgres_rows as rows
from hookline.store import queries, sqlite_claiming  # admit: the same split of due rows

Q = queries.load("postgres")
Due = Any  # an asyncpg Record: msg_id, endpoint_id, attempts, lease, trigger, due_at


async def claim(c: Any, now: float, policy: ClaimPolicy, lease_seconds: float) -> list[Claim]:
    """Lease what may be sent now, oldest due first (``Store.claim_due``), on connection ``c``.

    Must run inside a transaction: the row locks it takes are what keep claimers apart.
    """
    policy.deferred.clear()  # a transaction run again after a deadlock counts afresh
    held = admission_.blocked_before(
        policy, [(r[0], bool(r[1])) for r in await c.fetch(Q["claim_blocked_endpoints"], now)]
    )
    blocked = set(held)
    endpoints: dict[str, Endpoint] = {}
    admission = Admission(policy, now, lease_seconds, {})
    disabled: list[Due] = []
    healths: dict[str, EndpointHealth] = {}
    if blocked:
        chosen = await _per_endpoint(c, now, admission, endpoints, healths, [], blocked, disabled)
    else:
        due = await c.fetch(Q["claim_select"], now, policy.limit)
        if not due:
            return []
        endpoints = await endpoints_by_id(c, {r[1] for r in due})
        healths.update(await lock_health(c, endpoints.values()))
        admission.learn(healths)
        chosen, disabled, held_back = sqlite_claiming.admit(list(due), endpoints, admission)
        if held_back and len(due) == policy.limit and admission.total < policy.limit:
            # something in the batch had to wait after all: look past it
            more = await _per_endpoint(
                c, now, admission, endpoints, healths, chosen, admission.blocked(), disabled
            )
            chosen = chosen + more
    chosen.sort(key=lambda r: (r[5], r[0], r[1]))
    if disabled:  # nothing would ever send them
        await c.execute(
            Q["delivery_fail_disabled_unleased"],
            now,
            [r[0] for r in disabled],
            [r[1] for r in disabled],
            [r[3] for r in disabled],
        )
    await store_health(c, admission.changed(), healths)
    if chosen:
        await c.execute(
            Q["claim_lease"],
            now + lease_seconds,
            now,
            [r[0] for r in chosen],
            [r[1] for r in chosen],
        )
    if policy.deferred_since is not None:
        await _count_deferred(c, now, policy, {**held, **admission.closed()})
    if not chosen:
        return []
    messages = await messages_by_id(c, {r[0] for r in chosen})
    return [
        Claim(
            message=messages[r[0]],
            endpoint=endpoints[r[1]],
            attempts=r[2],
            lease=r[3] + 1,
            trigger=Trigger(r[4]),
        )
        for r in chosen
    ]


async def _count_deferred(c: Any, now: float, policy: ClaimPolicy, reasons: dict[str, str]) -> None:
    """``sqlite_claiming.count_deferred``: after claim_lease, so only what waits is counted."""
    if not reasons or policy.deferred_since is None:
        return
    counts = await c.fetch(Q["claim_deferred_count"], list(reasons), policy.deferred_since, now)
    admission_.tally(policy, reasons, [(r[0], int(r[1])) for r in counts])


async def _per_endpoint(
    c: Any,
    now: float,
    admission: Admission,
    endpoints: dict[str, Endpoint],
    healths: dict[str, EndpointHealth],
    chosen: list[Due],
    blocked: set[str],
    disabled: list[Due],
) -> list[Due]:
    """Due tasks of the endpoints that may send, read endpoint by endpoint.

    Keep in step with ``sqlite_claiming.per_endpoint``: one index seek per endpoint with
    waiting work, then one short range read per endpoint that gets tasks; the blocked
    endpoints' rows are not read at all. The batch is shared out fairly first (an equal share
    each, oldest endpoint first), then what is left goes to those that have more.
    """
    waiting = sorted(
        (first_due, endpoint_id)
        for endpoint_id, first_due in await c.fetch(Q["claim_waiting_endpoints"])
        if first_due is not None and first_due <= now and endpoint_id not in blocked
    )
    if not waiting:
        return []
    unknown = {e for _, e in waiting if e not in endpoints}
    if unknown:
        found = await endpoints_by_id(c, unknown)
        endpoints.update(found)
        learned = await lock_health(c, found.values())
        healths.update(learned)
        admission.learn(learned)
    active: list[Endpoint] = []
    for _, endpoint_id in waiting:
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None:
            continue
        if endpoint.disabled:
            disabled.extend(
                await c.fetch(Q["claim_select_endpoint"], endpoint_id, now, admission.limit)
            )
        else:
            active.append(endpoint)
    taken = {(r[0], r[1]) for r in chosen}
    more: list[Due] = []
    share = max(1, -(-(admission.limit - admission.total) // max(1, len(active))))
    for fair in (True, False):
        for endpoint in active:
            room = admission.remaining(endpoint)
            if fair:
                room = min(room, share)
            if room <= 0:
                if admission.total >= admission.limit:
                    return more
                continue
            # rows this transaction already holds are not skipped: read past them
            found_rows = await c.fetch(
                Q["claim_select_endpoint"], endpoint.id, now, room + len(taken)
            )
            for row in found_rows:
                key = (row[0], row[1])
                if key not in taken and admission.admit(endpoint):
                    taken.add(key)
                    more.append(row)
    return more


async def complete(
    c: Any, completions: Sequence[Completion], now: float, circuit: CircuitPolicy | None
) -> list[HealthEvent]:
    """Record attempts, move tasks on (fenced by lease), fold outcomes into endpoint health.

    ``Store.complete`` on connection ``c``, inside a transaction; keep in step with
    ``SqliteStore.complete``.
    """
    if not completions:
        return []
    policy = circuit or CircuitPolicy()
    outcomes: dict[str, list[tuple[bool, float]]] = {}
    for done in completions:
        a = done.attempt
        outcomes.setdefault(a.endpoint_id, []).append(
            (a.status == MessageStatus.SUCCESS, a.created_at)
        )
    await c.executemany(Q["attempt_insert"], [rows.attempt_args(d.attempt) for d in completions])
    updates = [
        (
            int(d.next_status),
            d.next_attempt_at,
            now,
            d.attempt.msg_id,
            d.attempt.endpoint_id,
            d.lease,
        )
        for d in completions
    ]
    plain = [u for u, d in zip(updates, completions, strict=True) if not d.disable_endpoint]
    if plain:
        await c.executemany(Q["delivery_complete"], plain)
    events: list[HealthEvent] = []
    for update, done in zip(updates, completions, strict=True):
        # rare; the endpoint is disabled only by a completion that still held its lease
        if (
            done.disable_endpoint
            and rows.rowcount(await c.execute(Q["delivery_complete"], *update))
            and rows.rowcount(await c.execute(Q["endpoint_disable"], now, done.attempt.endpoint_id))
        ):
            events.append(gone_event(done.attempt.endpoint_id, done.attempt.created_at))
    failing = sorted(e for e, seen in outcomes.items() if not all(ok for ok, _ in seen))
    if failing:
        await c.execute(Q["health_ensure"], failing)
    healths = {r[0]: rows.health(r) for r in await c.fetch(Q["health_lock"], sorted(outcomes))}
    states = {r[0]: bool(r[1]) for r in await c.fetch(Q["endpoint_states"], list(outcomes))}
    changed = []
    for endpoint_id, seen in outcomes.items():
        if endpoint_id not in states:
            continue  # deleted meanwhile
        before = healths.get(endpoint_id)
        if before is None and all(ok for ok, _ in seen):
            continue  # the common case: healthy, nothing to store
        before = before or EndpointHealth(endpoint_id=endpoint_id)
        after, changes = after_attempts(before, seen, policy, disabled=states[endpoint_id])
        if after != before:
            changed.append(after)
        for change in changes:
            if change.change is HealthChange.DISABLED:
                await c.execute(Q["endpoint_disable"], now, endpoint_id)
        events.extend(changes)
    await store_health(c, changed, healths)
    return events


async def lock_health(c: Any, endpoints: Iterable[Endpoint]) -> dict[str, EndpointHealth]:
    """Lock and read the health rows of ``endpoints``, creating those a bucket needs first."""
    wanted = list(endpoints)
    limited = sorted(e.id for e in wanted if not e.disabled and rate_of(e) is not None)
    if limited:
        await c.execute(Q["health_ensure"], limited)
    found = await c.fetch(Q["health_lock"], sorted(e.id for e in wanted))
    return {r[0]: rows.health(r) for r in found}


async def store_health(
    c: Any, healths: Sequence[EndpointHealth], locked: dict[str, EndpointHealth]
) -> None:
    """Write changed states; delete rows back in (or created in) the default state.

    The table holds only endpoints that are failing or rate limited, which every claim reads.
    """
    changed = {h.endpoint_id for h in healths}
    gone = [h.endpoint_id for h in healths if h.is_default]
    gone += [e for e, h in locked.items() if h.is_default and e not in changed]
    kept = [rows.health_args(h) for h in healths if not h.is_default]
    if gone:
        await c.execute(Q["health_reset"], sorted(gone))
    if kept:
        await c.executemany(Q["health_upsert"], kept)


async def endpoints_by_id(c: Any, wanted: set[str]) -> dict[str, Endpoint]:
    found = await c.fetch(
        f"SELECT {rows.ENDPOINT_COLUMNS} FROM endpoints WHERE id = ANY($1::text[])", list(wanted)
    )
    return {r[0]: rows.endpoint(r) for r in found}


async def messages_by_id(c: Any, wanted: set[str]) -> dict[str, Message]:
    found = await c.fetch(
        f"SELECT {rows.MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::text[])", list(wanted)
    )
    return {r[0]: rows.message(r) for r in found}
