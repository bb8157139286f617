"""The OpenTelemetry side of ``hookline.tracing``: imported only when tracing is configured.

Span names are hookline's own (``hookline.ingest``, ``hookline.attempt``), one each, so a
backend lists them apart from whatever else runs; attributes follow the semantic conventions
(HTTP server and client, ``messaging.message.id``), with hookline's ids under ``hookline.``.

**Why an attempt is a Link, not a child, of the ingest span.** Each attempt span starts a trace
of its own and links to the context stored with the message, the pattern the messaging
conventions give for work consumed after its producer's request ended:

- retries run for days (the default schedule ends after more than a day), and a trace that
  keeps growing that long is split, dropped or shown truncated by backends that close a trace
  after minutes of quiet (Tempo, tail sampling in the collector);
- one message fans out to every matching endpoint, each with up to the schedule's attempts:
  as children they would make one very wide trace, as roots one small trace per attempt;
- the ``traceparent`` sent to a receiver, another organisation's server, carries the attempt's
  trace id, not the id of the trace of the API client that sent the message, so no id of the
  client's own traces reaches third parties, and the client's sampling decision does not
  decide the receiver's;
- the message id (``messaging.message.id``, on both spans) finds them all, and the Link leads
  from any attempt back to its ingest.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
from collections.abc import Mapping

import msgspec
import yarl
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import hookline
from hookline import errors, tracing
from hookline.models import Claim, Completion, Message, MessageStatus, Trigger

INGEST_SPAN = "hookline.ingest"
ATTEMPT_SPAN = "hookline.attempt"
SERVICE_NAME = "hookline"  # when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one
INGEST_ROUTE = "/api/v1/app/{app_id}/msg"  # keep in step with messages.create_message's @route
ERROR_TEXT_CHARS = 200  # of a transport error, as the attempt span's status description

# The stored trace_context is W3C traceparent whatever OTEL_PROPAGATORS says (the column is
# read back by any process); incoming and outgoing headers use the configured propagators.
_W3C = TraceContextTextMapPropagator()
_ROOT = otel_context.Context()  # an empty context: the attempt span has no parent
_INGEST_ATTRIBUTES = {
    "http.request.method": "POST",
    "http.route": INGEST_ROUTE,
    "messaging.system": "hookline",
}
_TRIGGERS = {Trigger.SCHEDULED: "scheduled", Trigger.MANUAL: "manual"}


def from_env(exporters: tuple[str, ...]) -> Tracing | None:
    """A provider exporting to ``exporters`` in batches; None when none could be built."""
    built = [e for e in (_exporter(name) for name in exporters) if e is not None]
    if not built:
        return None
    resource = Resource.create({"service.version": hookline.__version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for exporter in built:
        # a thread of its own exports, so the event loop never waits for the collector
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    module = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    if protocol == "grpc":  # not in the extra: used when installed
        module = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    try:
        exporter: SpanExporter = importlib.import_module(module).OTLPSpanExporter()
    except ImportError as exc:
        tracing.log.warning(
            "tracing_exporter_unavailable",
            exporter=name,
            protocol=protocol,
            error=f"{type(exc).__name__}: {exc}",
        )
        return None
    return exporter


class Tracing:
    """``tracing.Tracing`` on an OpenTelemetry ``TracerProvider`` (tests pass their own)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("hookline", hookline.__version__)

    async def ingest(self, headers: Mapping[str, str], create: tracing.Create) -> object:
        span = self._tracer.start_span(
            INGEST_SPAN,
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes=_INGEST_ATTRIBUTES,
        )
        try:
            result = await create(_IngestSpan(span))
        except errors.HooklineError as exc:
            _http_status(span, exc.status, server=True)
            raise
        except BaseException as exc:  # a bug or a cancellation: the API answers 500
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            _http_status(span, int(getattr(result, "status_code", 202)), server=True)
            return result
        finally:
            span.end()

    async def attempt(self, claim: Claim, deliver: tracing.Deliver) -> Completion | None:
        msg, endpoint = claim.message, claim.endpoint
        span = self._tracer.start_span(
            ATTEMPT_SPAN,
            context=_ROOT,
            kind=SpanKind.CLIENT,
            links=_links(msg.trace_context),
            attributes={
                "http.request.method": "POST",
                **_url_attributes(endpoint.url),
                "messaging.system": "hookline",
                "messaging.message.id": msg.id,
                "hookline.app_id": msg.app_id,
                "hookline.endpoint_id": endpoint.id,
                "hookline.event_type": msg.event_type,
                "hookline.attempt.number": claim.attempts + 1,
                "hookline.attempt.trigger": _TRIGGERS.get(claim.trigger, "scheduled"),
            },
        )
        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        try:
            done = await deliver(headers)
        except asyncio.CancelledError:
            # a stop past its grace: the worker releases the task, no attempt is recorded
            span.set_attribute("hookline.attempt.outcome", "released")
            span.set_status(Status(StatusCode.ERROR, "cancelled at shutdown"))
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            _describe_attempt(span, done)
            return done
        finally:
            span.end()

    def shutdown(self) -> None:
        shutdown = getattr(self._provider, "shutdown", None)  # the API's no-op provider has none
        if shutdown is not None:
            shutdown()


class _IngestSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def stamp(self, msg: Message) -> Message:
        self._span.set_attributes(
            {
                "messaging.message.id": msg.id,
                "hookline.app_id": msg.app_id,
                "hookline.event_type": msg.event_type,
            }
        )
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=trace.set_span_in_context(self._span))
        return msgspec.structs.replace(msg, trace_context=carrier.get("traceparent"))


def _links(trace_context: str | None) -> list[Link] | None:
    """A Link to the stored ingest context; none for a message ingested without tracing."""
    if not trace_context:
        return None
    linked = trace.get_current_span(_W3C.extract({"traceparent": trace_context}))
    span_context = linked.get_span_context()
    return [Link(span_context)] if span_context.is_valid else None


@functools.lru_cache(maxsize=4096)  # endpoint URLs repeat on every attempt
def _url_attributes(url: str) -> Mapping[str, str | int]:
    """Scheme, host and port, never ``url.full``: userinfo, query and even the path may be secret.

    Slack- and Discord-style webhook URLs carry their token in the path; the endpoint id on the
    span names the endpoint for anyone allowed to read its URL.
    """
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        return {}
    attributes: dict[str, str | int] = {"url.scheme": parsed.scheme}
    if parsed.host:
        attributes["server.address"] = parsed.host
    if parsed.port is not None:
        attributes["server.port"] = parsed.port
    return attributes


def _describe_attempt(span: trace.Span, done: Completion | None) -> None:
    if done is None:  # the worker logged delivery_failed; the lease runs out, it goes again
        span.set_attribute("hookline.attempt.outcome", "unrecorded")
        span.set_status(Status(StatusCode.ERROR, "delivery failed; retried after the lease"))
        return
    attempt = done.attempt
    span.set_attribute("hookline.attempt.id", attempt.id)
    span.set_attribute("hookline.attempt.outcome", _outcome(done))
    if attempt.response_status_code:
        _http_status(span, attempt.response_status_code, server=False)
    elif attempt.status is not MessageStatus.SUCCESS:
        text = attempt.response  # the transport error, as the attempt records it
        span.set_attribute("error.type", _transport_error(text))
        span.set_status(Status(StatusCode.ERROR, text[:ERROR_TEXT_CHARS]))


def _outcome(done: Completion) -> str:
    """What the attempt means for the delivery: success, retry, failed (exhausted), disabled."""
    if done.next_status is MessageStatus.SUCCESS:
        return "success"
    if done.disable_endpoint:
        return "disabled"
    return "retry" if done.next_status is MessageStatus.PENDING else "failed"


def _transport_error(text: str) -> str:
    # keep in step with delivery.send and delivery._describe, which word these errors
    if text.startswith("timed out"):
        return "timeout"
    if text.startswith("egress refused"):  # egress.EgressPolicy's refusals
        return "egress_refused"
    name, sep, _ = text.partition(": ")
    if sep and name.isidentifier():
        return name  # an exception's class name (aiohttp.ClientConnectorError ...)
    return "_OTHER"  # an unpreparable task (delivery.not_sent)


def _http_status(span: trace.Span, status: int, *, server: bool) -> None:
    """``http.response.status_code``; an error from 500 (server span) or 400 (client span)."""
    span.set_attribute("http.response.status_code", status)
    if status >= (500 if server else 400):
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
