"""Request ids, the access log and the API's metrics, through the in-process ASGI app."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from hookline import api, app, errors, metrics, metrics_server
from hookline.app import Hookline

from .conftest import ADMIN_TOKEN, assert_error, create_app, create_endpoint

INGEST = "/api/v1/app/{app_id}/msg"
GENERATED_ID = re.compile(r"[0-9a-f]{16}")
BODY = {"eventType": "user.created", "payload": {"marker": "payload-text-never-logged"}}


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every log event of the test, with the request's context variables merged in."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        yield logs


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


def _value(hl: Hookline, name: str, **labels: str) -> float:
    assert hl.metrics is not None
    return hl.metrics.registry.get_sample_value(name, labels) or 0.0


def _requests(hl: Hookline, route: str, status_class: str) -> float:
    return _value(hl, "hookline_http_requests_total", route=route, status_class=status_class)


# request ids -------------------------------------------------------------------------------------


async def test_every_answer_carries_a_request_id_errors_included(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    answers = [
        await client.post("/api/v1/app", json={"name": "ids"}),  # 201
        await client.get("/api/v1/app/app_missing"),  # 404 from a handler
        await client.get("/no/such/route"),  # 404 from the router
        await client.delete("/api/v1/app"),  # 405
        await client.post("/api/v1/app", content=b"{"),  # 400
        await anon.get("/api/v1/app"),  # 401
        await client.get("/api/v1/openapi.json"),
        await client.get("/metrics"),
    ]
    ids = [a.headers.get_list("x-request-id") for a in answers]
    assert all(len(i) == 1 and GENERATED_ID.fullmatch(i[0]) for i in ids), ids
    assert len({i[0] for i in ids}) == len(ids)


async def test_a_clients_request_id_is_returned_and_logged_a_bad_one_replaced(
    client: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    ok = await client.get("/api/v1/app", headers={"X-Request-Id": "trace-abc-123"})
    assert ok.headers["x-request-id"] == "trace-abc-123"
    bad = await client.get("/api/v1/app", headers={"X-Request-Id": "has spaces " + "x" * 80})
    assert GENERATED_ID.fullmatch(bad.headers["x-request-id"])
    logged = [e["request_id"] for e in _named(events, "http_request")]
    assert logged == ["trace-abc-123", bad.headers["x-request-id"]]


# the access log ----------------------------------------------------------------------------------


async def test_the_access_log_has_one_line_per_request_with_its_route_and_ids(
    client: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    created = await create_app(client, "logged")
    app_id = created["id"]
    events.clear()
    sent = await client.post(f"/api/v1/app/{app_id}/msg?with_content=false", json=BODY)
    assert sent.status_code == 202, sent.text
    msg_id = sent.json()["id"]
    got = await client.get(f"/api/v1/app/{app_id}/msg/{msg_id}")
    assert got.status_code == 200
    ingest, lookup = _named(events, "http_request")
    assert ingest == {
        "event": "http_request",
        "log_level": "info",
        "method": "POST",
        "route": INGEST,
        "status": 202,
        "duration_ms": ingest["duration_ms"],
        "request_id": sent.headers["x-request-id"],
        "app_id": app_id,
    }
    assert isinstance(ingest["duration_ms"], float) and 0 < ingest["duration_ms"] < 10_000
    assert lookup["route"] == "/api/v1/app/{app_id}/msg/{msg_id}"
    assert (lookup["app_id"], lookup["msg_id"]) == (app_id, msg_id)
    text = repr(events)
    # never the token, the body or the query string
    assert ADMIN_TOKEN not in text
    assert "payload-text-never-logged" not in text
    assert "with_content" not in text


async def test_the_context_does_not_outlive_the_request(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/app/app_x/msg")
    assert structlog.contextvars.get_contextvars() == {}


async def test_the_access_log_can_be_turned_off(hl: Hookline, events: list[dict[str, Any]]) -> None:
    quiet = api.build(hl.services(), access_log=False)
    transport = httpx.ASGITransport(app=quiet)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        assert (await c.get("/api/v1/app")).status_code == 200
        assert (await c.get("/nowhere")).status_code == 404
    assert _named(events, "http_request") == []
    assert _requests(hl, "/api/v1/app", "2xx") == 1  # metrics still count


async def test_failed_authentication_is_logged_with_a_reason_and_no_token(
    hl: Hookline, anon: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    wrong = "hl_wrong_token_value_that_must_not_be_logged"
    assert (await anon.get("/api/v1/app")).status_code == 401
    assert (
        await anon.get("/api/v1/app", headers={"Authorization": "Basic abc"})
    ).status_code == 401
    resp = await anon.get("/api/v1/app", headers={"Authorization": f"Bearer {wrong}"})
    assert resp.status_code == 401
    failures = _named(events, "auth_failed")
    assert [e["reason"] for e in failures] == ["missing", "malformed", "unknown_token"]
    assert failures[2]["request_id"] == resp.headers["x-request-id"]
    assert wrong not in repr(events) and "abc" not in repr(failures)
    assert _requests(hl, "/api/v1/app", "4xx") == 3


# metrics -----------------------------------------------------------------------------------------


async def test_metrics_are_served_without_auth_in_the_text_format(
    hl: Hookline, client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await client.get("/api/v1/app")
    resp = await anon.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == metrics.CONTENT_TYPE  # text/plain; version=...
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert "hookline_http_requests" in families
    samples = {
        (s.labels["route"], s.labels["status_class"]): s.value
        for s in families["hookline_http_requests"].samples
        if s.name == "hookline_http_requests_total"
    }
    assert samples[("/api/v1/app", "2xx")] == 1
    assert "/metrics" not in (await client.get("/api/v1/openapi.json")).json()["paths"]


async def test_metrics_off_means_no_metrics_route(hl: Hookline) -> None:
    hl.metrics = None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.asgi(hl)),
        base_url="http://t",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as c:
        assert_error(await c.get("/metrics"), 404, "not_found")
        assert (await c.post("/api/v1/app", json={"name": "no metrics"})).status_code == 201


async def test_requests_are_counted_per_route_template_and_status_class(
    hl: Hookline, client: httpx.AsyncClient
) -> None:
    one = await create_app(client, "one")
    await client.get(f"/api/v1/app/{one['id']}")
    await client.get("/api/v1/app/app_missing")
    await client.get("/api/v1/app/app_other_missing")
    await client.get("/api/v1/app/app_x/no/such/thing")
    await client.get("/totally/unknown")
    await client.delete("/api/v1/app")  # 405: the path's template
    await client.get("/docs")
    assert _requests(hl, "/api/v1/app", "2xx") == 1
    assert _requests(hl, "/api/v1/app/{app_id}", "2xx") == 1
    assert _requests(hl, "/api/v1/app/{app_id}", "4xx") == 2  # ids never become labels
    assert _requests(hl, "unmatched", "4xx") == 2
    assert _requests(hl, "/api/v1/app", "4xx") == 1
    assert _requests(hl, "/docs", "2xx") == 1
    count = "hookline_http_request_duration_seconds_count"
    assert _value(hl, count, route="/api/v1/app/{app_id}") == 3
    assert hl.metrics is not None
    routes = {
        s.labels["route"]
        for family in hl.metrics.registry.collect()
        if family.name == "hookline_http_requests"
        for s in family.samples
    }
    assert routes == {"/api/v1/app", "/api/v1/app/{app_id}", "unmatched", "/docs"}


# ingest outcomes ---------------------------------------------------------------------------------


@pytest.fixture
async def app_id(client: httpx.AsyncClient) -> AsyncIterator[str]:
    created = await create_app(client, "ingest")
    await create_endpoint(client, created["id"])
    yield created["id"]


def _ingested(hl: Hookline) -> dict[str, float]:
    outcomes = ("accepted", "rejected", "throttled", "unavailable")
    return {o: _value(hl, "hookline_messages_ingested_total", outcome=o) for o in outcomes}


async def test_ingest_outcomes_accepted_and_rejected(
    hl: Hookline, client: httpx.AsyncClient, app_id: str
) -> None:
    assert (await client.post(f"/api/v1/app/{app_id}/msg", json=BODY)).status_code == 202
    bad = {"eventType": "user.created", "payload": [1]}
    assert (await client.post(f"/api/v1/app/{app_id}/msg", json=bad)).status_code == 422
    assert (await client.post("/api/v1/app/app_missing/msg", json=BODY)).status_code == 404
    assert (await client.get(f"/api/v1/app/{app_id}/msg")).status_code == 200  # not ingest
    assert _ingested(hl) == {"accepted": 1, "rejected": 2, "throttled": 0, "unavailable": 0}
    assert _requests(hl, INGEST, "2xx") == 2  # the POST and the GET share the template
    assert _requests(hl, INGEST, "4xx") == 2


async def test_ingest_outcome_throttled_under_backpressure_logged_once(
    hl: Hookline, client: httpx.AsyncClient, app_id: str, events: list[dict[str, Any]]
) -> None:
    hl.backlog.limit = 1
    for _ in range(2):
        assert (await client.post(f"/api/v1/app/{app_id}/msg", json=BODY)).status_code == 202
    await hl.backlog.measure()
    for _ in range(3):
        refused = await client.post(f"/api/v1/app/{app_id}/msg", json=BODY)
        assert_error(refused, 429, "too_many_requests")
    assert _ingested(hl) == {"accepted": 2, "rejected": 0, "throttled": 3, "unavailable": 0}
    (line,) = _named(events, "request_throttled")  # once, not per refusal
    assert (line["status"], line["count"], line["route"]) == (429, 1, INGEST)
    assert line["app_id"] == app_id and line["request_id"]


async def test_ingest_outcome_unavailable_when_the_store_refuses(
    hl: Hookline,
    client: httpx.AsyncClient,
    app_id: str,
    events: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def disk_full(*_: Any, **__: Any) -> None:
        raise errors.Unavailable("The database's disk is full; retry later", retry_after=5)

    monkeypatch.setattr(hl.store, "create_message", disk_full)
    for _ in range(2):
        assert_error(await client.post(f"/api/v1/app/{app_id}/msg", json=BODY), 503)
    assert _ingested(hl) == {"accepted": 0, "rejected": 0, "throttled": 0, "unavailable": 2}
    assert _requests(hl, INGEST, "5xx") == 2
    (line,) = _named(events, "request_unavailable")
    assert line["detail"] == "The database's disk is full; retry later"


# the worker's metrics app ------------------------------------------------------------------------


async def test_the_worker_metrics_app_answers_metrics_and_nothing_else() -> None:
    served = metrics.Metrics(CollectorRegistry())
    transport = httpx.ASGITransport(app=metrics_server.application(served))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        resp = await c.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == metrics.CONTENT_TYPE
        assert 'hookline_info{version="' in resp.text
        assert_error(await c.get("/"), 404, "not_found")
        refused = await c.post("/metrics")
        assert_error(refused, 405, "method_not_allowed")
        assert refused.headers["allow"] == "GET, HEAD"


async def test_a_flood_of_failed_logins_is_logged_once_a_second_with_a_count(
    hl: Hookline, anon: httpx.AsyncClient, events: list[dict[str, Any]]
) -> None:
    for _ in range(50):
        headers = {"Authorization": "Bearer hl_guess"}
        assert (await anon.get("/api/v1/app", headers=headers)).status_code == 401
    failures = _named(events, "auth_failed")
    assert 1 <= len(failures) <= 2  # the loop may straddle a second
    assert failures[0]["count"] == 1  # the first at once; the rest folded in
    assert _requests(hl, "/api/v1/app", "4xx") == 50  # every one still counted
