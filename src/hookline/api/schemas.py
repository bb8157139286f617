"""Request and response shapes, field for field as the Svix API (camelCase on the wire).

Input structs ignore unknown fields (as Svix does); Svix fields that hookline does not implement
are declared and refused when given (``UNSUPPORTED``), never dropped. PATCH structs default every
field to UNSET so that "absent" and "null" stay different.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from hookline.signing import SECRET_PATTERN

NAME_PATTERN = r"^[a-zA-Z0-9\-_.]+$"

Uid = Annotated[str, Meta(min_length=1, max_length=256, pattern=NAME_PATTERN)]
EventTypeName = Annotated[str, Meta(min_length=1, max_length=256, pattern=NAME_PATTERN)]
Channel = Annotated[str, Meta(min_length=1, max_length=128, pattern=NAME_PATTERN)]
# Svix's message tags: the same shape as channels, plus "/", "\" and "#" (as in Svix's later API
# documents; the reference document in use predates tags).
Tag = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\-_./\\#]+$")]
Secret = Annotated[str, Meta(pattern=SECRET_PATTERN)]
Rate = Annotated[int, Meta(ge=0, le=65535)]
Url = Annotated[str, Meta(min_length=1, max_length=65536)]
Metadata = dict[str, str]


class _In(msgspec.Struct, rename="camel", kw_only=True):
    pass


class _Out(msgspec.Struct, rename="camel", kw_only=True):
    pass


# applications ----------------------------------------------------------------------------------
class ApplicationIn(_In):
    name: Annotated[str, Meta(min_length=1)]
    uid: Uid | None = None
    throttle_rate: Rate | None = None
    metadata: Metadata = {}


class ApplicationPatch(_In):
    name: Annotated[str, Meta(min_length=1)] | UnsetType = UNSET
    uid: Uid | UnsetType | None = UNSET
    throttle_rate: Rate | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET


class ApplicationOut(_Out):
    id: str
    name: str
    uid: str | None
    throttle_rate: int | None
    metadata: Metadata
    created_at: str
    updated_at: str


# event types -----------------------------------------------------------------------------------
class EventTypeIn(_In):
    name: EventTypeName
    description: str
    archived: bool = False
    deprecated: bool = False
    feature_flag: Uid | None = None
    schemas: dict[str, Any] | None = None


class EventTypeUpdate(_In):
    description: str
    archived: bool = False
    deprecated: bool = False
    feature_flag: Uid | None = None
    schemas: dict[str, Any] | None = None


class EventTypePatch(_In):
    description: str | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
    deprecated: bool | UnsetType = UNSET
    feature_flag: Uid | UnsetType | None = UNSET
    schemas: dict[str, Any] | UnsetType | None = UNSET


class EventTypeOut(_Out):
    name: str
    description: str
    archived: bool
    deprecated: bool
    feature_flag: str | None
    schemas: dict[str, Any] | None
    created_at: str
    updated_at: str


# endpoints -------------------------------------------------------------------------------------
class EndpointIn(_In):
    """``filterTypes`` and ``rateLimit`` are the older Svix names, still accepted."""

    url: Url
    description: str = ""
    uid: Uid | None = None
    disabled: bool = False
    event_types: list[EventTypeName] | None = None
    filter_types: list[EventTypeName] | None = None
    channels: list[Channel] | None = None
    throttle_rate: Rate | None = None
    rate_limit: Rate | None = None
    metadata: Metadata = {}
    secret: Secret | None = None
    headers: dict[str, str] | None = None


class EndpointUpdate(_In):
    url: Url
    description: str = ""
    uid: Uid | None = None
    disabled: bool = False
    event_types: list[EventTypeName] | None = None
    filter_types: list[EventTypeName] | None = None
    channels: list[Channel] | None = None
    throttle_rate: Rate | None = None
    rate_limit: Rate | None = None
    metadata: Metadata = {}


class EndpointPatch(_In):
    url: Url | UnsetType = UNSET
    description: str | UnsetType = UNSET
    uid: Uid | UnsetType | None = UNSET
    disabled: bool | UnsetType = UNSET
    event_types: list[EventTypeName] | UnsetType | None = UNSET
    filter_types: list[EventTypeName] | UnsetType | None = UNSET
    channels: list[Channel] | UnsetType | None = UNSET
    throttle_rate: Rate | UnsetType | None = UNSET
    rate_limit: Rate | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET


class EndpointOut(_Out):
    id: str
    url: str
    description: str
    uid: str | None
    disabled: bool
    event_types: list[str] | None
    filter_types: list[str] | None
    channels: list[str] | None
    throttle_rate: int | None
    rate_limit: int | None
    metadata: Metadata
    created_at: str
    updated_at: str


class EndpointSecretOut(_Out):
    key: str


class EndpointSecretRotateIn(_In):
    key: Secret | None = None
    grace_period_seconds: Annotated[int, Meta(ge=0, le=604800)] | None = None


class EndpointHeadersIn(_In):
    headers: dict[str, str]


class EndpointHeadersPatchIn(_In):
    headers: dict[str, str | None]


class EndpointHeadersOut(_Out):
    headers: dict[str, str]
    sensitive: list[str]


class EndpointStatsOut(_Out):
    success: int
    pending: int
    sending: int
    fail: int
    canceled: int


class RecoverIn(_In):
    since: str
    until: str | None = None


class RecoverOut(_Out):
    id: str
    status: str
    task: str
    updated_at: str


# messages and attempts -------------------------------------------------------------------------
class MessageIn(_In):
    """Every field of Svix's ``MessageIn`` (svix SDK 2.9.1); ``UNSUPPORTED`` ones are refused.

    Fields Svix does not define are ignored, as Svix does (and a body that is not valid JSON text
    there is still a 400, see ``http.decode``). The svix SDK sends only the fields its caller set.
    """

    event_type: EventTypeName
    payload: msgspec.Raw  # kept as the exact bytes received: they are what gets delivered
    event_id: Uid | None = None
    channels: list[Channel] | None = None
    tags: Annotated[list[Tag], Meta(min_length=1, max_length=5)] | None = None
    deliver_at: Annotated[datetime, Meta(tz=True)] | None = None  # RFC 3339 with an offset
    application: ApplicationIn | None = None
    payload_retention_period: int | None = None  # accepted and ignored (docs/architecture.md)
    # known to Svix, not implemented: a value other than null is refused (see UNSUPPORTED)
    payload_retention_hours: Any = None
    transformations_params: Any = None


# MessageIn fields refused with a 422 unless null: (attribute, wire name).
UNSUPPORTED = (
    ("payload_retention_hours", "payloadRetentionHours"),
    ("transformations_params", "transformationsParams"),
)


class MessageOut(_Out):
    id: str
    event_type: str
    event_id: str | None
    channels: list[str] | None
    timestamp: str
    payload: msgspec.Raw | None = None
    tags: list[str] | None = None
    deliver_at: str | None = None


class MessageAttemptOut(_Out):
    id: str
    msg_id: str
    endpoint_id: str
    url: str
    response: str
    response_status_code: int
    response_duration_ms: int
    status: int
    status_text: str
    trigger_type: int
    timestamp: str


class MessageEndpointOut(_Out):
    id: str
    url: str
    description: str
    uid: str | None
    disabled: bool
    event_types: list[str] | None
    channels: list[str] | None
    throttle_rate: int | None
    status: int
    status_text: str
    next_attempt: str | None
    created_at: str
    updated_at: str
