"""Fixtures shared by every test directory that opens real sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.receiver import Receiver
from tests.support.server import HooklineServer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A scripted webhook receiver on 127.0.0.1, stopped after the test."""
    with Receiver() as rx:
        yield rx


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., HooklineServer]]:
    """Start ``hookline serve`` processes for one test; every one is killed afterwards.

    ``start_server(env={...})`` returns a healthy server on its own database; call ``stop``,
    ``kill`` and ``start`` on it to test restarts.
    """
    servers: list[HooklineServer] = []

    def start(env: Mapping[str, str] | None = None) -> HooklineServer:
        server = HooklineServer(tmp_path / f"hookline-{len(servers)}", env=env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()
