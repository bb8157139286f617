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
from collections.abc import Callable

from hookline.models import Application, Token
from hookline.store.base import Store

TOKEN_SECONDS = 10.0
APP_SECONDS = 5.0


class TokenCache:
    """Tokens by the bearer value; unknown tokens are not cached (each try reads the store).

    Keyed by the presented value so a hit costs no hashing; the store only ever sees the hash.
    """

    def __init__(self, store: Store, hash_token: Callable[[str], str]) -> None:
        self._store = store
        self._hash = hash_token
        self._cache: dict[str, tuple[Token, float]] = {}

    async def lookup(self, presented: str) -> Token | None:
        hit = self._cache.get(presented)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        token = await self._store.find_token(self._hash(presented))
        if token is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[presented] = (token, now + TOKEN_SECONDS)
        return token


class AppCache:
    """Applications by (organisation, id or uid), for message ingest."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[tuple[str, str], tuple[Application, float]] = {}

    async def lookup(self, org_id: str, ref: str) -> Application | None:
        key = (org_id, ref)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        app = await self._store.get_app(org_id, ref)
        if app is not None:
            if len(self._cache) > 100_000:  # bound memory against many distinct references
                self._cache.clear()
            self._cache[key] = (app, now + APP_SECONDS)
        return app

    def forget(self) -> None:
        """Drop everything: called after this process changes or deletes an application."""
        self._cache.clear()
