"""``/metrics`` after a scripted run: every counter and histogram moved by what the run did.

The run, on one application: healthy deliveries, a receiver answering 500 once, one answering
400, one that never answers within the request timeout, one on a closed port, one whose address
the delivering process's egress guard refuses, one whose circuit opens, one under a rate limit.
Each failing endpoint gets one message and so exactly three attempts (retry schedule
``0.2,0.2``), which also opens its circuit (``circuit_failures`` 3). The counters are read from
the text format over HTTP, as Prometheus reads them, with prometheus-client's own parser.

Two topologies: ``hookline serve`` on SQLite (one process, one target), and ``hookline api`` +
``hookline worker`` on PostgreSQL (two targets: the API's ``/metrics`` and the worker's
``HOOKLINE_METRICS_LISTEN``).

The egress refusal needs an endpoint the API accepted and the deliverer refuses: it is created
through an API process allowed to reach 127.0.0.0/8, and delivered by a process allowed only
127.0.0.1 (``127.0.0.2`` is then a loopback address it must not reach), as after an operator
narrowed ``HOOKLINE_ALLOWED_SUBNETS``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hookline.bench.processes import free_port
from tests.support.receiver import Receiver, Reply
from tests.support.server import HooklineServer

WIDE = "127.0.0.0/8"
NARROW = "127.0.0.1/32"
SETTINGS = {
    "HOOKLINE_RETRY_SCHEDULE": "0.2,0.2",  # three attempts per message
    "HOOKLINE_CIRCUIT_FAILURES": "3",
    "HOOKLINE_CIRCUIT_COOLDOWN": "600",  # an open circuit stays open for the whole test
    "HOOKLINE_CIRCUIT_COOLDOWN_MAX": "600",
    "HOOKLINE_REQUEST_TIMEOUT": "0.5",
    "HOOKLINE_LOG_LEVEL": "info",
}
HEALTHY = 5
RATE_LIMITED = 6
RATE = 2  # per second
SETTLE_TIMEOUT = 30.0


@dataclass
class Targets:
    api: HooklineServer  # what the test talks to
    ingest_metrics: str  # /metrics URLs: the API's, and the deliverer's
    delivery_metrics: str
    creator: HooklineServer  # the API process with the wide allow-list


class Scrape:
    def __init__(self, url: str) -> None:
        text = httpx.get(url, timeout=5.0).text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Summed over the labels not given (e.g. every route)."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


@pytest.fixture(params=["serve-sqlite", "split-postgres"])
def targets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Targets]:
    started: list[HooklineServer] = []
    data = tmp_path / "hl"
    try:
        if request.param == "serve-sqlite":
            serve = HooklineServer(
                data, env={**SETTINGS, "HOOKLINE_ALLOWED_SUBNETS": NARROW}
            ).start()
            started.append(serve)
            creator = HooklineServer(
                data,
                command="api",
                token=serve.token,
                name="creator",
                env={**SETTINGS, "HOOKLINE_ALLOWED_SUBNETS": WIDE, "HOOKLINE_METRICS": "false"},
            ).start()
            started.append(creator)
            yield Targets(serve, serve.base_url + "/metrics", serve.base_url + "/metrics", creator)
        else:
            url = request.getfixturevalue("postgres_url")
            base = {**SETTINGS, "HOOKLINE_DATABASE_URL": url}
            api = HooklineServer(
                data, command="api", env={**base, "HOOKLINE_ALLOWED_SUBNETS": WIDE}
            ).start()
            started.append(api)
            port = free_port()
            worker = HooklineServer(
                data,
                command="worker",
                token=api.token,
                env={
                    **base,
                    "HOOKLINE_ALLOWED_SUBNETS": NARROW,
                    "HOOKLINE_METRICS_LISTEN": f"127.0.0.1:{port}",
                },
            ).start()
            started.append(worker)
            yield Targets(api, api.base_url + "/metrics", f"http://127.0.0.1:{port}/metrics", api)
    finally:
        for server in started:
            server.kill()


def _client(server: HooklineServer) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url + "/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10.0,
    )


def _closed_port() -> int:
    return free_port()  # nothing listens there: the connection is refused


def test_scripted_run_moves_every_metric(targets: Targets, receiver: Receiver) -> None:
    before_ingest = Scrape(targets.ingest_metrics)
    before_delivery = Scrape(targets.delivery_metrics)
    paths = {
        "ok": receiver.new_path("ok"),
        "flaky": receiver.new_path("flaky"),
        "bad": receiver.new_path("bad"),
        "slow": receiver.new_path("slow"),
        "broken": receiver.new_path("broken"),
        "limited": receiver.new_path("limited"),
    }
    receiver.script(paths["flaky"], 500, then=200)
    receiver.script(paths["bad"], then=400)
    receiver.script(paths["slow"], then=Reply(200, delay=1.5))
    receiver.script(paths["broken"], then=500)
    with _client(targets.api) as api, _client(targets.creator) as creator:
        app = api.post("/app", json={"name": "metrics"}).json()["id"]
        for kind in (*paths, "refused", "closed"):
            made = api.post("/event-type", json={"name": kind, "description": kind})
            assert made.status_code in (201, 409), made.text

        def endpoint(kind: str, url: str, client: httpx.Client = api, **extra: object) -> None:
            body = {"url": url, "filterTypes": [kind], **extra}
            answer = client.post(f"/app/{app}/endpoint", json=body)
            assert answer.status_code == 201, answer.text

        for kind, path in paths.items():
            extra = {"rateLimit": RATE} if kind == "limited" else {}
            endpoint(kind, receiver.url(path), **extra)
        endpoint("refused", f"http://127.0.0.2:{receiver.port}/x", client=creator)
        endpoint("closed", f"http://127.0.0.1:{_closed_port()}/x")

        sent: list[str] = []

        def send(kind: str, count: int = 1) -> None:
            for _ in range(count):
                answer = api.post(f"/app/{app}/msg", json={"eventType": kind, "payload": {}})
                assert answer.status_code == 202, answer.text
                sent.append(answer.json()["id"])

        send("ok", HEALTHY)
        send("limited", RATE_LIMITED)
        for kind in ("flaky", "bad", "slow", "broken", "refused", "closed"):
            send(kind)
        assert api.post(f"/app/{app}/msg", json={"eventType": "ok"}).status_code == 422
        assert (
            api.post("/app/app_nope/msg", json={"eventType": "ok", "payload": {}}).status_code
            == 404
        )

        receiver.wait_for(paths["ok"], HEALTHY, timeout=SETTLE_TIMEOUT)
        receiver.wait_for(paths["limited"], RATE_LIMITED, timeout=SETTLE_TIMEOUT)
        receiver.wait_for(paths["flaky"], 2, timeout=SETTLE_TIMEOUT)
        # The circuit of "broken" is open once its three attempts failed: one more message
        # waits, deferred, with no attempt.
        receiver.wait_for(paths["broken"], 3, timeout=SETTLE_TIMEOUT)
        _settle(targets, app, sent)
        send("broken")
        time.sleep(1.0)

    ingest = Scrape(targets.ingest_metrics)
    delivery = _wait_for_gauges(targets.delivery_metrics)
    accepted = HEALTHY + RATE_LIMITED + 6 + 1

    def moved(scrape: Scrape, before: Scrape, name: str, **labels: str) -> float:
        return scrape.total(name, **labels) - before.total(name, **labels)

    assert (
        moved(ingest, before_ingest, "hookline_messages_ingested_total", outcome="accepted")
        == accepted
    )
    assert moved(ingest, before_ingest, "hookline_messages_ingested_total", outcome="rejected") == 2
    msg_route = "/api/v1/app/{app_id}/msg"
    assert (
        moved(
            ingest,
            before_ingest,
            "hookline_http_requests_total",
            route=msg_route,
            status_class="2xx",
        )
        == accepted
    )
    assert (
        moved(
            ingest,
            before_ingest,
            "hookline_http_requests_total",
            route=msg_route,
            status_class="4xx",
        )
        == 2
    )
    assert (
        moved(
            ingest, before_ingest, "hookline_http_request_duration_seconds_count", route=msg_route
        )
        == accepted + 2
    )

    attempts = {
        "success": HEALTHY + RATE_LIMITED + 1,
        "http_5xx": 1 + 3,
        "http_4xx": 3,
        "timeout": 3,
        "connect_error": 3,
        "egress_refused": 3,
    }
    for outcome, count in attempts.items():
        got = moved(delivery, before_delivery, "hookline_delivery_attempts_total", outcome=outcome)
        assert got == count, (outcome, got)
    assert moved(
        delivery, before_delivery, "hookline_delivery_attempt_duration_seconds_count"
    ) == sum(attempts.values())
    assert (
        moved(delivery, before_delivery, "hookline_delivery_latency_seconds_count")
        == (attempts["success"])
    )
    assert (
        moved(
            delivery, before_delivery, "hookline_deliveries_deferred_total", reason="rate_limited"
        )
        >= 1
    )
    assert (
        moved(
            delivery, before_delivery, "hookline_deliveries_deferred_total", reason="circuit_open"
        )
        >= 1
    )
    # bad, slow, broken, refused and closed each failed three times in a row
    assert delivery.value("hookline_circuits_open") == 5
    assert delivery.value("hookline_deliveries_in_flight") == 0
    for operation in ("ingest", "claim", "complete"):
        assert (
            delivery.total("hookline_store_commit_duration_seconds_count", operation=operation)
            + ingest.total("hookline_store_commit_duration_seconds_count", operation=operation)
            > 0
        ), operation
    assert ingest.total("hookline_store_batch_size_sum", operation="ingest") >= accepted
    assert ingest.value("hookline_backpressure_active") == 0


def _settle(targets: Targets, app: str, sent: list[str]) -> None:
    """Wait until no delivery of ``sent`` is pending (each failing one used its three attempts).

    Read per message (not through the message list, whose route is the ingest route's template
    and would move the counters under test).
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    with _client(targets.api) as api:
        while time.monotonic() < deadline:
            pending = 0
            for msg_id in sent:
                dests = api.get(f"/app/{app}/msg/{msg_id}/endpoint").json()["data"]
                pending += sum(1 for d in dests if d["status"] in (1, 3))
            if pending == 0:
                return
            time.sleep(0.25)
    raise AssertionError("deliveries still pending")


def _wait_for_gauges(url: str) -> Scrape:
    """The store gauges are refreshed every few seconds: wait for the circuits to show."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        scrape = Scrape(url)
        if scrape.value("hookline_circuits_open") >= 5 or time.monotonic() > deadline:
            return scrape
        time.sleep(0.5)
