"""Operational webhooks: hookline's own events (endpoint disabled, attempts failing ...) to the
operator's URL, signed and retried like any other message."""

from __future__ import annotations

from collections.abc import Sequence

from hookline.models import Application, Completion, Endpoint, HealthEvent
from hookline.settings import Settings
from hookline.store.base import Store
from hookline.wakeup import Wakeup


class OperationalWebhooks:
    @classmethod
    async def configure(
        cls, store: Store, settings: Settings, wakeup: Wakeup
    ) -> OperationalWebhooks | None:
        return None

    async def endpoint_changed(self, kind: str, app: Application, endpoint: Endpoint) -> None:
        return None

    async def after_outcomes(
        self, batch: Sequence[Completion], events: Sequence[HealthEvent]
    ) -> None:
        return None
