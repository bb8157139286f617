"""PostgreSQL under faults, as an operator would meet them: the database going away under load,
and idempotent retries racing across API processes.

The outage test runs its own cluster (``tests/support/postgres.py``), since it stops it: 10 s of
a fast shutdown (``pg_ctl stop -m fast``) while messages keep coming. While it is down, message
creation answers 503 with ``Retry-After`` and the health check says why; no process crashes;
once it is back, the API and the worker reconnect on their own and every message that was
answered 202, before or after, is delivered.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import pytest

from tests.support.postgres import PostgresCluster, PostgresUnavailable
from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

OUTAGE_SECONDS = 10.0
INGEST_INTERVAL_SECONDS = 0.02  # about 50 messages a second, from one client
BEFORE_SECONDS = 2.0
AFTER_SECONDS = 3.0
DELIVERED_TIMEOUT_SECONDS = 60.0
RACERS = 50


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster for this test alone; skips without one (fails when ``CI`` is set)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class _Ingest:
    acked: set[str] = field(default_factory=set)
    unavailable: int = 0
    retry_after: set[str] = field(default_factory=set)
    other: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _ingest(api: HooklineServer, app: str, out: _Ingest) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=15.0) as client:
        i = 0
        while not out.stop.is_set():
            i += 1
            resp = client.post(
                f"/api/v1/app/{app}/msg", json={"eventType": "outage", "payload": {"i": i}}
            )
            if resp.status_code == 202:
                out.acked.add(resp.json()["id"])
            elif resp.status_code == 503:
                out.unavailable += 1
                out.retry_after.add(resp.headers.get("retry-after", ""))
            else:
                out.other.append((resp.status_code, resp.text))
            time.sleep(INGEST_INTERVAL_SECONDS)


def _setup(api: HooklineServer, url: str) -> str:
    headers = {"Authorization": f"Bearer {api.token}"}
    with httpx.Client(base_url=api.base_url + "/api/v1", headers=headers, timeout=10.0) as c:
        app: str = c.post("/app", json={"name": "outage"}).json()["id"]
        assert c.post(f"/app/{app}/endpoint", json={"url": url}).status_code == 201
    return app


def test_postgres_down_for_ten_seconds_under_load_answers_503_then_delivers_everything(
    tmp_path: Path, own_cluster: PostgresCluster, receiver: Receiver
) -> None:
    env = {"HOOKLINE_DATABASE_URL": own_cluster.url(own_cluster.create_database("outage"))}
    data = tmp_path / "hl"
    api = HooklineServer(data, command="api", env=env).start()
    worker = HooklineServer(data, command="worker", env=env, token=api.token).start()
    try:
        hook = receiver.new_path("outage")
        app = _setup(api, receiver.url(hook))
        ingest = _Ingest()
        sender = threading.Thread(target=_ingest, args=(api, app, ingest), daemon=True)
        sender.start()
        try:
            time.sleep(BEFORE_SECONDS)
            acked_before = len(ingest.acked)
            own_cluster.shut_down()
            down_at = time.monotonic()
            time.sleep(1.0)
            with httpx.Client(base_url=api.base_url, timeout=10.0) as client:
                health = client.get("/api/v1/health")
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            refused_while_down = ingest.unavailable
            own_cluster.start_again()
            time.sleep(AFTER_SECONDS)
        finally:
            ingest.stop.set()
            sender.join(20.0)
        assert acked_before > 0, "nothing was accepted before the outage"
        assert health.status_code == 503, health.text
        assert health.json()["code"] == "unavailable" and health.json()["detail"], health.text
        assert refused_while_down > 0, "no 503 while the database was down"
        assert ingest.retry_after and all(v.isdigit() for v in ingest.retry_after)
        assert ingest.other == [], ingest.other[:5]
        assert len(ingest.acked) > acked_before, "nothing was accepted after the outage"

        deadline = time.monotonic() + DELIVERED_TIMEOUT_SECONDS
        while True:
            got = {r.headers["webhook-id"] for r in receiver.requests(hook)}
            if ingest.acked <= got:
                break
            assert time.monotonic() < deadline, f"{len(ingest.acked - got)} acked never arrived"
            time.sleep(0.1)
        assert got == ingest.acked  # nothing that was refused arrived either
        api.assert_running()
        worker.assert_running()
    finally:
        worker.kill()
        api.kill()


def test_fifty_identical_idempotent_posts_over_two_apis_make_one_message(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"HOOKLINE_DATABASE_URL": postgres_url}
    data = tmp_path / "hl"
    first = HooklineServer(data, command="api", env=env, name="api-0").start()
    second = HooklineServer(data, command="api", env=env, token=first.token, name="api-1").start()
    try:
        headers = {"Authorization": f"Bearer {first.token}"}
        with httpx.Client(base_url=first.base_url + "/api/v1", headers=headers) as c:
            app: str = c.post("/app", json={"name": "race"}).json()["id"]
        body = {"eventType": "race", "payload": {"same": True}}

        async def race() -> list[tuple[int, bytes]]:
            async with aiohttp.ClientSession(
                headers={**headers, "idempotency-key": "one-key"}
            ) as session:

                async def post(i: int) -> tuple[int, bytes]:
                    base = (first, second)[i % 2].base_url
                    async with session.post(f"{base}/api/v1/app/{app}/msg", json=body) as resp:
                        return resp.status, await resp.read()

                return await asyncio.gather(*(post(i) for i in range(RACERS)))

        answers = asyncio.run(race())
        assert {status for status, _ in answers} == {202}, answers[:3]
        assert len({content for _, content in answers}) == 1  # byte for byte the same answer
        with httpx.Client(base_url=second.base_url + "/api/v1", headers=headers) as c:
            messages = c.get(f"/app/{app}/msg").json()["data"]
        assert len(messages) == 1
    finally:
        second.kill()
        first.kill()


def test_an_api_process_opens_no_more_connections_than_its_pool(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"HOOKLINE_DATABASE_URL": postgres_url, "HOOKLINE_DATABASE_POOL_SIZE": "3"}
    api = HooklineServer(tmp_path / "hl", command="api", env=env).start()
    try:
        headers = {"Authorization": f"Bearer {api.token}"}

        async def load_and_count() -> int:
            async with aiohttp.ClientSession(headers=headers) as session:
                async with session.post(f"{api.base_url}/api/v1/app", json={"name": "p"}) as r:
                    app = (await r.json())["id"]

                async def post(i: int) -> int:
                    async with session.post(
                        f"{api.base_url}/api/v1/app/{app}/msg",
                        json={"eventType": "pool", "payload": {"i": i}},
                    ) as resp:
                        return resp.status

                async def read(_: int) -> int:
                    async with session.get(f"{api.base_url}/api/v1/app/{app}/msg") as resp:
                        return resp.status

                statuses = await asyncio.gather(
                    *(post(i) for i in range(200)), *(read(i) for i in range(200))
                )
                assert set(statuses) == {200, 202}
            conn = await asyncpg.connect(postgres_url)
            try:
                count: int = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
            return count

        assert asyncio.run(load_and_count()) <= 3
    finally:
        api.kill()
