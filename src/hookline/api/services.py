"""What the API handlers use, handed to them by the composition root (``app.py``).

Handlers see these and nothing else: not the settings they do not read, not the worker, and
not ``app.py`` itself, which imports this package and must not be imported back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hookline import egress
from hookline.cache import AppCache, TokenCache
from hookline.logs import Throttle
from hookline.store.base import Store
from hookline.wakeup import Wakeup

if TYPE_CHECKING:
    from hookline.api.backlog import Backlog
    from hookline.api.health import Readiness
    from hookline.metrics import Metrics
    from hookline.models import Application, Endpoint
    from hookline.tracing import Tracing

# Called after an endpoint was created, updated or deleted (operational webhooks).
EndpointHook = Callable[[str, "Application", "Endpoint"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Services:
    store: Store
    clock: Callable[[], float]  # the store's clock, for every timestamp the API writes
    wakeup: Wakeup  # told after each commit that adds work, so a worker starts at once
    tokens: TokenCache
    apps: AppCache
    egress_policy: egress.EgressPolicy
    max_payload_bytes: int
    backlog: Backlog | None = None  # None: message creation is never refused for backlog
    on_endpoint_change: EndpointHook | None = None
    metrics: Metrics | None = None  # None: metrics are off (``Settings.metrics``)
    payload_retention_days: float = 90.0  # the default ``payloadRetentionPeriod`` of a message
    tracing: Tracing | None = None  # None: traces are off (``hookline.tracing``)
    readiness: Readiness | None = None  # /health/ready's checks and what they reuse
    # auth_failed log throttles by reason (api/http.py); one set per API app, not per process
    auth_failures: dict[str, Throttle] = field(default_factory=dict)
