"""Ingest backpressure in the API: 429 with Retry-After above MAX_BACKLOG, other calls served."""

from __future__ import annotations

import httpx

from hookline.app import Hookline

from .conftest import assert_error


async def _app_with_endpoint(client: httpx.AsyncClient) -> str:
    app = (await client.post("/api/v1/app", json={"name": "bp"})).json()["id"]
    ep = await client.post(f"/api/v1/app/{app}/endpoint", json={"url": "https://example.com/h"})
    assert ep.status_code == 201, ep.text
    return str(app)


async def test_message_creation_answers_429_over_the_backlog_and_resumes(
    hl: Hookline, client: httpx.AsyncClient
) -> None:
    app = await _app_with_endpoint(client)
    hl.backlog.limit = 3
    body = {"eventType": "bp.test", "payload": {"n": 1}}
    for _ in range(4):
        assert (await client.post(f"/api/v1/app/{app}/msg", json=body)).status_code == 202
    await hl.backlog.measure()
    assert hl.backlog.active

    keyed = {"idempotency-key": "bp-1"}
    refused = await client.post(f"/api/v1/app/{app}/msg", json=body, headers=keyed)
    assert_error(refused, 429, "too_many_requests")
    assert int(refused.headers["retry-after"]) >= 1
    # everything else keeps working
    assert (await client.get(f"/api/v1/app/{app}/msg")).status_code == 200
    assert (await client.post("/api/v1/app", json={"name": "still"})).status_code == 201

    hl.backlog.limit = 1000
    await hl.backlog.measure()
    assert not hl.backlog.active
    # the refused request's key was not kept: its retry runs
    again = await client.post(f"/api/v1/app/{app}/msg", json=body, headers=keyed)
    assert again.status_code == 202, again.text
