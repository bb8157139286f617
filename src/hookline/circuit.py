"""Circuit breaking and auto-disable per endpoint: pure state transitions over ``EndpointHealth``.

After ``failures`` consecutive failed attempts an endpoint's circuit opens: nothing is sent to
it for a cool-down (``cooldown`` seconds), then one probe goes out. A probe that succeeds closes
the circuit and the backlog flows again; one that fails doubles the cool-down, up to
``cooldown_max``. Any success closes the circuit, also one from a request that was already in
flight when it opened. An endpoint that has failed without a single success for
``disable_after`` seconds is disabled, as Svix does.

The store applies these functions inside its claim and completion transactions, so the state
is the same for every worker process on the database and survives restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from msgspec.structs import replace

from hookline.models import EndpointHealth, HealthChange, HealthEvent

DEFAULT_FAILURES = 10  # consecutive failed attempts that open the circuit
DEFAULT_COOLDOWN = 30.0  # seconds before the first probe
DEFAULT_COOLDOWN_MAX = 600.0  # seconds; the cool-down doubles up to this
DEFAULT_DISABLE_AFTER = 5 * 86400.0  # seconds of continuous failure before disabling


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    failures: int = DEFAULT_FAILURES
    cooldown: float = DEFAULT_COOLDOWN
    cooldown_max: float = DEFAULT_COOLDOWN_MAX
    disable_after: float = DEFAULT_DISABLE_AFTER


def admits(health: EndpointHealth | None, now: float) -> int | None:
    """How many deliveries the circuit lets start now: None (closed, no limit), 0 or 1 (probe)."""
    if health is None or not health.circuit_open:
        return None
    # A probe in flight holds paused_until at its lease's end, so a probe whose outcome was
    # lost (its worker crashed) is followed by another once that lease has run out.
    if health.paused_until is not None and health.paused_until > now:
        return 0
    return 1


def probe_started(health: EndpointHealth, now: float, lease_seconds: float) -> EndpointHealth:
    """Mark the probe in flight; if its outcome never comes (a crash), another may go after
    the lease, as the task itself may be claimed again then."""
    return replace(health, probing=True, paused_until=now + lease_seconds)


def after_attempts(
    health: EndpointHealth,
    outcomes: Sequence[tuple[bool, float]],
    policy: CircuitPolicy,
    *,
    disabled: bool = False,
) -> tuple[EndpointHealth, list[HealthEvent]]:
    """Apply attempt outcomes ``(succeeded, at)`` in order; return the new state and changes."""
    events: list[HealthEvent] = []
    h = health
    for succeeded, at in outcomes:
        if succeeded:
            if h.circuit_open:
                events.append(_event(h, HealthChange.CIRCUIT_CLOSED, at))
            h = replace(
                h,
                failures=0,
                failing_since=None,
                circuit_open=False,
                paused_until=None,
                cooldown=0.0,
                probing=False,
            )
            continue
        h = replace(
            h,
            failures=h.failures + 1,
            failing_since=h.failing_since if h.failing_since is not None else at,
        )
        if h.circuit_open and h.probing:
            cooldown = min(max(h.cooldown, policy.cooldown) * 2, policy.cooldown_max)
            h = replace(h, probing=False, cooldown=cooldown, paused_until=at + cooldown)
        elif not h.circuit_open and h.failures >= policy.failures:
            cooldown = min(policy.cooldown, policy.cooldown_max)
            h = replace(h, circuit_open=True, cooldown=cooldown, paused_until=at + cooldown)
            events.append(_event(h, HealthChange.CIRCUIT_OPENED, at))
        assert h.failing_since is not None
        if not disabled and at - h.failing_since >= policy.disable_after:
            disabled = True
            events.append(_event(h, HealthChange.DISABLED, at))
    return h, events


def _event(h: EndpointHealth, change: HealthChange, at: float) -> HealthEvent:
    return HealthEvent(
        endpoint_id=h.endpoint_id,
        change=change,
        at=at,
        failures=h.failures,
        failing_since=h.failing_since,
        paused_until=h.paused_until if change is HealthChange.CIRCUIT_OPENED else None,
    )


def gone_event(endpoint_id: str, at: float) -> HealthEvent:
    """The endpoint answered 410 Gone and was disabled at once."""
    return HealthEvent(
        endpoint_id=endpoint_id, change=HealthChange.DISABLED, at=at, failures=1, failing_since=at
    )
