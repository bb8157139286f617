"""Scale-out: two ``hookline api`` and three ``hookline worker`` processes on one database.

10,000 messages over 10 endpoints (each endpoint subscribed to one of 10 event types), counted
at the receiver: every message reaches its endpoint exactly once and hookline records one
attempt for it. Then the same with one worker SIGKILLed while it has deliveries in flight:
nothing is lost, and the deliveries sent twice are exactly the ones that worker had in flight
(at most those, plus the ones it had just been answered but not yet recorded).

Each runs on SQLite (one file, several processes) and on PostgreSQL (a database of the
session's throwaway cluster).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest

from tests.support.receiver import Receiver, Reply
from tests.support.server import HooklineServer

MESSAGES = 10_000
ENDPOINTS = 10
INGEST_CONCURRENCY = 32
DELIVERED_TIMEOUT_SECONDS = 90.0
# Answered after this long, so that a worker has deliveries in flight when it is killed.
SLOW_ANSWER = Reply(status=200, delay=0.2)
KILL_AFTER_SHARE = 0.2  # of the deliveries received before the kill
# Answers read within this long before the kill may not have been recorded yet: the outcome
# batch waits for the write lock that five processes (two ingesting APIs, three workers with
# their retention cleaners) share on one SQLite file; 0.5 s proved too short under CI load.
UNCOMMITTED_WINDOW_SECONDS = 1.0


class Cluster:
    def __init__(self, data: Path, env: dict[str, str]) -> None:
        self.apis: list[HooklineServer] = []
        self.workers: list[HooklineServer] = []
        first = HooklineServer(data, command="api", env=env, name="api-0").start()
        self.apis.append(first)
        self.token = first.token
        self.apis.append(
            HooklineServer(data, command="api", env=env, token=self.token, name="api-1").start()
        )
        for i in range(3):
            self.workers.append(
                HooklineServer(
                    data, command="worker", env=env, token=self.token, name=f"worker-{i}"
                ).start()
            )

    def kill_all(self) -> None:
        for server in [*self.workers, *self.apis]:
            server.kill()


@pytest.fixture
def cluster(tmp_path: Path, backend_env: dict[str, str]) -> Iterator[Cluster]:
    running = Cluster(tmp_path / "hl", backend_env)
    try:
        yield running
    finally:
        running.kill_all()


def _setup(cluster: Cluster, receiver: Receiver) -> tuple[str, list[str], list[str], list[str]]:
    """An app with 10 endpoints, one event type each; (app, event types, paths, endpoint ids)."""
    api = cluster.apis[0]
    with httpx.Client(
        base_url=api.base_url + "/api/v1",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=10.0,
    ) as client:
        app = client.post("/app", json={"name": "scale"}).json()["id"]
        types, paths, endpoints = [], [], []
        for i in range(ENDPOINTS):
            name = f"scale.e{i}"
            assert client.post("/event-type", json={"name": name, "description": name}).is_success
            path = receiver.new_path(f"ep{i}")
            resp = client.post(
                f"/app/{app}/endpoint", json={"url": receiver.url(path), "filterTypes": [name]}
            )
            assert resp.status_code == 201, resp.text
            types.append(name)
            paths.append(path)
            endpoints.append(resp.json()["id"])
    return app, types, paths, endpoints


async def _ingest(cluster: Cluster, app: str, types: list[str]) -> dict[str, int]:
    """Send MESSAGES round-robin over the API processes; {message id: endpoint index}."""
    sent: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {cluster.token}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(MESSAGES):
        queue.put_nowait(i)

    async def sender(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            base = cluster.apis[i % len(cluster.apis)].base_url
            body = {"eventType": types[i % ENDPOINTS], "payload": {"i": i}}
            async with session.post(f"{base}/api/v1/app/{app}/msg", json=body) as resp:
                assert resp.status == 202, await resp.text()
                sent[(await resp.json())["id"]] = i % ENDPOINTS

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(sender(session) for _ in range(INGEST_CONCURRENCY)))
    return sent


def _delivered(receiver: Receiver, paths: list[str]) -> dict[tuple[str, int], int]:
    """(message id, endpoint index) -> how many times the receiver got it."""
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for index, path in enumerate(paths):
        for r in receiver.requests(path):
            counts[(r.headers["webhook-id"], index)] += 1
    return counts


def _wait_all_delivered(
    receiver: Receiver, paths: list[str], expected: set[tuple[str, int]]
) -> None:
    deadline = time.monotonic() + DELIVERED_TIMEOUT_SECONDS
    while True:
        missing = expected - set(_delivered(receiver, paths))
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} deliveries never arrived"
        time.sleep(0.1)


def _recorded_attempts(
    cluster: Cluster, app: str, endpoints: list[str]
) -> collections.Counter[tuple[str, str]]:
    """(message id, endpoint id) -> attempts hookline recorded, read through the API."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    with httpx.Client(
        base_url=cluster.apis[1].base_url + "/api/v1",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30.0,
    ) as client:
        for ep in endpoints:
            iterator = None
            while True:
                params: dict[str, str | int] = {"limit": 250}
                if iterator:
                    params["iterator"] = iterator
                page = client.get(f"/app/{app}/attempt/endpoint/{ep}", params=params).json()
                for attempt in page["data"]:
                    assert attempt["status"] == 0, attempt  # success
                    counts[(attempt["msgId"], ep)] += 1
                if page["done"]:
                    break
                iterator = page["iterator"]
    return counts


