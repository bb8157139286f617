from __future__ import annotations

import math
from collections.abc import Callable
from email.utils import formatdate

import pytest

from hookline.retry import (
    DEFAULT_SCHEDULE,
    Decision,
    Outcome,
    decide,
    parse_retry_after,
    parse_schedule,
)

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
SCHEDULE = (10.0, 100.0)  # seconds: 3 attempts in total
MIDDLE = 0.5  # rand() value that makes the jitter factor exactly 1


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def http_date(offset: float) -> str:
    return formatdate(NOW + offset, usegmt=True)


S, R, X, D = Outcome.SUCCESS, Outcome.RETRY, Outcome.EXHAUSTED, Outcome.DISABLE


@pytest.mark.parametrize(
    ("status", "attempt", "retry_after", "outcome", "delay"),
    [
        # 2xx, edges included, even on the very last attempt
        (200, 1, None, S, None),
        (299, 1, None, S, None),
        (204, 3, None, S, None),
        # just outside 2xx: failures
        (199, 1, None, R, 10.0),
        (300, 1, None, R, 10.0),
        # redirects are failures and are never followed
        (301, 1, None, R, 10.0),
        (302, 1, "15", R, 10.0),
        # client errors are retried (the receiver may be mid-deploy)
        (400, 1, None, R, 10.0),
        (404, 2, None, R, 100.0),
        # 410 Gone disables the endpoint, whatever the attempt
        (410, 1, None, D, None),
        (410, 3, None, D, None),
        # 429 without / with Retry-After (seconds and HTTP-date)
        (429, 1, None, R, 10.0),
        (429, 1, "15", R, 15.0),
        (429, 1, http_date(15), R, 15.0),
        (429, 1, "3", R, 10.0),  # too small: clamped up to the step
        (429, 1, http_date(-60), R, 10.0),  # date in the past: clamped up
        (429, 1, "3600", R, 20.0),  # too large: clamped down to 2 * step
        (429, 1, http_date(3600), R, 20.0),
        (429, 2, "150", R, 150.0),
        (429, 1, "soon", R, 10.0),  # unparseable: ordinary backoff
        # server errors; Retry-After only counts for 502/503/504
        (500, 1, None, R, 10.0),
        (500, 1, "15", R, 10.0),
        (502, 1, "15", R, 15.0),
        (503, 1, "15", R, 15.0),
        (504, 1, "15", R, 15.0),
        (503, 1, None, R, 10.0),
        # 0: transport error, timeout or egress refusal
        (0, 1, None, R, 10.0),
        (0, 2, None, R, 100.0),
        # past the last step: exhausted, Retry-After notwithstanding
        (500, 3, None, X, None),
        (429, 3, "15", X, None),
        (0, 3, None, X, None),
        (301, 3, None, X, None),
    ],
)
def test_decide(
    status: int, attempt: int, retry_after: str | None, outcome: Outcome, delay: float | None
) -> None:
    decision = decide(
        schedule=SCHEDULE,
        attempt=attempt,
        status=status,
        retry_after=retry_after,
        now=NOW,
        rand=lambda: MIDDLE,
    )
    assert decision == Decision(outcome, delay)


def _failed(attempt: int, rand: float, schedule: tuple[float, ...] = SCHEDULE) -> Decision:
    return decide(
        schedule=schedule, attempt=attempt, status=500, retry_after=None, now=NOW, rand=lambda: rand
    )


def test_jitter_lower_bound_is_minus_twenty_percent() -> None:
    assert _failed(1, 0.0).delay == pytest.approx(8.0)
    assert _failed(2, 0.0).delay == pytest.approx(80.0)


def test_jitter_upper_bound_is_plus_twenty_percent() -> None:
    # rand() < 1, but step * 1.2 may still round to exactly 1.2 * step.
    delay = _failed(1, math.nextafter(1.0, 0.0)).delay
    assert delay is not None
    assert delay <= 12.0
    assert delay == pytest.approx(12.0)


def test_jitter_stays_within_bounds_across_the_range() -> None:
    for i in range(100):
        delay = _failed(1, i / 100).delay
        assert delay is not None
        assert 8.0 <= delay < 12.0


def test_retry_after_is_not_jittered() -> None:
    decisions = {
        decide(
            schedule=SCHEDULE, attempt=1, status=503, retry_after="15", now=NOW, rand=constant(r)
        )
        for r in (0.0, 0.5, 0.99)
    }
    assert decisions == {Decision(Outcome.RETRY, 15.0)}


def test_two_step_schedule_means_three_attempts() -> None:
    schedule = parse_schedule("0.2,0.2")
    outcomes = [_failed(n, MIDDLE, schedule).outcome for n in (1, 2, 3)]
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.EXHAUSTED]


def test_default_schedule_gives_eight_attempts_over_about_a_day() -> None:
    outcomes = [_failed(n, MIDDLE, DEFAULT_SCHEDULE).outcome for n in range(1, 10)]
    assert outcomes == [Outcome.RETRY] * 7 + [Outcome.EXHAUSTED] * 2
    assert 27 * 3600 < sum(DEFAULT_SCHEDULE) < 28 * 3600


def test_next_at_adds_the_delay_to_now() -> None:
    assert Decision(Outcome.RETRY, 10.0).next_at(NOW) == NOW + 10.0
    assert Decision(Outcome.SUCCESS).next_at(NOW) is None
    assert Decision(Outcome.EXHAUSTED).next_at(NOW) is None


def test_decision_rejects_inconsistent_delay() -> None:
    with pytest.raises(ValueError, match="RETRY"):
        Decision(Outcome.RETRY)
    with pytest.raises(ValueError, match="RETRY"):
        Decision(Outcome.SUCCESS, 5.0)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        _failed(0, MIDDLE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.2,0.2", (0.2, 0.2)),
        (" 5 , 300,1800 ", (5.0, 300.0, 1800.0)),
        ("0", (0.0,)),
        ("36000", (36000.0,)),
    ],
)
def test_parse_schedule(text: str, expected: tuple[float, ...]) -> None:
    assert parse_schedule(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5,,10", r"item 2 \(''\) is not a number"),
        ("5,", r"item 2 \(''\) is not a number"),
        ("5;10", "item 1 .* is not a number"),
        ("five", "item 1 .* is not a number"),
        ("5,-1", "item 2 .* non-negative"),
        ("nan", "finite"),
        ("inf", "finite"),
    ],
)
def test_parse_schedule_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", None),
        ("+5", None),
        ("1e3", None),
        ("nan", None),
        ("soon", None),
        (http_date(30), 30.0),
        (http_date(-30), 0.0),  # never negative
        ("Tue, 14 Nov 2023 22:14:20 -0000", 60.0),  # zone-less form read as UTC
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # obsolete RFC 850 form
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected
