"""OpenTelemetry traces, an optional extra (``pip install 'hookline[otel]'``), set by ``OTEL_*``.

Tracing is on when the extra is installed and the standard variables ask for it:

- ``OTEL_SDK_DISABLED=true`` turns it off, whatever else is set;
- ``OTEL_TRACES_EXPORTER`` names the exporters (``otlp``, ``console``, comma-separated;
  ``none``: off); unset, ``otlp`` is meant when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and tracing is off otherwise;
- the rest is the SDK's own: ``OTEL_SERVICE_NAME`` (default here ``hookline``),
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_PROPAGATORS``, ``OTEL_BSP_*``,
  ``OTEL_EXPORTER_OTLP_*``.

Otherwise ``configure`` returns None, this module imports nothing of OpenTelemetry, and the
hot paths pay one ``is None`` check: the API's ingest handler and the worker's delivery test
``tracing is not None`` and go on as before. Variables that ask for traces while the extra is
missing, or that name an unknown exporter, cost a warning, not the start: ``OTEL_*`` variables
are often set for every process of a host or a cluster, not for hookline alone.

When on, ``hookline.spans`` (the one module that imports OpenTelemetry) makes two spans:

- ``hookline.ingest`` (SERVER) around ``create_message``, a child of the client's
  ``traceparent`` if it sent one; its W3C ``traceparent`` is stored with the message
  (``Message.trace_context``);
- ``hookline.attempt`` (CLIENT), one per delivery attempt, the root of a trace of its own with
  a Link to the stored ingest context (why a Link and not a child: ``hookline.spans``); its
  context goes to the receiver in ``traceparent`` (with ``OTEL_PROPAGATORS``' other headers).

Both carry the message id as ``messaging.message.id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from hookline.models import Claim, Completion, Message

EXPORTERS = ("otlp", "console")
INSTALL_HINT = "pip install 'hookline[otel]'"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

log = structlog.get_logger("hookline.tracing")


class IngestSpan(Protocol):
    """The span around one message's ingest, handed to ``create_message``."""

    def stamp(self, msg: Message) -> Message:
        """``msg`` with this span's ``traceparent`` as ``trace_context``; names it on the span."""
        ...


# ``create_message`` again, now inside the span; returns its response
Create = Callable[[IngestSpan], Awaitable[object]]
# ``Worker._deliver`` again, with the headers to send; returns the outcome it queued
Deliver = Callable[[Mapping[str, str]], Awaitable["Completion | None"]]


class Tracing(Protocol):
    """What the API and the worker call when tracing is on (``hookline.spans.Tracing``)."""

    async def ingest(self, headers: Mapping[str, str], create: Create) -> object:
        """Run ``create`` inside an ingest span continuing the trace in ``headers``, if any."""
        ...

    async def attempt(self, claim: Claim, deliver: Deliver) -> Completion | None:
        """Run ``deliver`` inside an attempt span, giving it that span's propagation headers."""
        ...

    def shutdown(self) -> None:
        """Export what is still buffered and stop (blocks up to the exporters' timeouts)."""
        ...


def exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters ``env`` asks for; empty: tracing is off. Unknown names are warned about."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        # the SDK's default exporter is otlp; an endpoint is what says "send traces there"
        return ("otlp",) if any(env.get(v, "").strip() for v in _ENDPOINT_VARIABLES) else ()
    names = tuple(dict.fromkeys(n.strip() for n in named.split(",") if n.strip()))
    if "none" in names:
        return ()
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        log.warning("tracing_exporter_unknown", exporters=unknown, supported=",".join(EXPORTERS))
    return tuple(n for n in names if n in EXPORTERS)


def configure(env: Mapping[str, str]) -> Tracing | None:
    """The process's tracing from ``OTEL_*`` variables, or None when it is off or unavailable.

    ``env`` decides whether tracing is on; the SDK reads its other settings from
    ``os.environ`` itself.
    """
    names = exporters(env)
    if not names:
        return None
    try:
        from hookline import spans
    except ImportError as exc:
        log.warning(
            "tracing_unavailable",
            error=f"{type(exc).__name__}: {exc}",
            hint=f"OTEL_* variables ask for traces: {INSTALL_HINT}",
        )
        return None
    return spans.from_env(names)
