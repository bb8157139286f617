"""How the SQLite store picks the tasks a claim hands out (see ``SqliteStore.claim_due``).

The fast path reads the oldest due tasks in due order (``claim_select``); ``per_endpoint`` finds
work endpoint by endpoint when some endpoints are blocked, so that their backlog is never read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from hookline import admission as admission_
from hookline.admission import Admission
from hookline.models import ClaimPolicy, Endpoint, EndpointHealth
from hookline.store import queries, sqlite_rows

Q = queries.load("sqlite")
Due = tuple[str, str, int, int, int, float]  # msg_id, endpoint_id, attempts, lease, trigger, due


def admit(
    due: list[Any], endpoints: dict[str, Endpoint], admission: Admission
) -> tuple[list[Due], list[Due], bool]:
    """Split due rows into those that may go now and those of disabled endpoints."""
    chosen: list[Due] = []
    disabled: list[Due] = []
    held_back = False
    for row in due:
        endpoint = endpoints[row[1]]
        if endpoint.disabled:
            disabled.append(row)
        elif admission.admit(endpoint):
            chosen.append(row)
        else:
            held_back = True
    return chosen, disabled, held_back


def per_endpoint(
    c: sqlite3.Connection,
    now: float,
    admission: Admission,
    endpoints: dict[str, Endpoint],
    chosen: list[Due],
    blocked: set[str],
    disabled: list[Due],
) -> list[Due]:
    """Due tasks of the endpoints that may send, read endpoint by endpoint.

    Costs one index seek per endpoint with waiting work (``claim_waiting_endpoints``, a skip
    scan), then one short range read per endpoint that gets tasks; the blocked endpoints' rows
    are not read at all. The batch is shared out fairly first (an equal share each, oldest
    endpoint first), then what is left goes to those that have more.
    """
    waiting = sorted(
        (first_due, endpoint_id)
        for endpoint_id, first_due in c.execute(Q["claim_waiting_endpoints"])
        if first_due is not None and first_due <= now and endpoint_id not in blocked
    )
    if not waiting:
        return []
    unknown = {e for _, e in waiting if e not in endpoints}
    if unknown:
        endpoints.update(sqlite_rows.endpoints_by_id(c, unknown))
        admission.learn(sqlite_rows.health_by_id(c, unknown))
    active: list[Endpoint] = []
    for _, endpoint_id in waiting:
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None:
            continue
        if endpoint.disabled:
            disabled.extend(
                c.execute(
                    Q["claim_select_endpoint"],
                    {"endpoint_id": endpoint_id, "now": now, "limit": admission.limit},
                ).fetchall()
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
            rows = c.execute(
                Q["claim_select_endpoint"],
                {"endpoint_id": endpoint.id, "now": now, "limit": room + len(taken)},
            ).fetchall()
            for row in rows:
                key = (row[0], row[1])
                if key not in taken and admission.admit(endpoint):
                    taken.add(key)
                    more.append(row)
    return more


def store_health(c: sqlite3.Connection, healths: Sequence[EndpointHealth]) -> None:
    # Back to the default state (healthy, no bucket): the row goes, so that the table holds
    # only the endpoints that are failing or rate limited, which every claim reads.
    gone = [(h.endpoint_id,) for h in healths if h.is_default]
    kept = [sqlite_rows.health_row(h) for h in healths if not h.is_default]
    if gone:
        c.executemany(Q["health_reset"], gone)
    if kept:
        c.executemany(Q["health_upsert"], kept)


def count_deferred(
    c: sqlite3.Connection, now: float, policy: ClaimPolicy, reasons: Mapping[str, str]
) -> None:
    """Count into ``policy.deferred`` the held-back endpoints' tasks due since the last claim.

    Runs after the claim leased its tasks, so that only the ones left waiting are counted.
    """
    if not reasons or policy.deferred_since is None:
        return
    counts = c.execute(
        Q["claim_deferred_count"],
        {"endpoints": json.dumps(list(reasons)), "since": policy.deferred_since, "now": now},
    ).fetchall()
    admission_.tally(policy, reasons, counts)
