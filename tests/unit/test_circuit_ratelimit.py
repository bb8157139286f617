"""Pure rules of rate limiting, circuit breaking and admission, with an explicit clock."""

from __future__ import annotations

import pytest

from hookline import admission, circuit, ratelimit
from hookline.models import ClaimPolicy, Endpoint, EndpointHealth, HealthChange

POLICY = circuit.CircuitPolicy(failures=3, cooldown=30.0, cooldown_max=600.0, disable_after=100.0)
T0 = 1_800_000_000.0  # epoch seconds, large enough to show float rounding


def endpoint(rate: int | None = None) -> Endpoint:
    return Endpoint(
        id="ep_1",
        app_id="app_1",
        url="https://x.test/",
        rate_limit=rate,
        created_at=T0,
        updated_at=T0,
    )


@pytest.mark.parametrize(("rate", "full"), [(20.0, 5.0), (1.0, 1.0), (0.5, 1.0), (1000.0, 250.0)])
def test_bucket_holds_a_quarter_second_and_at_least_one(rate: float, full: float) -> None:
    assert ratelimit.capacity(rate) == full
    assert ratelimit.available(None, None, rate, T0) == full


def test_bucket_refills_at_the_rate_and_never_beyond_full() -> None:
    assert ratelimit.allowance(0.0, T0, 20.0, T0 + 0.05) == 1  # despite float rounding
    assert ratelimit.allowance(0.0, T0, 20.0, T0 + 0.049) == 0
    assert ratelimit.available(0.0, T0, 20.0, T0 + 10) == 5.0
    assert ratelimit.available(2.0, T0, 20.0, T0 - 5) == 2.0  # a clock step back refills nothing
    assert ratelimit.spend(None, None, 20.0, T0, 5) == 0.0


def test_200_messages_at_20_per_second_take_at_least_9_5_seconds() -> None:
    tokens, at, now, sent = None, None, T0, 0
    while sent < 200:  # a claim every 50 ms, as the worker does while held back
        n = min(200 - sent, ratelimit.allowance(tokens, at, 20.0, now))
        tokens, at, sent = ratelimit.spend(tokens, at, 20.0, now, n), now, sent + n
        last = now
        now += 0.05
    assert last - T0 >= 9.5


def test_circuit_opens_at_the_threshold_and_only_once() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    h, events = circuit.after_attempts(h, [(False, T0)] * 5, POLICY)
    assert [e.change for e in events] == [HealthChange.CIRCUIT_OPENED]
    assert h.circuit_open and h.paused_until == T0 + 30 and h.failures == 5


def test_stragglers_failing_while_open_do_not_push_the_probe_back() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    h, _ = circuit.after_attempts(h, [(False, T0)] * 3, POLICY)
    h, _ = circuit.after_attempts(h, [(False, T0 + 1)], POLICY)
    assert h.paused_until == T0 + 30 and h.cooldown == 30


def test_probe_gates_and_doubling_cooldown_up_to_the_cap() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    h, _ = circuit.after_attempts(h, [(False, T0)] * 3, POLICY)
    assert circuit.admits(h, T0 + 29) == 0
    assert circuit.admits(h, T0 + 30) == 1
    at, cooldowns = T0 + 30, []
    for _ in range(7):
        h = circuit.probe_started(h, at, 25.0)
        assert circuit.admits(h, at + 1) == 0  # one probe at a time
        h, _ = circuit.after_attempts(h, [(False, at)], POLICY)
        cooldowns.append(h.cooldown)
        at = h.paused_until or at
    assert cooldowns == [60, 120, 240, 480, 600, 600, 600]


def test_success_closes_and_resets() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    h, _ = circuit.after_attempts(h, [(False, T0)] * 3, POLICY)
    h, events = circuit.after_attempts(h, [(True, T0 + 31)], POLICY)
    assert [e.change for e in events] == [HealthChange.CIRCUIT_CLOSED]
    assert h == EndpointHealth(endpoint_id="ep_1")
    assert circuit.admits(h, T0) is None


def test_disable_after_continuous_failure_once() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    outcomes = [(False, T0), (False, T0 + 99), (False, T0 + 100), (False, T0 + 150)]
    _, events = circuit.after_attempts(
        h, outcomes, circuit.CircuitPolicy(failures=99, disable_after=100)
    )
    assert [e.change for e in events] == [HealthChange.DISABLED]
    assert events[0].failing_since == T0
    _, events = circuit.after_attempts(h, outcomes, POLICY, disabled=True)
    assert HealthChange.DISABLED not in [e.change for e in events]


def test_admission_takes_the_smallest_of_slots_tokens_and_circuit() -> None:
    policy = ClaimPolicy(limit=100, endpoint_slots=3)
    a = admission.Admission(policy, T0, 25.0, {})
    assert a.remaining(endpoint()) == 3
    a = admission.Admission(policy, T0, 25.0, {})
    assert a.remaining(endpoint(rate=4)) == 1  # a quarter second of 4/s
    open_ = EndpointHealth(endpoint_id="ep_1", circuit_open=True, paused_until=T0 - 1)
    a = admission.Admission(policy, T0, 25.0, {"ep_1": open_})
    assert a.admit(endpoint()) and not a.admit(endpoint())
    [probing] = a.changed()
    assert probing.probing and probing.paused_until == T0 + 25.0
    a = admission.Admission(ClaimPolicy(limit=2), T0, 25.0, {})
    assert a.admit(endpoint()) and a.admit(endpoint()) and not a.admit(endpoint())
    assert a.changed() == []  # unlimited and closed: nothing to store


def test_a_probe_whose_outcome_was_lost_is_followed_by_another_after_its_lease() -> None:
    h = EndpointHealth(endpoint_id="ep_1")
    h, _ = circuit.after_attempts(h, [(False, T0)] * 3, POLICY)
    h = circuit.probe_started(h, T0 + 30, 25.0)
    assert circuit.admits(h, T0 + 54) == 0
    assert circuit.admits(h, T0 + 55) == 1
