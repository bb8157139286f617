"""OpenTelemetry traces end to end: the in-process API and a real worker, a real receiver.

The API runs in-process (ASGI) on a real SQLite database; the worker delivers over real sockets
to ``tests/support/receiver.py``. Spans go to the SDK's in-memory exporter, so the test reads
exactly what an OTLP collector would get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hookline import app, delivery, egress, settings, spans
from hookline.app import Hookline
from hookline.bench.processes import free_port
from tests.support.receiver import Receiver

TOKEN = "hl_test_tracing_token"
WAIT_SECONDS = 10.0
# what an instrumented API client sends along with its request
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"


@dataclass
class Traced:
    hl: Hookline
    api: httpx.AsyncClient
    exporter: InMemorySpanExporter

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    async def wait_spans(self, name: str, count: int) -> list[ReadableSpan]:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(found := self.spans(name)) < count:
            assert time.monotonic() < deadline, f"{len(found)} {name} span(s), wanted {count}"
            await asyncio.sleep(0.02)
        return found


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    """API and worker with tracing on, exporting to memory; the worker runs until the end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    s = settings.Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        admin_token=TOKEN,
        retry_schedule=(0.05,),  # one retry, at once
        allowed_subnets=egress.parse_allowed("127.0.0.0/8"),
        request_timeout=2.0,
    )
    async with app.opened(s) as hl:
        hl.tracing = spans.Tracing(provider)
        await app.bootstrap_token(hl)
        stop = asyncio.Event()
        session = delivery.new_session(hl.egress_policy, 16)
        worker = asyncio.create_task(hl.worker(session).run(stop))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.asgi(hl)),
            base_url="http://test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            async with client:
                yield Traced(hl, client, exporter)
        finally:
            stop.set()
            await asyncio.wait_for(worker, WAIT_SECONDS)
            await session.close()


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_ingest_and_each_attempt_make_linked_spans_and_the_receiver_gets_traceparent(
    traced: Traced, receiver: Receiver
) -> None:
    path = receiver.new_path("traced")
    receiver.script(path, 500, then=200)  # the first attempt fails, the retry succeeds
    created = await traced.api.post("/api/v1/app", json={"name": "traced"})
    app_id = created.json()["id"]
    endpoint = await traced.api.post(
        f"/api/v1/app/{app_id}/endpoint",
        json={"url": receiver.url(path) + "?token=s3cret"},  # a secret the spans must not show
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]

    resp = await traced.api.post(
        f"/api/v1/app/{app_id}/msg",
        json={"eventType": "invoice.paid", "payload": {"n": 1}},
        headers={"traceparent": CLIENT_TRACEPARENT},
    )
    assert resp.status_code == 202, resp.text
    msg_id = resp.json()["id"]

    [ingest] = traced.spans(spans.INGEST_SPAN)  # ended before the 202 was answered
    assert ingest.kind is SpanKind.SERVER
    assert ingest.attributes is not None
    assert ingest.attributes["messaging.message.id"] == msg_id
    assert ingest.attributes["hookline.app_id"] == app_id
    assert ingest.attributes["hookline.event_type"] == "invoice.paid"
    assert ingest.attributes["http.response.status_code"] == 202
    # a child of the client's span, in the client's trace
    assert ingest.parent is not None and ingest.parent.span_id == int(CLIENT_SPAN_ID, 16)
    assert ingest.context is not None and ingest.context.trace_id == int(CLIENT_TRACE_ID, 16)
    stored = await traced.hl.store.get_message(app_id, msg_id)
    assert stored is not None and stored.trace_context == _traceparent(ingest)

    first, second = await traced.wait_spans(spans.ATTEMPT_SPAN, 2)
    requests = receiver.requests(path)
    assert [r.status for r in requests] == [500, 200]
    for number, (span, request) in enumerate(zip((first, second), requests, strict=True), 1):
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["messaging.message.id"] == msg_id
        assert span.attributes["hookline.endpoint_id"] == endpoint_id
        assert span.attributes["hookline.attempt.number"] == number
        assert span.attributes["server.port"] == receiver.port  # the origin only, no path
        assert "s3cret" not in str(dict(span.attributes))
        # a trace of its own, linked to the ingest span
        assert span.parent is None
        assert span.context is not None and span.context.trace_id != ingest.context.trace_id
        linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
        assert linked == [(ingest.context.trace_id, ingest.context.span_id)]
        # the receiver saw this attempt's span as the caller
        assert request.headers["traceparent"] == _traceparent(span)
        assert request.headers["webhook-id"] == msg_id
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["http.response.status_code"] == 500
    assert first.attributes["hookline.attempt.outcome"] == "retry"
    assert first.attributes["error.type"] == "500"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["hookline.attempt.outcome"] == "success"
    assert second.status.status_code is StatusCode.UNSET
    # the attempt ids on the spans are those of the attempts the API lists
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        attempts = await traced.api.get(f"/api/v1/app/{app_id}/attempt/msg/{msg_id}")
        recorded = {a["id"] for a in attempts.json()["data"]}
        if len(recorded) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert recorded == {a.attributes["hookline.attempt.id"] for a in (first, second)}


async def test_a_refused_ingest_is_a_span_with_its_4xx_and_no_error(traced: Traced) -> None:
    resp = await traced.api.post(
        "/api/v1/app/app_none/msg", json={"eventType": "a.b", "payload": {}}
    )
    assert resp.status_code == 404, resp.text
    assert resp.json()["code"] == "not_found"
    [ingest] = traced.spans(spans.INGEST_SPAN)
    assert ingest.attributes is not None
    assert ingest.attributes["http.response.status_code"] == 404
    assert ingest.status.status_code is StatusCode.UNSET  # a client's mistake, not a failure
    assert ingest.parent is None  # no traceparent sent: a trace of its own


async def test_an_unreachable_endpoint_is_an_attempt_span_with_its_error(
    traced: Traced,
) -> None:
    created = await traced.api.post("/api/v1/app", json={"name": "down"})
    app_id = created.json()["id"]
    port = free_port()  # free a moment ago: nothing listens there
    endpoint = await traced.api.post(
        f"/api/v1/app/{app_id}/endpoint", json={"url": f"http://127.0.0.1:{port}/hook"}
    )
    assert endpoint.status_code == 201, endpoint.text
    resp = await traced.api.post(
        f"/api/v1/app/{app_id}/msg", json={"eventType": "a.b", "payload": {}}
    )
    assert resp.status_code == 202, resp.text

    first, second = await traced.wait_spans(spans.ATTEMPT_SPAN, 2)
    assert first.attributes is not None and second.attributes is not None
    assert "http.response.status_code" not in first.attributes  # no HTTP answer
    assert first.attributes["error.type"] == "ClientConnectorError"
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes["hookline.attempt.outcome"] == "retry"
    assert second.attributes["hookline.attempt.outcome"] == "failed"  # the schedule is spent
    assert first.attributes["server.address"] == "127.0.0.1"
    assert first.attributes["server.port"] == port
