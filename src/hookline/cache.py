"""Short-lived in-process caches for the lookups every API call makes.

Both answer from memory for a few seconds so the ingest hot path does not pay a database
round trip (a hop to a reader thread) per request. What may be stale, and for how long:

- a revoked token keeps working for up to ``TOKEN_SECONDS`` in a running API process;
- a token's "last used" time (``hookline token list``) is written at most once per
  ``LAST_USED_SECONDS`` per token and process, off the request path, so it may lag the token's
  latest request by that much;
- an application renamed (``uid``) or deleted by *another* API process may still be resolved
  for up to ``APP_SECONDS``. Ingest to a deleted application still fails, because the store
  checks the application inside the write transaction; this process forgets its cached
  applications whenever it changes one itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from hookline.models import Application, Token
from hookline.store.base import Store

TOKEN_SECONDS = 10.0
APP_SECONDS = 5.0
# How often a token's last use is written per process: a busy token costs one small write a
# minute (batched with other tokens' in one store call), never one per request.
LAST_USED_SECONDS = 60.0
_MAX_TRACKED_TOKENS = 10_000  # bounds the per-token "last written" times kept in memory

log = structlog.get_logger("hookline.cache")

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
        self._written: dict[str, float] = {}  # token id -> when its last use was last queued
        self._pending: dict[str, float] = {}  # token id -> last use, not yet written
        self._flusher: asyncio.Task[None] | None = None

    async def lookup(self, presented: str) -> Token | None:
        token = await self._cache.get(
            presented, lambda: self._store.find_token(self._hash(presented))
        )
        if token is not None:
            self._used(token.id)
        return token

    def _used(self, token_id: str) -> None:
        """Queue the token's last use for writing, if not done in the last minute."""
        now = time.time()
        if self._written.get(token_id, 0.0) + LAST_USED_SECONDS > now:
            return
        if len(self._written) >= _MAX_TRACKED_TOKENS:  # forgetting costs at most extra writes
            self._written.clear()
        self._written[token_id] = now
        self._pending[token_id] = now
        if self._flusher is None:
            # Off the request path: a slow or unwritable store must not delay or fail a request.
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    await self._store.touch_tokens(batch)
                except Exception:  # the store's trouble shows elsewhere; "last used" can lag
                    log.warning("token_last_used_not_written", tokens=len(batch), exc_info=True)
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Wait until queued last-use times are written: call before the store closes."""
        while self._flusher is not None:
            await self._flusher


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
