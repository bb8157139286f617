"""The shape of the CRUD answers: what an SDK or a user reading the JSON relies on."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from hookline import signing
from hookline.app import Hookline

from .conftest import (
    assert_error,
    create_app,
    create_endpoint,
    create_event_type,
    list_all,
    send_message,
)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# applications ------------------------------------------------------------------------------------


async def test_create_app_answers_201_in_svix_shape(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/api/v1/app",
        json={"name": "Acme", "uid": "acme-1", "throttleRate": 10, "metadata": {"plan": "pro"}},
    )
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {
        "id",
        "name",
        "uid",
        "throttleRate",
        "metadata",
        "createdAt",
        "updatedAt",
    }
    assert body["id"].startswith("app_")
    assert (body["name"], body["uid"], body["throttleRate"]) == ("Acme", "acme-1", 10)
    assert body["metadata"] == {"plan": "pro"}
    assert ISO.match(body["createdAt"]) and ISO.match(body["updatedAt"])


async def test_get_app_by_id_and_by_uid(client: httpx.AsyncClient) -> None:
    app = await create_app(client, "Acme", uid="acme-1")
    by_id = await client.get(f"/api/v1/app/{app['id']}")
    by_uid = await client.get("/api/v1/app/acme-1")
    assert by_id.status_code == by_uid.status_code == 200
    assert by_id.json() == by_uid.json() == app


async def test_list_apps_pages_with_limit_and_iterator(client: httpx.AsyncClient) -> None:
    created = [(await create_app(client, f"app-{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    params = {"limit": "2"}
    pages = 0
    while True:
        resp = await client.get("/api/v1/app", params=params)
        assert resp.status_code == 200
        page = resp.json()
        assert set(page) == {"data", "iterator", "prevIterator", "done"}
        assert len(page["data"]) <= 2
        seen += [a["id"] for a in page["data"]]
        pages += 1
        if page["done"]:
            break
        params["iterator"] = page["iterator"]
    assert pages == 3
    assert seen == sorted(created)


async def test_list_apps_descending(client: httpx.AsyncClient) -> None:
    created = [(await create_app(client, f"app-{i}"))["id"] for i in range(3)]
    resp = await client.get("/api/v1/app", params={"order": "descending"})
    assert [a["id"] for a in resp.json()["data"]] == sorted(created, reverse=True)


async def test_put_replaces_the_app(client: httpx.AsyncClient) -> None:
    app = await create_app(client, "old", uid="u1", metadata={"a": "1"})
    resp = await client.put(f"/api/v1/app/{app['id']}", json={"name": "new"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == app["id"]
    assert (body["name"], body["uid"], body["metadata"]) == ("new", None, {})
    assert body["createdAt"] == app["createdAt"]
    assert (await client.get(f"/api/v1/app/{app['id']}")).json() == body


async def test_patch_changes_only_given_fields(client: httpx.AsyncClient) -> None:
    app = await create_app(client, "old", uid="u1", metadata={"a": "1"})
    resp = await client.patch(f"/api/v1/app/{app['id']}", json={"name": "new"})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["name"], body["uid"], body["metadata"]) == ("new", "u1", {"a": "1"})
    resp = await client.patch(f"/api/v1/app/{app['id']}", json={"uid": None})
    assert resp.json()["uid"] is None
    assert resp.json()["name"] == "new"


async def test_delete_app_is_204_then_404(client: httpx.AsyncClient) -> None:
    app = await create_app(client, uid="gone")
    await create_endpoint(client, app["id"])
    await send_message(client, app["id"])
    resp = await client.delete(f"/api/v1/app/{app['id']}")
    assert resp.status_code == 204
    assert resp.content == b""
    assert_error(await client.get(f"/api/v1/app/{app['id']}"), 404, "not_found")
    assert_error(await client.get("/api/v1/app/gone"), 404, "not_found")
    assert_error(await client.get(f"/api/v1/app/{app['id']}/msg"), 404, "not_found")
    assert_error(await client.delete(f"/api/v1/app/{app['id']}"), 404, "not_found")
    assert await list_all(client, "/api/v1/app") == []


async def test_get_if_exists_returns_the_existing_app(client: httpx.AsyncClient) -> None:
    first = await create_app(client, "Acme", uid="acme")
    resp = await client.post(
        "/api/v1/app", params={"get_if_exists": "true"}, json={"name": "Other", "uid": "acme"}
    )
    assert resp.status_code == 200
    assert resp.json() == first
    resp = await client.post(
        "/api/v1/app", params={"get_if_exists": "true"}, json={"name": "New", "uid": "fresh"}
    )
    assert resp.status_code == 201
    assert len(await list_all(client, "/api/v1/app")) == 2


# event types -------------------------------------------------------------------------------------


async def test_event_type_crud_and_archive_on_delete(client: httpx.AsyncClient) -> None:
    et = await create_event_type(client, "user.created")
    assert et["archived"] is False
    assert ISO.match(et["createdAt"])
    resp = await client.patch("/api/v1/event-type/user.created", json={"description": "new"})
    assert resp.status_code == 200
    assert resp.json()["description"] == "new"

    assert (await client.delete("/api/v1/event-type/user.created")).status_code == 204
    got = await client.get("/api/v1/event-type/user.created")
    assert got.status_code == 200
    assert got.json()["archived"] is True
    assert await list_all(client, "/api/v1/event-type") == []
    archived = await list_all(client, "/api/v1/event-type", include_archived="true")
    assert [t["name"] for t in archived] == ["user.created"]


async def test_event_type_unarchive_with_put(client: httpx.AsyncClient) -> None:
    await create_event_type(client, "user.created")
    await client.delete("/api/v1/event-type/user.created")
    resp = await client.put(
        "/api/v1/event-type/user.created", json={"description": "back", "archived": False}
    )
    assert resp.status_code == 200
    assert [t["name"] for t in await list_all(client, "/api/v1/event-type")] == ["user.created"]


# endpoints ---------------------------------------------------------------------------------------


async def test_endpoint_create_and_get(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    await create_event_type(client, "user.created")
    ep = await create_endpoint(
        client, app["id"], url="https://example.com/h", uid="main", eventTypes=["user.created"]
    )
    assert ep["id"].startswith("ep_")
    assert ep["eventTypes"] == ep["filterTypes"] == ["user.created"]
    assert ep["disabled"] is False
    by_uid = await client.get(f"/api/v1/app/{app['id']}/endpoint/main")
    assert by_uid.json() == ep


async def test_endpoint_secret_is_whsec(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    resp = await client.get(f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/secret")
    assert resp.status_code == 200
    key = resp.json()["key"]
    assert key.startswith("whsec_")
    assert len(signing.decode_secret(key)) >= 24
    assert "secret" not in ep and key not in json.dumps(ep)


async def test_endpoint_given_secret_is_kept(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    ep = await create_endpoint(client, app["id"], secret=secret)
    got = await client.get(f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/secret")
    assert got.json() == {"key": secret}


async def test_endpoint_secret_rotation_changes_the_key(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/secret"
    before = (await client.get(path)).json()["key"]
    rotated = await client.post(f"{path}/rotate", json={})
    assert rotated.status_code == 200, rotated.text  # the svix SDK parses the new key
    after = (await client.get(path)).json()["key"]
    assert rotated.json() == {"key": after}
    assert after.startswith("whsec_") and after != before


async def test_headers_hide_sensitive_values(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/headers"
    resp = await client.put(
        path, json={"headers": {"Authorization": "Bearer s3cr3t", "X-Tenant": "acme"}}
    )
    assert resp.status_code == 204
    got = await client.get(path)
    assert got.status_code == 200
    assert got.json() == {"headers": {"X-Tenant": "acme"}, "sensitive": ["Authorization"]}
    assert "s3cr3t" not in got.text

    resp = await client.patch(path, json={"headers": {"X-Tenant": None, "X-Region": "eu"}})
    assert resp.status_code == 204
    got = await client.get(path)
    assert got.json() == {"headers": {"X-Region": "eu"}, "sensitive": ["Authorization"]}


async def test_endpoint_delete_is_204_then_404(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}"
    assert (await client.delete(path)).status_code == 204
    assert_error(await client.get(path), 404, "not_found")
    assert await list_all(client, f"/api/v1/app/{app['id']}/endpoint") == []


# messages ----------------------------------------------------------------------------------------


async def test_message_is_202_and_readable(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    await create_endpoint(client, app["id"])
    msg = await send_message(client, app["id"], eventId="evt-9", channels=["eu"])
    assert msg["id"].startswith("msg_")
    assert msg["payload"] == {"n": 1}
    assert (msg["eventType"], msg["eventId"], msg["channels"]) == ("user.created", "evt-9", ["eu"])
    assert ISO.match(msg["timestamp"])
    for ref in (msg["id"], "evt-9"):
        got = await client.get(f"/api/v1/app/{app['id']}/msg/{ref}")
        assert got.json() == msg
    bare = await client.get(
        f"/api/v1/app/{app['id']}/msg/{msg['id']}", params={"with_content": "false"}
    )
    assert bare.json()["payload"] == {}
    dests = await list_all(client, f"/api/v1/app/{app['id']}/msg/{msg['id']}/endpoint")
    assert [d["statusText"] for d in dests] == ["pending"]


async def test_message_payload_bytes_are_kept_exactly(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    raw = b'{"eventType": "a", "payload": {"b": 1.50, "a": "\\u00e9"}}'
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 202
    got = await client.get(f"/api/v1/app/{app['id']}/msg/{resp.json()['id']}")
    assert b'{"b": 1.50, "a": "\\u00e9"}' in got.content


async def test_idempotency_key_replays_the_first_answer(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    body = {"eventType": "a", "payload": {"n": 1}}
    headers = {"idempotency-key": "k-1"}
    first = await client.post(f"/api/v1/app/{app['id']}/msg", json=body, headers=headers)
    again = await client.post(f"/api/v1/app/{app['id']}/msg", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert len(await list_all(client, f"/api/v1/app/{app['id']}/msg")) == 1
    other = {"eventType": "a", "payload": {"n": 2}}
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", json=other, headers=headers)
    assert_error(resp, 409, "idempotency_key_mismatch")


# documents and health ----------------------------------------------------------------------------


async def test_openapi_document_lists_the_paths(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = json.loads(resp.content)
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/app", "post"),
        ("/api/v1/app/{app_id}", "get"),
        ("/api/v1/app/{app_id}/endpoint", "post"),
        ("/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret", "get"),
        ("/api/v1/app/{app_id}/msg", "post"),
        ("/api/v1/app/{app_id}/attempt/msg/{msg_id}", "get"),
        ("/api/v1/event-type", "post"),
        ("/api/v1/health", "get"),
    ]:
        assert method in paths[path], path
    schema = paths["/api/v1/app"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].startswith("#/components/schemas/")
    assert "ApplicationIn" in doc["components"]["schemas"]


async def test_openapi_needs_no_token(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/api/v1/openapi.json")).status_code == 200


async def test_docs_page_is_html(anon: httpx.AsyncClient) -> None:
    resp = await anon.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "/api/v1/openapi.json" in resp.text
    asset = await anon.get("/docs/static/swagger-ui-bundle.js")
    assert asset.status_code == 200


async def test_health_is_204_without_a_token(anon: httpx.AsyncClient) -> None:
    resp = await anon.get("/api/v1/health")
    assert resp.status_code == 204
    assert resp.content == b""


async def test_health_answers_503_when_the_database_is_gone(
    hl: Hookline, anon: httpx.AsyncClient
) -> None:
    async def broken() -> None:
        raise OSError("disk gone")

    hl.store.ping = broken  # type: ignore[method-assign]
    resp = await anon.get("/api/v1/health")
    body = assert_error(resp, 503, "unavailable")
    assert "disk gone" not in body["detail"]  # the cause is named, internals are not echoed


async def test_requests_past_the_in_flight_bound_answer_503_with_retry_after(
    hl: Hookline, anon: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookline.api as api_module

    monkeypatch.setattr(api_module, "MAX_REQUESTS_IN_FLIGHT", 0)
    resp = await anon.get("/api/v1/health")
    assert_error(resp, 503, "unavailable")
    assert resp.headers["retry-after"] == "1"
