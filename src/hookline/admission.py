"""Which due tasks may start now: one claim's per-endpoint bookkeeping, shared by every store.

A task may start only if its endpoint has a free in-flight slot at the claimer
(``ClaimPolicy``), a token in its rate-limit bucket (``ratelimit``) and a closed circuit or a
probe due (``circuit``). The store builds one ``Admission`` per claim transaction, asks
``admit`` for each due task in due order, and writes ``changed()`` back in the same
transaction. Pure: the clock and the stored state are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from msgspec.structs import replace

from hookline import circuit, ratelimit
from hookline.models import (
    DEFER_CIRCUIT_OPEN,
    DEFER_ENDPOINT_BUSY,
    DEFER_RATE_LIMITED,
    ClaimPolicy,
    Endpoint,
    EndpointHealth,
)


def rate_of(endpoint: Endpoint) -> float | None:
    """Messages per second the endpoint accepts (``rateLimit``, alias ``throttleRate``)."""
    rate = endpoint.rate_limit if endpoint.rate_limit is not None else endpoint.throttle_rate
    return float(rate) if rate is not None and rate > 0 else None


class Admission:
    def __init__(
        self,
        policy: ClaimPolicy,
        now: float,
        lease_seconds: float,
        healths: Mapping[str, EndpointHealth],
    ) -> None:
        self._policy = policy
        self._now = now
        self._lease_seconds = lease_seconds
        self._healths = dict(healths)
        self._left: dict[str, int] = {}  # endpoint id -> deliveries it may still start
        self._taken: dict[str, int] = {}
        self._rates: dict[str, float] = {}
        self._why: dict[str, str] = {}  # endpoint id -> the gate that bounds it (DEFER_*)
        self.total = 0

    @property
    def limit(self) -> int:
        return self._policy.limit

    def learn(self, healths: Mapping[str, EndpointHealth]) -> None:
        """Add stored states of endpoints first seen after the claim began."""
        self._healths.update(healths)

    def remaining(self, endpoint: Endpoint) -> int:
        """How many more of ``endpoint``'s tasks this claim may hand out."""
        left = self._left.get(endpoint.id)
        if left is None:
            # The smallest gate decides, and names the reason once it is used up; on a tie the
            # circuit wins over the bucket, and both over the claimer's slots.
            left, why = self._policy.free(endpoint.id), DEFER_ENDPOINT_BUSY
            health = self._healths.get(endpoint.id)
            rate = rate_of(endpoint)
            if rate is not None:
                self._rates[endpoint.id] = rate
                tokens = None if health is None else health.tokens
                at = None if health is None else health.tokens_at
                allowed = ratelimit.allowance(tokens, at, rate, self._now)
                if allowed <= left:
                    left, why = allowed, DEFER_RATE_LIMITED
            gate = circuit.admits(health, self._now)
            if gate is not None and gate <= left:
                left, why = gate, DEFER_CIRCUIT_OPEN
            self._left[endpoint.id] = left
            self._why[endpoint.id] = why
        return max(0, min(left, self._policy.limit - self.total))

    def admit(self, endpoint: Endpoint) -> bool:
        """Take one slot of ``endpoint`` if it has one; False means the task must wait."""
        if self.remaining(endpoint) <= 0:
            return False
        self._left[endpoint.id] -= 1
        self._taken[endpoint.id] = self._taken.get(endpoint.id, 0) + 1
        self.total += 1
        return True

    def blocked(self) -> set[str]:
        """Endpoints seen in this claim that may start nothing more."""
        return {e for e, left in self._left.items() if left <= 0}

    def closed(self) -> dict[str, str]:
        """Endpoints seen in this claim that may start nothing more, each with the reason.

        Not those the claim's own ``limit`` cut short: a full claimer defers nothing.
        """
        return {e: self._why[e] for e, left in self._left.items() if left <= 0}

    def changed(self) -> list[EndpointHealth]:
        """States to store: spent buckets and probes started."""
        out = []
        for endpoint_id, taken in self._taken.items():
            health = self._healths.get(endpoint_id) or EndpointHealth(endpoint_id=endpoint_id)
            rate = self._rates.get(endpoint_id)
            if rate is not None:
                tokens = ratelimit.spend(health.tokens, health.tokens_at, rate, self._now, taken)
                health = replace(health, tokens=tokens, tokens_at=self._now)
            elif circuit.admits(health, self._now) != 1:
                continue  # neither rate-limited nor probing: nothing to remember
            if circuit.admits(health, self._now) == 1:
                health = circuit.probe_started(health, self._now, self._lease_seconds)
            out.append(health)
        return out


def blocked_before(policy: ClaimPolicy, stored: Iterable[tuple[str, bool]]) -> dict[str, str]:
    """The endpoints that may start nothing as a claim begins, each with the reason.

    The claimer's full endpoints (``policy``), then what the store found blocked (``stored``:
    endpoint id and whether its circuit is cooling down, else its bucket is empty), which wins
    as ``Admission.remaining`` would decide.
    """
    reasons = {
        e: DEFER_ENDPOINT_BUSY for e, n in policy.in_flight.items() if n >= policy.endpoint_slots
    }
    for endpoint_id, cooling in stored:
        reasons[endpoint_id] = DEFER_CIRCUIT_OPEN if cooling else DEFER_RATE_LIMITED
    return reasons


def tally(
    policy: ClaimPolicy, reasons: Mapping[str, str], counts: Iterable[tuple[str, int]]
) -> None:
    """Add each held-back endpoint's count of waiting tasks to ``policy.deferred``."""
    deferred = policy.deferred
    for endpoint_id, n in counts:
        reason = reasons.get(endpoint_id)
        if reason is not None and n > 0:
            deferred[reason] = deferred.get(reason, 0) + n
