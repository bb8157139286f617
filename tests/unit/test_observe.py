"""The pure parts of what every API request leaves behind (``api/observe.py``)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from hookline import errors, metrics
from hookline.api import observe


def test_request_ids_are_16_hex_digits_distinct_and_differ_between_processes() -> None:
    ids = observe.RequestIds()
    made = [ids.new() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in made)
    assert len(set(made)) == len(made)
    other = observe.RequestIds()  # another process draws another prefix
    assert other.new()[:8] != made[0][:8]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"abc-123", True),
        (b"0" * 64, True),
        (b"0" * 65, False),  # too long
        (b"", False),
        (b"two words", False),  # a space
        (b"line\r\nbreak", False),
        (b"caf\xc3\xa9", False),  # not ASCII
    ],
)
def test_a_clients_request_id_is_kept_only_when_short_and_visible_ascii(
    value: bytes, kept: bool
) -> None:
    ids = observe.RequestIds()
    headers = [(b"host", b"x"), (b"x-request-id", value)]
    got = ids.of(headers)
    if kept:
        assert got == value.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{16}", got)
    assert re.fullmatch(r"[0-9a-f]{16}", ids.of([(b"host", b"x")]))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(202, "accepted"), (422, "rejected"), (404, "rejected"), (401, "rejected"),
     (409, "rejected"), (413, "rejected"), (429, "throttled"), (503, "unavailable"),
     (500, "unavailable")],
)  # fmt: skip
def test_ingest_outcome_by_status(status: int, outcome: str) -> None:
    assert observe.ingest_outcome(status) == outcome
    assert outcome in metrics.INGEST_OUTCOMES


def test_refusals_are_logged_once_a_second_per_status_with_a_count() -> None:
    now = [10.0]
    refusals = observe.Refusals(1.0, clock=lambda: now[0])
    busy = errors.TooManyRequests("backlog", retry_after=5)
    down = errors.Unavailable("disk full", retry_after=2)
    with capture_logs() as logs:
        for _ in range(3):
            refusals.note(busy, observe.INGEST_ROUTE)
            refusals.note(down, observe.INGEST_ROUTE)
        refusals.note(errors.NotFound(), observe.INGEST_ROUTE)  # not a refusal: never logged
        now[0] += 1.5
        refusals.note(busy, observe.INGEST_ROUTE)
    assert [(e["event"], e["count"]) for e in logs] == [
        ("request_throttled", 1),
        ("request_unavailable", 1),
        ("request_throttled", 3),  # itself and the two folded in
    ]
    assert logs[0]["retry_after"] == 5 and logs[0]["route"] == observe.INGEST_ROUTE
    assert logs[1]["detail"] == "disk full" and logs[1]["status"] == 503


def test_the_observer_counts_by_route_and_status_class_reusing_its_children() -> None:
    m = metrics.Metrics(CollectorRegistry())
    observer = observe.Observer(m, access_log=False)
    for status in (202, 202, 422, 503):
        observer.answered("POST", observe.INGEST_ROUTE, status, 0.003)
        observer.ingested(status)
    observer.answered("GET", observe.UNMATCHED, 404, 0.001)

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    assert (
        value("hookline_http_requests_total", route=observe.INGEST_ROUTE, status_class="2xx") == 2
    )
    assert (
        value("hookline_http_requests_total", route=observe.INGEST_ROUTE, status_class="4xx") == 1
    )
    assert (
        value("hookline_http_requests_total", route=observe.INGEST_ROUTE, status_class="5xx") == 1
    )
    assert value("hookline_http_requests_total", route="unmatched", status_class="4xx") == 1
    assert value("hookline_http_request_duration_seconds_count", route=observe.INGEST_ROUTE) == 4
    assert value("hookline_messages_ingested_total", outcome="accepted") == 2
    assert value("hookline_messages_ingested_total", outcome="rejected") == 1
    assert value("hookline_messages_ingested_total", outcome="unavailable") == 1
    assert value("hookline_messages_ingested_total", outcome="throttled") == 0