def _wait_recorded(
    cluster: Cluster, app: str, endpoints: list[str], count: int
) -> collections.Counter[tuple[str, str]]:
    deadline = time.monotonic() + DELIVERED_TIMEOUT_SECONDS
    while True:
        recorded = _recorded_attempts(cluster, app, endpoints)
        if len(recorded) >= count:
            return recorded
        assert time.monotonic() < deadline, f"{count - len(recorded)} attempts never recorded"
        time.sleep(0.5)


def _freeze_a_busy_worker(
    cluster: Cluster, receiver: Receiver
) -> tuple[HooklineServer, float, set[int]]:
    """SIGSTOP a worker that has deliveries in flight; (it, when frozen, its source ports).

    Frozen, it reads no answer and opens no connection, so the connections read now are all it
    has when it is killed, and whatever they were still sending counts as in flight.
    """
    deadline = time.monotonic() + 10.0
    while True:
        for worker in cluster.workers:
            assert worker.pid is not None
            process = psutil.Process(worker.pid)
            frozen = time.monotonic()
            process.send_signal(signal.SIGSTOP)
            ports = {
                c.laddr.port
                for c in process.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == receiver.port
            }
            # reading the connections takes a while: handlers may have ended meanwhile
            if receiver.inflight_from(ports) + receiver.finished_from_since(ports, frozen):
                return worker, frozen, ports
            process.send_signal(signal.SIGCONT)  # idle just now: let it go on
        assert time.monotonic() < deadline, (
            f"no worker had a delivery in flight (receiver: {receiver.inflight()} in flight,"
            f" {len(receiver.requests())} received)"
        )
        time.sleep(0.01)


def test_two_apis_and_three_workers_deliver_each_message_exactly_once(
    cluster: Cluster, receiver: Receiver
) -> None:
    app, types, paths, endpoints = _setup(cluster, receiver)
    sent = asyncio.run(_ingest(cluster, app, types))
    assert len(sent) == MESSAGES
    expected = set(sent.items())
    _wait_all_delivered(receiver, paths, expected)
    time.sleep(0.5)  # a duplicate would arrive about now
    delivered = _delivered(receiver, paths)
    assert set(delivered) == expected
    assert max(delivered.values()) == 1
    recorded = _wait_recorded(cluster, app, endpoints, MESSAGES)
    assert set(recorded) == {(m, endpoints[i]) for m, i in sent.items()}
    assert max(recorded.values()) == 1  # no attempt recorded twice
    for server in [*cluster.apis, *cluster.workers]:
        server.assert_running()


def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_only_its_in_flight(
    cluster: Cluster, receiver: Receiver
) -> None:
    app, types, paths, endpoints = _setup(cluster, receiver)
    for path in paths:
        receiver.script(path, then=SLOW_ANSWER)
    sent = asyncio.run(_ingest(cluster, app, types))
    expected = set(sent.items())
    deadline = time.monotonic() + DELIVERED_TIMEOUT_SECONDS
    while len(_delivered(receiver, paths)) < KILL_AFTER_SHARE * MESSAGES:
        assert time.monotonic() < deadline, "deliveries did not start"
        time.sleep(0.01)

    victim, frozen, ports = _freeze_a_busy_worker(cluster, receiver)
    assert victim.kill() == -signal.SIGKILL
    time.sleep(0.1)  # bytes the dead worker had written reach their handlers
    running = receiver.inflight_from(ports)
    inflight = running + receiver.finished_from_since(ports, frozen)
    at_risk = running + receiver.finished_from_since(ports, frozen - UNCOMMITTED_WINDOW_SECONDS)

    _wait_all_delivered(receiver, paths, expected)
    recorded = _wait_recorded(cluster, app, endpoints, MESSAGES)  # waits out the dead leases
    delivered = _delivered(receiver, paths)
    assert set(delivered) == expected  # nothing lost
    duplicates = sum(n - 1 for n in delivered.values())
    assert inflight <= duplicates <= at_risk, (inflight, duplicates, at_risk)
    assert set(recorded) == {(m, endpoints[i]) for m, i in sent.items()}
    assert max(recorded.values()) == 1  # the dead worker's sends were never recorded
