"""Short-lived in-process caches for the lookups every API call makes.

Both answer from memory for a few seconds so the ingest hot path does not pay a database
round trip (a hop to a reader thread) per request. What may be stale, and for how long:

- a revoked token keeps working for up to ``TOKEN_SECONDS`` in a running API process;
- an application renamed (``uid``) or deleted by *another* API process may still be resolved
  for up to ``APP_SECONDS``. Ingest to a deleted application still fails, because the store
  checks the application inside the write transaction; this process forgets its cached
  applications whenever it changes one itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from hookline.models import Application, Token
from hookline.store.base import Store

TOKEN_SECONDS = 10.0
APP_SECONDS = 5.0

K = TypeVar("K")
V = TypeVar("V")


class _Expiring(Generic[K, V]):
    """Values kept for ``seconds`` after they were loaded; misses (None) are never kept."""

    def __init__(self, seconds: float, max_entries: int) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._entries: dict[K, tuple[V, float]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        value = await load()
        if value is not None:
            if len(self._entries) >= self._max_entries:  # bound memory, whatever callers send
                self._entries.clear()
            self._entries[key] = (value, now + self._seconds)
        return value

    def clear(self) -> None:
        self._entries.clear()


class TokenCache:
    """Tokens by the bearer value; unknown tokens are not cached (each try reads the store).

    Keyed by the presented value so a hit costs no hashing; the store only ever sees the hash.
    """

    def __init__(self, store: Store, hash_token: Callable[[str], str]) -> None:
        self._store = store
        self._hash = hash_token
        self._cache: _Expiring[str, Token] = _Expiring(TOKEN_SECONDS, 10_000)

    async def lookup(self, presented: str) -> Token | None:
        return await self._cache.get(
            presented, lambda: self._store.find_token(self._hash(presented))
        )


class AppCache:
    """Applications by (organisation, id or uid), for message ingest."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: _Expiring[tuple[str, str], Application] = _Expiring(APP_SECONDS, 100_000)

    async def lookup(self, org_id: str, ref: str) -> Application | None:
        return await self._cache.get((org_id, ref), lambda: self._store.get_app(org_id, ref))

    def forget(self) -> None:
        """Drop everything: called after this process changes or deletes an application."""
        self._cache.clear()
