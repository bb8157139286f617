"""The log of one message's life: JSON lines with the ids, and nothing secret in any line.

A real ``hookline serve`` with ``HOOKLINE_LOG_FORMAT=json`` at ``info``: an application, an
endpoint whose receiver answers 500 once and then 200, one message. Every line the process
wrote must be one JSON object with an ``event``; the request that created the message, each
attempt and the circuit changes carry the ids that apply; and neither the API token, nor the
endpoint's signing secret, nor the payload, nor a custom header's value appears anywhere.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

MARKER = "payload-marker-7f3a9c"  # appears in the payload only
HEADER_SECRET = "header-secret-51d2e8"  # a custom header's value (often an API key)


def test_one_message_life_is_logged_as_json_with_ids_and_no_secrets(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = receiver.new_path("life")
    receiver.script(path, 500, then=200)
    server = HooklineServer(
        tmp_path / "hl",
        env={"HOOKLINE_LOG_FORMAT": "json", "HOOKLINE_LOG_LEVEL": "info"},
    ).start()
    try:
        with httpx.Client(
            base_url=server.base_url + "/api/v1",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=10.0,
        ) as api:
            app = api.post("/app", json={"name": "life", "uid": "life-app"}).json()["id"]
            created = api.post(
                f"/app/{app}/endpoint",
                json={"url": receiver.url(path), "headers": {"X-Api-Key": HEADER_SECRET}},
            )
            assert created.status_code == 201, created.text
            endpoint = created.json()["id"]
            secret = api.get(f"/app/{app}/endpoint/{endpoint}/secret").json()["key"]
            sent = api.post(
                f"/app/{app}/msg",
                json={"eventType": "life.event", "payload": {"note": MARKER}},
                headers={"X-Request-Id": "req-life-1"},
            )
            assert sent.status_code == 202, sent.text
            assert sent.headers["x-request-id"] == "req-life-1"
            msg = sent.json()["id"]
            receiver.wait_for(path, 2, timeout=15)
            attempts = _wait_attempts(api, app, msg, 2)
            # a refused login is logged too, without the token it tried
            assert (
                httpx.get(
                    server.base_url + "/api/v1/app",
                    headers={"Authorization": "Bearer hl_wrong_token_value"},
                ).status_code
                == 401
            )
    finally:
        server.stop()

    text = server.output()
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)  # every line: one JSON object
        assert isinstance(record, dict) and record.get("event"), line
        assert "level" in record and "timestamp" in record, line
        records.append(record)

    for needle in (server.token, secret, MARKER, HEADER_SECRET, "hl_wrong_token_value"):
        assert needle not in text, f"{needle!r} appears in the log"

    ingest = [r for r in records if r.get("request_id") == "req-life-1" and r.get("status") == 202]
    assert ingest, "no access log line for the message's creation"
    assert ingest[0]["app_id"] == app and ingest[0]["method"] == "POST"
    assert ingest[0]["route"] == "/api/v1/app/{app_id}/msg"

    by_attempt = {r.get("attempt_id"): r for r in records if r.get("attempt_id")}
    for attempt in attempts:
        record = by_attempt.get(attempt["id"])
        assert record is not None, f"no line for attempt {attempt['id']}"
        assert record["msg_id"] == msg and record["endpoint_id"] == endpoint
        assert record["app_id"] == app
    statuses = sorted(by_attempt[a["id"]]["status_code"] for a in attempts)
    assert statuses == [200, 500]
    assert any(r["event"] == "auth_failed" for r in records)


def _wait_attempts(api: httpx.Client, app: str, msg: str, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 15
    while True:
        data = api.get(f"/app/{app}/attempt/msg/{msg}").json()["data"]
        if len(data) >= count or time.monotonic() > deadline:
            assert len(data) == count, data
            return list(data)
        time.sleep(0.1)
