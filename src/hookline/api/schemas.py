"""Request and response shapes, field for field as the Svix API (camelCase on the wire).

Input structs refuse unknown fields (422 naming the field): a misspelt or newer field must not be
dropped in silence. Svix fields that hookline does not implement are declared as ``NotImplemented``
and listed in the struct's ``unsupported``: null or absent is accepted, any other value is refused
with a 422 that says so. PATCH structs default every field to UNSET so that "absent" and "null"
stay different.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

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
# The scheme (http or https) and the host are checked by the handlers, with their own messages.
Url = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=65536,
        extra_json_schema={"format": "uri", "pattern": "^[hH][tT][tT][pP][sS]?://"},
    ),
]
DateTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]  # RFC 3339
Timestamp = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]  # answered, with a Z
# A Svix field hookline does not implement: typed for the document as null, the one value taken.
NotImplemented = Annotated[
    Any, Meta(extra_json_schema={"type": "null", "description": "Not implemented by hookline."})
]
Metadata = dict[str, str]


class _In(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    # (attribute, wire name) of the NotImplemented fields, refused unless null (http.decode)
    unsupported: ClassVar[tuple[tuple[str, str], ...]] = ()


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
    created_at: Timestamp
    updated_at: Timestamp


# event types -----------------------------------------------------------------------------------
class EventTypeIn(_In):
    name: EventTypeName
    description: str
    archived: bool = False
    deprecated: bool = False
    feature_flag: Uid | None = None
    schemas: dict[str, Any] | None = None
    feature_flags: NotImplemented = None  # Svix's newer list of flags
    group_name: NotImplemented = None
    unsupported = (("feature_flags", "featureFlags"), ("group_name", "groupName"))


class EventTypeUpdate(_In):
    description: str
    archived: bool = False
    deprecated: bool = False
    feature_flag: Uid | None = None
    schemas: dict[str, Any] | None = None
    feature_flags: NotImplemented = None  # Svix's newer list of flags
    group_name: NotImplemented = None
    unsupported = (("feature_flags", "featureFlags"), ("group_name", "groupName"))


class EventTypePatch(_In):
    description: str | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
    deprecated: bool | UnsetType = UNSET
    feature_flag: Uid | UnsetType | None = UNSET
    schemas: dict[str, Any] | UnsetType | None = UNSET
    feature_flags: NotImplemented = None
    group_name: NotImplemented = None
    unsupported = (("feature_flags", "featureFlags"), ("group_name", "groupName"))


class EventTypeOut(_Out):
    name: str
    description: str
    archived: bool
    deprecated: bool
    feature_flag: str | None
    schemas: dict[str, Any] | None
    created_at: Timestamp
    updated_at: Timestamp


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
    # Svix's deprecated endpoint version (older SDKs send 1): it selects nothing, in Svix either
    version: Annotated[int, Meta(ge=1)] | None = None


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
    created_at: Timestamp
    updated_at: Timestamp


class EndpointSecretOut(_Out):
    key: str


class EndpointSecretRotateIn(_In):
    key: Secret | None = None
    grace_period_seconds: Annotated[int, Meta(ge=0, le=604800)] | None = None


class EndpointHeadersIn(_In):
    headers: dict[str, str]


class EndpointHeadersPatchIn(_In):
    headers: dict[str, str | None] = {}
    delete_headers: list[str] = []  # names to remove (as a null value in ``headers`` does)


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
    since: DateTime
    until: DateTime | None = None


class RecoverOut(_Out):
    id: str
    status: str
    task: str
    updated_at: Timestamp


# messages and attempts -------------------------------------------------------------------------
class MessageIn(_In):
    """Every field of Svix's ``MessageIn`` (svix SDK 2.9.1); ``unsupported`` ones are refused.

    The svix SDK sends only the fields its caller set.
    """

    event_type: EventTypeName
    # kept as the exact bytes received: they are what gets delivered (a JSON object, as in Svix)
    payload: Annotated[msgspec.Raw, Meta(extra_json_schema={"type": "object"})]
    event_id: Uid | None = None
    channels: list[Channel] | None = None
    tags: Annotated[list[Tag], Meta(min_length=1, max_length=5)] | None = None
    deliver_at: Annotated[datetime, Meta(tz=True)] | None = None  # RFC 3339 with an offset
    application: ApplicationIn | None = None
    # Days the payload is kept (Svix's bounds and default; null: the payload_retention_days
    # setting). Then it reads {"expired": true} and the message cannot be resent.
    payload_retention_period: Annotated[int, Meta(ge=5, le=90)] | None = None
    payload_retention_hours: NotImplemented = None
    transformations_params: NotImplemented = None
    unsupported = (
        ("payload_retention_hours", "payloadRetentionHours"),
        ("transformations_params", "transformationsParams"),
    )


class MessageOut(_Out):
    id: str
    event_type: str
    event_id: str | None
    channels: list[str] | None
    timestamp: Timestamp
    payload: Annotated[msgspec.Raw, Meta(extra_json_schema={"type": "object"})]
    tags: list[str] | None = None
    deliver_at: Timestamp | None = None


class EmptyOut(_Out):
    """``{}``: what Svix answers where it has nothing to say (the SDK reads it as EmptyResponse)."""


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
    timestamp: Timestamp


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
    next_attempt: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
