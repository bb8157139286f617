"""How a store reports its write transactions to the metrics, knowing nothing of who asked.

The composition root hands the store a ``Commits`` (``store.from_url(..., metrics=...)``); a
store without one measures nothing. Operations are the ``metrics.STORE_OPERATIONS``: message
ingest (the group commit), claims and completions (outcome batches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hookline.metrics import Metrics

INGEST = "ingest"
CLAIM = "claim"
COMPLETE = "complete"


class Commits:
    """Observes committed transactions into ``hookline_store_commit_duration_seconds`` and
    ``hookline_store_batch_size``; one child per operation, looked up once here."""

    def __init__(self, metrics: Metrics) -> None:
        self._duration = {
            op: metrics.store_commit_duration.labels(op) for op in (INGEST, CLAIM, COMPLETE)
        }
        self._size = {op: metrics.store_batch_size.labels(op) for op in (INGEST, CLAIM, COMPLETE)}

    def committed(self, operation: str, seconds: float, items: int) -> None:
        """One transaction of ``operation`` committed ``items`` after ``seconds`` (BEGIN to
        COMMIT)."""
        self._duration[operation].observe(seconds)
        self._size[operation].observe(items)


def of(metrics: Metrics | None) -> Commits | None:
    """The observer for ``metrics``; None when metrics are off."""
    return None if metrics is None else Commits(metrics)
