"""When tracing is on (``OTEL_*``), what it costs when off, and what the spans may show."""

from __future__ import annotations

import base64
import time

import pytest
from structlog.testing import capture_logs

from hookline import delivery, ids, spans, tracing
from hookline.models import Claim, Endpoint, Message, SigningKey, Trigger

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),  # nothing asks for traces
        (ENDPOINT, ("otlp",)),  # an endpoint alone: the SDK's default exporter
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, ()),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "OTLP, console,otlp"}, ("otlp", "console")),
        ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, ()),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, ()),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, ()),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": ""}, ()),
    ],
)
def test_the_standard_variables_decide_whether_and_where_traces_go(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert tracing.exporters(env) == expected


def test_an_unknown_exporter_is_a_warning_not_a_failed_start() -> None:
    with capture_logs() as logs:
        assert tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin,console"}) == ("console",)
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "jaeger"}) is None
    assert [e["event"] for e in logs] == ["tracing_exporter_unknown"] * 2
    assert logs[0]["exporters"] == ["zipkin"]


def test_configured_tracing_is_an_opentelemetry_provider_named_hookline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    configured = tracing.configure({"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert isinstance(configured, spans.Tracing)
        resource = configured._provider.resource  # type: ignore[attr-defined]
        assert resource.attributes["service.name"] == "hookline"
    finally:
        assert configured is not None
        configured.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "webhooks-eu")
    named = tracing.configure({"OTEL_TRACES_EXPORTER": "console"})
    assert named is not None
    try:
        resource = named._provider.resource  # type: ignore[attr-defined]
        assert resource.attributes["service.name"] == "webhooks-eu"
    finally:
        named.shutdown()


def _claim(url: str = "https://receiver.example.com/hook") -> Claim:
    now = time.time()
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    endpoint = Endpoint(
        id=ids.new(ids.ENDPOINT),
        app_id="app_x",
        url=url,
        keys=(SigningKey(secret=secret),),
        headers={"traceparent": "set-by-the-tenant", "x-team": "billing"},
        created_at=now,
        updated_at=now,
    )
    msg = Message(
        id=ids.new(ids.MESSAGE), app_id="app_x", event_type="a.b", payload=b"{}", created_at=now
    )
    return Claim(message=msg, endpoint=endpoint, attempts=0, lease=1, trigger=Trigger.SCHEDULED)


def test_trace_headers_are_sent_and_leave_the_signature_as_it_was() -> None:
    claim = _claim()
    now = time.time()
    plain = delivery.prepare(claim, now)
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    traced = delivery.prepare(claim, now, {**trace, "tracestate": "k=v"})
    assert traced.headers["traceparent"] == trace["traceparent"]  # over the custom header
    assert traced.headers["tracestate"] == "k=v"
    assert traced.headers["webhook-signature"] == plain.headers["webhook-signature"]
    assert traced.headers["x-team"] == "billing"
    assert plain.headers["traceparent"] == "set-by-the-tenant"  # tracing off: untouched


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://r.example.com/hooks/s3cret?token=s3cret", ("https", "r.example.com", 443)),
        ("https://user:s3cret@r.example.com:8443/h#s3cret", ("https", "r.example.com", 8443)),
        ("http://[::1]:8080/s3cret?k=s3cret", ("http", "::1", 8080)),
    ],
)
def test_the_attempt_span_shows_no_path_query_userinfo_or_fragment(
    url: str, expected: tuple[str, str, int]
) -> None:
    attributes = spans._url_attributes(url)
    shown = (attributes["url.scheme"], attributes["server.address"], attributes["server.port"])
    assert shown == expected
    assert "url.full" not in attributes
    assert "s3cret" not in str(attributes)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("timed out after 15 s", "timeout"),
        ("ClientConnectorError: Cannot connect to host r.example.com:443", "ClientConnectorError"),
        ("egress refused: 10.0.0.1 is a private address", "egress_refused"),
        ("the endpoint's signing secret cannot be decoded", "_OTHER"),
    ],
)
def test_transport_errors_get_a_low_cardinality_error_type(text: str, kind: str) -> None:
    assert spans._transport_error(text) == kind


def test_a_stored_context_that_is_not_a_traceparent_links_to_nothing() -> None:
    assert spans._links(None) is None
    assert spans._links("not-a-traceparent") is None
    [link] = spans._links("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") or []
    assert link.context.span_id == 0xB7AD6B7169203331
