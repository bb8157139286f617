"""Frozen domain records shared by the store, the API and the worker.

Times are float epoch seconds (UTC) inside hookline; the API turns them into RFC 3339.
"""

from __future__ import annotations

import enum

import msgspec


class MessageStatus(enum.IntEnum):
    """Status of one message towards one endpoint; values match Svix's ``MessageStatus``."""

    SUCCESS = 0
    PENDING = 1
    FAIL = 2
    SENDING = 3

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    MessageStatus.SUCCESS: "success",
    MessageStatus.PENDING: "pending",
    MessageStatus.FAIL: "fail",
    MessageStatus.SENDING: "sending",
}


class Trigger(enum.IntEnum):
    """Why an attempt was made; values match Svix's ``MessageAttemptTriggerType``."""

    SCHEDULED = 0
    MANUAL = 1


class Org(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: float


class Token(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    name: str
    created_at: float


class Application(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    name: str
    uid: str | None = None
    throttle_rate: int | None = None
    metadata: dict[str, str] = {}
    created_at: float
    updated_at: float


class EventType(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    name: str
    description: str = ""
    archived: bool = False
    deprecated: bool = False
    feature_flag: str | None = None
    schemas: dict[str, object] | None = None
    created_at: float
    updated_at: float


class SigningKey(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint secret; ``expires_at`` is set on a key that was rotated out."""

    secret: str
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    app_id: str
    url: str
    uid: str | None = None
    description: str = ""
    disabled: bool = False
    event_types: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    rate_limit: int | None = None
    throttle_rate: int | None = None
    metadata: dict[str, str] = {}
    headers: dict[str, str] = {}
    keys: tuple[SigningKey, ...] = ()
    created_at: float
    updated_at: float

    def accepts(self, event_type: str, channels: tuple[str, ...] | None) -> bool:
        """Whether a message of this type and channels is routed here (Svix rules)."""
        return routes_to(self.disabled, self.event_types, self.channels, event_type, channels)


def routes_to(
    disabled: bool,
    endpoint_types: tuple[str, ...] | None,
    endpoint_channels: tuple[str, ...] | None,
    event_type: str,
    channels: tuple[str, ...] | None,
) -> bool:
    """The routing rule on an endpoint's filter fields alone (stores use it without an Endpoint)."""
    if disabled:
        return False
    if endpoint_types and event_type not in endpoint_types:
        return False
    if endpoint_channels:
        return bool(channels) and any(c in endpoint_channels for c in channels or ())
    return True


class Message(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    app_id: str
    event_type: str
    payload: bytes  # the exact JSON bytes that are delivered
    event_id: str | None = None
    channels: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None  # free-form labels the message list filters on
    # When the first attempt may be made (Svix's ``deliverAt``): the delivery tasks are due then,
    # not at ``created_at``. None, or a time not after ``created_at``: at once.
    deliver_at: float | None = None
    created_at: float
    # When the payload (and the response bodies of its attempts) may be deleted: creation plus
    # ``payloadRetentionPeriod`` days, or the ``payload_retention_days`` setting.
    expires_at: float | None = None
    # W3C ``traceparent`` of the ingest span when tracing is on, so that delivery spans link to it
    trace_context: str | None = None

    @property
    def first_due_at(self) -> float:
        """When this message's delivery tasks first fall due."""
        if self.deliver_at is None:
            return self.created_at
        return max(self.created_at, self.deliver_at)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The state of one message towards one endpoint (the delivery task)."""

    msg_id: str
    endpoint_id: str
    app_id: str
    status: MessageStatus
    attempts: int
    next_attempt_at: float | None
    updated_at: float


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    msg_id: str
    endpoint_id: str
    app_id: str
    url: str
    status: MessageStatus
    response_status_code: int
    response: str
    duration_ms: int
    trigger: Trigger
    created_at: float


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery task leased to a worker, with everything needed to send it."""

    message: Message
    endpoint: Endpoint
    attempts: int  # attempts made before this one
    lease: int  # fencing token: the completion must quote it
    trigger: Trigger


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker reports for one claim: the attempt and the next state of the task."""

    attempt: Attempt
    lease: int
    next_status: MessageStatus
    next_attempt_at: float | None
    disable_endpoint: bool = False
    attempt_number: int = 0  # 1 for the first attempt of the task (0: not known)


class EndpointStats(msgspec.Struct, frozen=True, kw_only=True):
    success: int = 0
    pending: int = 0
    sending: int = 0
    fail: int = 0
    canceled: int = 0


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    """An idempotent POST's first answer, replayed to repeats of the same key."""

    status: int
    body: bytes


class Page(msgspec.Struct, frozen=True, kw_only=True):
    """Keyset paging: ``after`` is the last id the caller saw (exclusive)."""

    limit: int = 50
    after: str | None = None
    descending: bool = False


class ClaimPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """What a claimer can take on now; the store adds what all claimers share.

    The claimer knows its own free slots: ``limit`` deliveries in all, and per endpoint
    ``endpoint_slots`` minus what it already has ``in_flight`` there. The store knows what is
    shared between processes: rate-limit allowance and open circuits (``EndpointHealth``).
    """

    limit: int
    endpoint_slots: int = 2**31 - 1  # no per-endpoint cap unless the claimer sets one
    in_flight: dict[str, int] = {}  # endpoint id -> deliveries this claimer has in flight
    # Count the deferrals (below) of tasks that fell due after this time, normally the
    # claimer's previous claim; None: count nothing, and the claim costs nothing extra.
    deferred_since: float | None = None
    # Filled in by claim_due when ``deferred_since`` is set: reason (DEFER_* below) -> how many
    # due tasks, due after ``deferred_since``, it left waiting because their endpoint could take
    # no more for that reason. Each task is so counted once per claimer and due time.
    deferred: dict[str, int] = {}

    def free(self, endpoint_id: str) -> int:
        return max(0, self.endpoint_slots - self.in_flight.get(endpoint_id, 0))


# Why a due task was left waiting (ClaimPolicy.deferred); keep in step with metrics.DEFER_REASONS.
DEFER_CIRCUIT_OPEN = "circuit_open"  # the circuit is open: cooling down, or its probe is out
DEFER_RATE_LIMITED = "rate_limited"  # the endpoint's rate-limit bucket is empty
DEFER_ENDPOINT_BUSY = "endpoint_busy"  # the claimer's slots for the endpoint are all in use


class Release(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed task handed back unsent: no attempt recorded, no retry spent."""

    msg_id: str
    endpoint_id: str
    lease: int  # fencing token of the claim being given back
    due_at: float  # when the task may be claimed again


class EndpointHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Per-endpoint delivery state, stored so that restarts and other workers share it.

    ``tokens``/``tokens_at`` are the rate-limit bucket (None: full). While ``circuit_open``,
    nothing is sent before ``paused_until``; then one probe goes out (``probing``), and its
    outcome closes the circuit or doubles ``cooldown``.
    """

    endpoint_id: str
    failures: int = 0  # consecutive failed attempts
    failing_since: float | None = None  # when the current run of failures began
    circuit_open: bool = False
    paused_until: float | None = None
    cooldown: float = 0.0  # seconds; the wait that set paused_until
    probing: bool = False
    tokens: float | None = None
    tokens_at: float | None = None

    @property
    def is_default(self) -> bool:
        """Healthy and not rate limited: nothing worth storing (stores drop such rows)."""
        return self == EndpointHealth(endpoint_id=self.endpoint_id)


class EndpointSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Endpoint counts for the operator's gauges (``Store.endpoint_summary``)."""

    circuits_open: int = 0  # enabled endpoints whose circuit is open (cooling down or probing)
    disabled: int = 0  # endpoints disabled by hand, by a 410 or after failing too long


class HealthChange(enum.Enum):
    """A state change of an endpoint, logged once and (disable) announced by webhook."""

    CIRCUIT_OPENED = "circuit_opened"
    CIRCUIT_CLOSED = "circuit_closed"
    DISABLED = "endpoint_disabled"


class HealthEvent(msgspec.Struct, frozen=True, kw_only=True):
    endpoint_id: str
    change: HealthChange
    at: float
    failures: int
    failing_since: float | None = None
    paused_until: float | None = None
