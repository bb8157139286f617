"""How the API answers when the store refuses a write, and when something fails unexpectedly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from hookline import errors
from hookline.app import Hookline

from .conftest import assert_error


async def _app_id(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/v1/app", json={"name": "store failures"})
    assert resp.status_code == 201, resp.text
    app_id: str = resp.json()["id"]
    return app_id


async def test_a_store_that_cannot_write_answers_503_with_retry_after(
    client: httpx.AsyncClient, hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = await _app_id(client)

    async def disk_full(*_: Any, **__: Any) -> None:
        raise errors.Unavailable("The database's disk is full; retry later", retry_after=5)

    monkeypatch.setattr(hl.store, "create_message", disk_full)
    resp = await client.post(
        f"/api/v1/app/{app_id}/msg", json={"eventType": "a.b", "payload": {"n": 1}}
    )
    body = assert_error(resp, 503, "unavailable")
    assert body["detail"] == "The database's disk is full; retry later"
    assert resp.headers["retry-after"] == "5"


async def test_an_unexpected_failure_answers_a_json_500_and_is_logged_without_its_data(
    client: httpx.AsyncClient, hl: Hookline, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = await _app_id(client)

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug that mentions secret-payload-data")

    monkeypatch.setattr(hl.store, "create_message", broken)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        resp = await client.post(
            f"/api/v1/app/{app_id}/msg", json={"eventType": "a.b", "payload": {"n": 1}}
        )
    body = assert_error(resp, 500, "internal_error")
    request_id = resp.headers["x-request-id"]
    assert body["detail"] == f"Internal server error (request id {request_id})"
    assert "secret-payload-data" not in resp.text
    assert "retry-after" not in resp.headers
    failed = [e for e in logs if e["event"] == "request_failed"]
    assert len(failed) == 1, logs
    assert failed[0]["method"] == "POST"
    assert failed[0]["route"] == "/api/v1/app/{app_id}/msg"  # the route, not the ids in the path
    assert failed[0]["request_id"] == request_id  # the client's answer leads to this line
