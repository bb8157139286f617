"""One real ``hookline serve`` process for the integration suite, driven through the svix SDK.

The server is shared (starting one costs about half a second); tests stay independent by creating
their own application, event types and receiver paths, all with unique names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator

import pytest
from svix.api import ApplicationIn, ApplicationOut, EventTypeIn, Svix, SvixOptions

from tests.support.postgres import PostgresServer
from tests.support.sdk import unique
from tests.support.server import HooklineServer

_SERVER = pytest.StashKey[HooklineServer]()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HooklineServer]:
    """``hookline serve`` on a free loopback port and a fresh database of each backend.

    Every integration test runs once on SQLite and once on PostgreSQL (a database of the
    session's throwaway cluster, ``tests/conftest.py``).
    """
    env: dict[str, str] = {}
    database: str | None = None
    cluster: PostgresServer | None = None
    if request.param == "postgres":
        cluster = request.getfixturevalue("postgres_cluster")
        database = cluster.create_database("integration")
        env["HOOKLINE_DATABASE_URL"] = cluster.url(database)
    hl = HooklineServer(tmp_path_factory.mktemp("hookline"), env=env)
    request.config.stash[_SERVER] = hl
    try:
        yield hl.start()
    finally:
        hl.kill()
        if cluster is not None and database is not None:
            cluster.drop_database(database)


@pytest.fixture(scope="session")
def svix(server: HooklineServer) -> Iterator[Svix]:
    """The official SDK, pointed at the test server."""
    client = Svix(server.token, SvixOptions(server_url=server.base_url))
    yield client
    # The SDK offers no close(); its pooled keep-alive connection would otherwise surface as a
    # ResourceWarning, which filterwarnings = error turns into a failure.
    client._httpx_client.close()


@pytest.fixture
def app(request: pytest.FixtureRequest, server: HooklineServer, svix: Svix) -> ApplicationOut:
    """A fresh application for this test alone."""
    server.assert_running()  # a crash in an earlier test should read as one, not as a 503
    return svix.application.create(ApplicationIn(name=request.node.name, uid=unique("app")))


@pytest.fixture
def new_event_type(svix: Svix) -> Callable[[str], str]:
    """Create an event type with a unique name (event types are shared by the whole org)."""

    def create(label: str) -> str:
        name = f"{label}.{uuid.uuid4().hex[:10]}"
        svix.event_type.create(EventTypeIn(name=name, description=f"{label} (test)"))
        return name

    return create


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    hl = item.config.stash.get(_SERVER, None)
    if report.failed and hl is not None:
        report.sections.append(("hookline server output", hl.output_tail()))
    return report
