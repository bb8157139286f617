"""In-process API tests: the ASGI app on a fresh SQLite database, driven through httpx.

No sockets are opened; ``client`` is authenticated as the seeded admin token of the default
organisation. ``MAX_PAYLOAD_BYTES`` is kept small so the 413 path is cheap to reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline import app, settings
from hookline.app import Hookline

ADMIN_TOKEN = "hl_test_admin_token"
MAX_PAYLOAD_BYTES = 4096  # bytes of request body the API accepts in these tests


@pytest.fixture
async def hl(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hookline]:
    """A running composition root on an empty, migrated database with the admin token seeded.

    ``@pytest.mark.max_payload_bytes(n)`` raises the body limit for a test that needs it.
    """
    marker = request.node.get_closest_marker("max_payload_bytes")
    s = settings.Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        admin_token=ADMIN_TOKEN,
        max_payload_bytes=marker.args[0] if marker else MAX_PAYLOAD_BYTES,
    )
    async with app.opened(s) as hookline:
        assert await app.bootstrap_token(hookline) is None  # a seeded token is never printed
        yield hookline


def _client(hl: Hookline, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.asgi(hl)),
        base_url="http://test",
        headers=headers,
    )


@pytest.fixture
async def client(hl: Hookline) -> AsyncIterator[httpx.AsyncClient]:
    """Authenticated as the admin token of the default organisation."""
    async with _client(hl, ADMIN_TOKEN) as c:
        yield c


@pytest.fixture
async def anon(hl: Hookline) -> AsyncIterator[httpx.AsyncClient]:
    """The same API without an Authorization header."""
    async with _client(hl, None) as c:
        yield c


@pytest.fixture
async def other_org(hl: Hookline) -> AsyncIterator[httpx.AsyncClient]:
    """Authenticated as a token of another organisation (tenant)."""
    token = await app.create_token(hl, org="other", name="other")
    async with _client(hl, token) as c:
        yield c


# helpers -----------------------------------------------------------------------------------------


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is a Svix-shaped error body with this status (and code)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"code", "detail"}, body
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_invalid(resp: httpx.Response, loc: list[str | int]) -> dict[str, Any]:
    """A 422 whose detail is a list of ``{loc, msg, type}`` naming ``loc``."""
    body = assert_error(resp, 422, "validation")
    assert isinstance(body["detail"], list) and body["detail"], body
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["msg"], str) and item["msg"]
    assert [d["loc"] for d in body["detail"]] == [loc], body
    return body


async def create_app(client: httpx.AsyncClient, name: str = "app", **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/app", json={"name": name, **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def create_event_type(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    resp = await client.post("/api/v1/event-type", json={"name": name, "description": name})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def create_endpoint(
    client: httpx.AsyncClient, app_id: str, url: str = "https://example.com/hook", **fields: Any
) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/app/{app_id}/endpoint", json={"url": url, **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def send_message(
    client: httpx.AsyncClient, app_id: str, event_type: str = "user.created", **fields: Any
) -> dict[str, Any]:
    body = {"eventType": event_type, "payload": {"n": 1}, **fields}
    resp = await client.post(f"/api/v1/app/{app_id}/msg", json=body)
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


async def list_all(client: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    """Every item of a list resource, following the iterator."""
    items: list[dict[str, Any]] = []
    query: dict[str, str] = {"limit": "250", **params}
    while True:
        resp = await client.get(path, params=query)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        items.extend(page["data"])
        if page["done"]:
            return items
        query["iterator"] = page["iterator"]
