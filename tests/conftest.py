"""Fixtures shared by every test directory that opens real sockets or real servers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import postgres
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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.PostgresServer]:
    """One PostgreSQL server for the whole run, started by the first test that asks for it.

    A throwaway cluster (``tests/support/postgres.py``), or the developer's own server when
    ``HOOKLINE_TEST_POSTGRES_URL`` is set. When it cannot be had the tests that need it skip,
    and fail when ``CI`` is set: CI must never pass by running no PostgreSQL test. pytest keeps
    a session fixture's error, so a failed start is tried once, not once per test.
    """
    server = postgres.server_from_env()
    problem: str | None = None
    try:
        server.start()
    except postgres.PostgresUnavailable as exc:
        problem = str(exc)
    if problem is not None:  # out of the except block, so the report is the reason alone
        if os.environ.get("CI"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)  # -ra folds the tests skipped here into one line
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(
    request: pytest.FixtureRequest, postgres_cluster: postgres.PostgresServer
) -> Iterator[str]:
    """The URL of a fresh, empty database for this test alone, dropped afterwards."""
    name = postgres_cluster.create_database(request.node.name)
    try:
        yield postgres_cluster.url(name)
    finally:
        postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings that put a test's servers on a fresh database of each backend in turn.

    SQLite: nothing to add (each ``HooklineServer`` data directory has its file). PostgreSQL: a
    database of the session's cluster (``postgres_url``), shared by every process of the test.
    """
    if request.param == "postgres":
        return {"HOOKLINE_DATABASE_URL": request.getfixturevalue("postgres_url")}
    return {}
