"""Two processes starting together on a new database (``hookline api`` + ``hookline worker``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hookline import app, settings
from hookline.api import http


async def test_a_seeded_admin_token_is_created_once_when_two_start_together(
    tmp_path: Path,
) -> None:
    config = settings.Settings(
        database_url=f"sqlite:///{tmp_path / 'hookline.db'}", admin_token="hl_seeded_token_0123"
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(app.opened(config))
        second = await stack.enter_async_context(app.opened(config))

        # both see no token yet, then both try to store it: neither may fail
        results = await asyncio.gather(app.bootstrap_token(first), app.bootstrap_token(second))

        assert results == [None, None]  # a seeded token is never printed
        assert await first.store.count_tokens() == 1
        assert await second.store.find_token(http.hash_token("hl_seeded_token_0123")) is not None
