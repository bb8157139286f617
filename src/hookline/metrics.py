"""Prometheus metrics: one ``Metrics`` per process, built by the composition root.

Every metric hookline exports is declared here, with bounded label sets: routes are templates,
outcomes and reasons fixed lists. Per-endpoint series (one per endpoint, unbounded in number)
exist only with ``metrics_endpoint_labels``.

A process serves its own ``registry``. A role forked into ``--processes N`` children runs in
prometheus-client's multiprocess mode instead (``enable_multiprocess`` before the children
build their ``Metrics``): each child writes its values to files in one directory, and any
child's ``/metrics`` answers for all of them (``render``). Gauges say how they combine then
(``multiprocess_mode``): counts the store reports are the same in every process (``max``),
in-flight work adds up over the live processes (``livesum``).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

import hookline

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable

# No ``*_created`` series: they double the series per counter and histogram, and Prometheus
# gets counter resets from the values themselves.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Fixed label values (keep in step with deploy/prometheus/alerts.yml and docs/slo.md).
INGEST_OUTCOMES = ("accepted", "rejected", "throttled", "unavailable")
ATTEMPT_OUTCOMES = (
    "success",
    "http_4xx",
    "http_5xx",
    "timeout",
    "connect_error",
    "egress_refused",
)
DEFER_REASONS = ("rate_limited", "circuit_open", "endpoint_busy")
STORE_OPERATIONS = ("ingest", "claim", "complete")

# Seconds. API answers take milliseconds; attempts are bounded by request_timeout (15 s by
# default); end-to-end latency runs from milliseconds (healthy) to days (the retry schedule).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21600.0,
    86400.0,
)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """The process's metrics; ``registry`` is what ``/metrics`` serves (see ``render``)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, endpoint_labels: bool = False
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.endpoint_labels = endpoint_labels
        self.info = Gauge(
            "hookline_info",
            "Always 1; the version label says which hookline runs.",
            ["version"],
            registry=r,
            multiprocess_mode="max",
        )
        self.info.labels(hookline.__version__).set(1)
        # ingest and the API
        self.messages_ingested = Counter(
            "hookline_messages_ingested",
            "Message creation requests, by outcome: accepted (202), rejected (4xx but 429), "
            "throttled (429, backpressure), unavailable (5xx).",
            ["outcome"],
            registry=r,
        )
        self.http_requests = Counter(
            "hookline_http_requests",
            "API requests answered, by route template and status class.",
            ["route", "status_class"],
            registry=r,
        )
        self.http_request_duration = Histogram(
            "hookline_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.backpressure_active = Gauge(
            "hookline_backpressure_active",
            "1 while message creation is refused (429) because the backlog is over max_backlog.",
            registry=r,
            multiprocess_mode="max",
        )
        self.backlog_due = Gauge(
            "hookline_backlog_due",
            "Delivery tasks due now and not yet sent (counted up to max_backlog + 1).",
            registry=r,
            multiprocess_mode="max",
        )
        self.backlog_oldest_age = Gauge(
            "hookline_backlog_oldest_age_seconds",
            "How long the oldest due delivery task has been waiting; 0 when none is due.",
            registry=r,
            multiprocess_mode="max",
        )
        # delivery
        self.delivery_attempts = Counter(
            "hookline_delivery_attempts",
            "Delivery requests made, by outcome: success (2xx), http_4xx (also 1xx and 3xx: "
            "redirects are not followed), http_5xx, timeout, connect_error (no answer: refused, "
            "reset, DNS), egress_refused (the address is not allowed). A task whose request "
            "could not be built is recorded as a failed attempt but not counted here.",
            ["outcome"],
            registry=r,
        )
        self.delivery_attempt_duration = Histogram(
            "hookline_delivery_attempt_duration_seconds",
            "Duration of one delivery attempt, connect to answer (or failure).",
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "hookline_delivery_latency_seconds",
            "Time from when a message first fell due (its creation, or its deliverAt when "
            "later) to its first successful delivery to an endpoint: retries and the time held "
            "back by rate limits, open circuits and busy endpoints included; manual resends "
            "not counted.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.deliveries_deferred = Counter(
            "hookline_deliveries_deferred",
            "Due delivery tasks a claim left waiting, by reason: rate_limited (the endpoint's "
            "bucket is empty), circuit_open (cooling down, or its probe is out), endpoint_busy "
            "(the worker's endpoint_concurrency slots are in use). Each task counts once per "
            "due time, at the first claim that had to leave it waiting (not at every claim "
            "it waits through), so the rate is tasks per second comparable to attempts; a task "
            "left only because the worker was full is not counted. Counted per worker "
            "process: with several, a task they all had to leave counts once in each.",
            ["reason"],
            registry=r,
        )
        self.backlog_stalled_age = Gauge(
            "hookline_backlog_stalled_age_seconds",
            "How long the oldest due delivery that nothing holds back (no rate limit, no open "
            "circuit, no delivery in flight to its endpoint) has waited: work no worker takes. "
            "Looked for only once the oldest due delivery is older than 60 s; 0 until then.",
            registry=r,
            multiprocess_mode="max",
        )
        self.deliveries_in_flight = Gauge(
            "hookline_deliveries_in_flight",
            "Delivery tasks a worker has claimed and not yet finished (requests in progress).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.circuits_open = Gauge(
            "hookline_circuits_open",
            "Endpoints whose circuit is open (deliveries paused until a probe succeeds).",
            registry=r,
            multiprocess_mode="max",
        )
        self.endpoints_disabled = Gauge(
            "hookline_endpoints_disabled",
            "Endpoints that are disabled (by hand, by a 410, or after failing too long).",
            registry=r,
            multiprocess_mode="max",
        )
        self.worker_heartbeat_age = Gauge(
            "hookline_worker_heartbeat_age_seconds",
            "Seconds since a worker loop last went round; grows while a worker is stuck.",
            registry=r,
            multiprocess_mode="max",
        )
        # the store
        self.store_commit_duration = Histogram(
            "hookline_store_commit_duration_seconds",
            "Duration of a store write transaction, BEGIN to COMMIT, by operation.",
            ["operation"],
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.store_batch_size = Histogram(
            "hookline_store_batch_size",
            "Items written per store transaction (group commit), by operation.",
            ["operation"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        # only with metrics_endpoint_labels: one series per endpoint and outcome
        self.endpoint_attempts = (
            Counter(
                "hookline_endpoint_delivery_attempts",
                "Delivery attempts by application, endpoint and outcome (metrics_endpoint_labels).",
                ["app_id", "endpoint_id", "outcome"],
                registry=r,
            )
            if endpoint_labels
            else None
        )
        # Children made now, so that every series exists from the first scrape at 0: a rate()
        # over a counter that appears only on its first increment misses that increment.
        for outcome in INGEST_OUTCOMES:
            self.messages_ingested.labels(outcome)
        for outcome in ATTEMPT_OUTCOMES:
            self.delivery_attempts.labels(outcome)
        for reason in DEFER_REASONS:
            self.deliveries_deferred.labels(reason)
        for operation in STORE_OPERATIONS:
            self.store_commit_duration.labels(operation)
            self.store_batch_size.labels(operation)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type: this process's, or all children's."""
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and getattr(values.ValueClass, "_multiprocess", False):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(merged), CONTENT_TYPE
        return generate_latest(self.registry), CONTENT_TYPE


def enable_multiprocess(directory: str) -> None:
    """Record metric values in files under ``directory``, shared by forked children.

    Call before any child builds its ``Metrics``: a value takes its storage when it is made.
    """
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def process_exited(pid: int) -> None:
    """Drop a dead child's live gauges (``livesum``) from the merged view."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def attempt_outcome(status: int, error: str | None, egress_refused: bool, timed_out: bool) -> str:
    """The ``outcome`` label of one attempt (status 0: no HTTP answer; ``error`` says why)."""
    if status:
        if 200 <= status < 300:
            return "success"
        # a redirect is not followed and counts as a refusal, with the 4xx answers
        return "http_4xx" if status < 500 else "http_5xx"
    if egress_refused:
        return "egress_refused"
    if timed_out:
        return "timeout"
    return "connect_error"


# Every name hookline exports, for documentation checks (deploy/, docs/): a Metrics that
# nothing records into.
REGISTRY = Metrics(endpoint_labels=True).registry
