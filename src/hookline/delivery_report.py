"""What the worker reports about its deliveries: one log line per attempt, and the metrics.

The attempt line (``delivery_attempt``, info) carries what an operator needs to follow one
delivery: outcome, status code, duration, attempt number and what happens next. The ids
(``msg_id``, ``endpoint_id``, ``app_id``, ``attempt_id``) are context variables the worker
binds for the whole delivery (``structlog.contextvars``), so every line logged meanwhile carries
them too. Never logged: the payload, signing secrets, custom header values, the endpoint's URL
(it may hold a token) and the receiver's answer; the error text of a failed request is left out
as well, since it can quote the URL: ``outcome`` says what kind of failure it was, and the
attempt in the API holds the text for the tenant.

Metrics go to ``Metrics`` (None: nothing is recorded, and nothing is looked up): the children
of every fixed label are resolved once here, so an attempt costs a few increments.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from hookline import delivery
from hookline import metrics as metrics_
from hookline.models import Claim, Completion, EndpointSummary, MessageStatus, Trigger

log = structlog.get_logger("hookline.worker")

UNPREPARED = "unprepared"  # the log's outcome for an attempt that never became a request


def outcome(response: delivery.Response) -> str:
    """The ``outcome`` label of one attempt's response (``metrics.ATTEMPT_OUTCOMES``)."""
    failure = response.failure
    return metrics_.attempt_outcome(
        response.status,
        response.error,
        egress_refused=failure is delivery.Failure.EGRESS_REFUSED,
        timed_out=failure is delivery.Failure.TIMEOUT,
    )


class DeliveryReport:
    """Logs each attempt and records the delivery metrics of one worker."""

    def __init__(self, metrics: metrics_.Metrics | None) -> None:
        self._metrics = metrics
        if metrics is None:
            return
        self._attempts = {o: metrics.delivery_attempts.labels(o) for o in metrics_.ATTEMPT_OUTCOMES}
        self._deferred = {r: metrics.deliveries_deferred.labels(r) for r in metrics_.DEFER_REASONS}
        self._duration = metrics.delivery_attempt_duration
        self._latency = metrics.delivery_latency
        self._in_flight = metrics.deliveries_in_flight
        self._per_endpoint = metrics.endpoint_attempts

    @property
    def counts_deferrals(self) -> bool:
        """Whether claims should count what they hold back (it costs a statement per claim)."""
        return self._metrics is not None

    def attempt(self, claim: Claim, done: Completion, response: delivery.Response) -> None:
        """One request went out (or failed to): its log line and metrics."""
        label = outcome(response)
        _log(done, label)
        if self._metrics is None:
            return
        self._attempts[label].inc()
        self._duration.observe(response.seconds)
        if self._per_endpoint is not None:
            a = done.attempt
            self._per_endpoint.labels(a.app_id, a.endpoint_id, label).inc()
        # A task succeeds once, so a success is its first unless a resend queued it again:
        # measured from when the message first fell due (deliverAt, when later than its
        # creation), so that a scheduled message does not count its wait as latency.
        if done.next_status == MessageStatus.SUCCESS and claim.trigger is Trigger.SCHEDULED:
            self._latency.observe(max(0.0, done.attempt.created_at - claim.message.first_due_at))

    def unprepared(self, done: Completion) -> None:
        """An attempt recorded without a request (``delivery.not_sent``): logged, not counted.

        ``hookline_delivery_attempts`` counts requests made; this one never was, and no outcome
        label fits it. ``delivery_unprepared`` (a warning) says why.
        """
        _log(done, UNPREPARED)

    def in_flight(self, count: int) -> None:
        if self._metrics is not None:
            self._in_flight.set(count)

    def deferred(self, counts: Mapping[str, int]) -> None:
        """What one claim left waiting, by reason (``ClaimPolicy.deferred``)."""
        if self._metrics is not None:
            for reason, n in counts.items():
                self._deferred[reason].inc(n)

    def endpoints(self, summary: EndpointSummary) -> None:
        if self._metrics is not None:
            self._metrics.circuits_open.set(summary.circuits_open)
            self._metrics.endpoints_disabled.set(summary.disabled)


def _log(done: Completion, label: str) -> None:
    a = done.attempt
    retrying = done.next_status == MessageStatus.PENDING
    log.info(
        "delivery_attempt",
        outcome=label,
        status_code=a.response_status_code,
        duration_ms=a.duration_ms,
        attempt=done.attempt_number,
        trigger="manual" if a.trigger is Trigger.MANUAL else "scheduled",
        next_state=MessageStatus(done.next_status).text,
        next_attempt_at=done.next_attempt_at if retrying else None,
    )
