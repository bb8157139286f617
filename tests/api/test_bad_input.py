"""Acceptance item 7: bad input is a clear 4xx with a Svix-shaped body, never a 5xx, and nothing
is written. Every case lists the resource afterwards to prove the database did not change."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hookline import delivery
from hookline.api import http
from hookline.app import Hookline
from hookline.models import ClaimPolicy

from .conftest import (
    ADMIN_TOKEN,
    MAX_PAYLOAD_BYTES,
    assert_error,
    assert_invalid,
    create_app,
    create_endpoint,
    create_event_type,
    list_all,
    send_message,
)

JSON_HEADERS = {"content-type": "application/json"}


async def messages_of(client: httpx.AsyncClient, app_id: str) -> list[dict[str, Any]]:
    return await list_all(client, f"/api/v1/app/{app_id}/msg")


async def endpoints_of(client: httpx.AsyncClient, app_id: str) -> list[dict[str, Any]]:
    return await list_all(client, f"/api/v1/app/{app_id}/endpoint")


# malformed and mistyped bodies -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b'{"name": ', b"{name: 'x'}", b"\xff\xfe", b'{"name": "a"} x'])
async def test_malformed_json_is_400_and_creates_nothing(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    resp = await client.post("/api/v1/app", content=raw, headers=JSON_HEADERS)
    body = assert_error(resp, 400, "bad_request")
    assert "JSON" in body["detail"]
    assert await list_all(client, "/api/v1/app") == []


async def test_malformed_json_message_is_400_and_sends_nothing(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg",
        content=b'{"eventType": "a", "payload": {',
        headers=JSON_HEADERS,
    )
    assert_error(resp, 400, "bad_request")
    assert await messages_of(client, app["id"]) == []


async def test_empty_body_is_422_naming_the_body(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/v1/app", content=b"", headers=JSON_HEADERS)
    assert_invalid(resp, ["body"])
    assert await list_all(client, "/api/v1/app") == []


@pytest.mark.parametrize("payload", [[1, 2], "text", "{not an object}", 42, 1.5, None, True])
async def test_non_object_payload_is_422_at_body_payload(
    client: httpx.AsyncClient, payload: object
) -> None:
    app = await create_app(client)
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", json={"eventType": "user.created", "payload": payload}
    )
    assert_invalid(resp, ["body", "payload"])
    assert await messages_of(client, app["id"]) == []


async def test_missing_payload_is_422_at_body_payload(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", json={"eventType": "user.created"})
    body = assert_error(resp, 422, "validation")
    assert body["detail"][0]["loc"] == ["body"]
    assert "payload" in body["detail"][0]["msg"]
    assert await messages_of(client, app["id"]) == []


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/app", {"name": 5}, ["body", "name"]),
        ("/api/v1/app", {"name": "a", "throttleRate": "fast"}, ["body", "throttleRate"]),
        ("/api/v1/app", {"name": "a", "uid": "has space"}, ["body", "uid"]),
        ("/api/v1/app", {"name": ""}, ["body", "name"]),
        ("/api/v1/event-type", {"name": "a.b", "description": 3}, ["body", "description"]),
        ("/api/v1/event-type", {"name": "bad name!", "description": "d"}, ["body", "name"]),
    ],
)
async def test_wrong_types_are_422_with_loc(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], loc: list[str | int]
) -> None:
    resp = await client.post(path, json=body)
    assert_invalid(resp, loc)
    assert await list_all(client, path, include_archived="true") == []


async def test_wrong_type_in_a_map_names_the_field(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/v1/app", json={"name": "a", "metadata": {"k": 1}})
    body = assert_error(resp, 422, "validation")
    # msgspec does not say which key of a map was wrong, so the loc stops at the field
    assert body["detail"][0]["loc"][:2] == ["body", "metadata"]
    assert await list_all(client, "/api/v1/app") == []


async def test_wrong_type_in_a_list_names_the_index(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg",
        json={"eventType": "a", "payload": {}, "channels": ["ok", 7]},
    )
    assert_invalid(resp, ["body", "channels", 1])
    assert await messages_of(client, app["id"]) == []


async def test_oversized_payload_is_413_and_sends_nothing(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    payload = {"blob": "x" * MAX_PAYLOAD_BYTES}
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", json={"eventType": "user.created", "payload": payload}
    )
    assert_error(resp, 413, "payload_too_large")
    assert await messages_of(client, app["id"]) == []


async def test_oversized_body_without_content_length_is_413(client: httpx.AsyncClient) -> None:
    """A chunked upload has no Content-Length to check up front; the stream is cut off."""
    app = await create_app(client)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"eventType": "user.created", "payload": {"blob": "'
        for _ in range(MAX_PAYLOAD_BYTES // 512 + 1):
            yield b"x" * 512
        yield b'"}}'

    resp = await client.post(f"/api/v1/app/{app['id']}/msg", content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413, "payload_too_large")
    assert await messages_of(client, app["id"]) == []


async def test_payload_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    envelope = b'{"eventType":"user.created","payload":{"blob":""}}'
    blob = "x" * (MAX_PAYLOAD_BYTES - len(envelope))
    raw = envelope.replace(b'""', f'"{blob}"'.encode())
    assert len(raw) == MAX_PAYLOAD_BYTES
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", content=raw, headers=JSON_HEADERS)
    assert resp.status_code == 202, resp.text
    assert len(await messages_of(client, app["id"])) == 1


# endpoints: event types and URLs ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["eventTypes", "filterTypes"])
async def test_endpoint_with_unknown_event_type_is_422(
    client: httpx.AsyncClient, field: str
) -> None:
    app = await create_app(client)
    await create_event_type(client, "user.created")
    resp = await client.post(
        f"/api/v1/app/{app['id']}/endpoint",
        json={"url": "https://example.com/h", field: ["user.created", "user.nope"]},
    )
    body = assert_invalid(resp, ["body", field, 1])
    assert "user.nope" in body["detail"][0]["msg"]
    assert await endpoints_of(client, app["id"]) == []


async def test_endpoint_with_archived_event_type_is_422(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    await create_event_type(client, "user.deleted")
    assert (await client.delete("/api/v1/event-type/user.deleted")).status_code == 204
    resp = await client.post(
        f"/api/v1/app/{app['id']}/endpoint",
        json={"url": "https://example.com/h", "eventTypes": ["user.deleted"]},
    )
    assert_invalid(resp, ["body", "eventTypes", 0])
    assert await endpoints_of(client, app["id"]) == []


async def test_endpoint_patch_to_unknown_event_type_is_422_and_keeps_filter(
    client: httpx.AsyncClient,
) -> None:
    app = await create_app(client)
    await create_event_type(client, "user.created")
    ep = await create_endpoint(client, app["id"], eventTypes=["user.created"])
    resp = await client.patch(
        f"/api/v1/app/{app['id']}/endpoint/{ep['id']}", json={"eventTypes": ["user.nope"]}
    )
    assert_invalid(resp, ["body", "eventTypes", 0])
    got = (await client.get(f"/api/v1/app/{app['id']}/endpoint/{ep['id']}")).json()
    assert got["eventTypes"] == ["user.created"]


@pytest.mark.parametrize(
    "url", ["ftp://x", "not a url", "http://", "https:///path", "//example.com/h", "", "file:///x"]
)
async def test_invalid_endpoint_url_is_422(client: httpx.AsyncClient, url: str) -> None:
    app = await create_app(client)
    resp = await client.post(f"/api/v1/app/{app['id']}/endpoint", json={"url": url})
    assert_invalid(resp, ["body", "url"])
    assert await endpoints_of(client, app["id"]) == []


@pytest.mark.parametrize("method", ["put", "patch"])
async def test_invalid_url_on_update_is_422_and_keeps_url(
    client: httpx.AsyncClient, method: str
) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"], url="https://example.com/keep")
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}"
    resp = await client.request(method, path, json={"url": "ftp://x"})
    assert_invalid(resp, ["body", "url"])
    assert (await client.get(path)).json()["url"] == "https://example.com/keep"


# authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {ADMIN_TOKEN}",
        f"Token {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        "Bearer hl_not_a_real_token",
        f"Bearer {ADMIN_TOKEN}x",
    ],
)
async def test_missing_or_invalid_token_is_401_and_creates_nothing(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    resp = await anon.post("/api/v1/app", json={"name": "sneaky"}, headers=headers)
    assert_error(resp, 401, "authentication_failed")
    resp = await anon.get("/api/v1/app", headers=headers)
    assert_error(resp, 401, "authentication_failed")
    assert await list_all(client, "/api/v1/app") == []


async def test_every_authenticated_route_refuses_a_missing_token(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    app = await create_app(client)
    for op in http.OPERATIONS:
        if not op.auth:
            continue
        path = (
            op.path.replace("{app_id}", app["id"])
            .replace("{endpoint_id}", "ep_x")
            .replace("{msg_id}", "msg_x")
            .replace("{attempt_id}", "atmpt_x")
            .replace("{event_type_name}", "x")
        )
        resp = await anon.request(op.method, path, json={})
        assert_error(resp, 401, "authentication_failed")
    assert [a["id"] for a in await list_all(client, "/api/v1/app")] == [app["id"]]


async def test_unauthenticated_message_is_not_written(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    app = await create_app(client)
    resp = await anon.post(f"/api/v1/app/{app['id']}/msg", json={"eventType": "a", "payload": {}})
    assert_error(resp, 401)
    assert await messages_of(client, app["id"]) == []


# tenancy: another app's ids, another organisation ------------------------------------------------


async def _attempt_for(hl: Hookline, msg_id: str) -> str:
    """Record one (failed) attempt for the message's task, without any network I/O."""
    now = time.time()
    claims = await hl.store.claim_due(now, ClaimPolicy(limit=10), 30.0)
    claim = next(c for c in claims if c.message.id == msg_id)
    request = delivery.prepare(claim, now)
    response = delivery.Response(status=500, body="nope", retry_after=None, duration_ms=3)
    done = delivery.classify(claim, request, response, schedule=(60.0,), now=now, rand=lambda: 0.5)
    await hl.store.complete([done], now)
    return done.attempt.id


async def test_another_apps_ids_are_404_under_this_app(
    hl: Hookline, client: httpx.AsyncClient
) -> None:
    mine = await create_app(client, "mine")
    theirs = await create_app(client, "theirs", uid="theirs")
    ep = await create_endpoint(client, theirs["id"], url="https://example.com/theirs")
    msg = await send_message(client, theirs["id"], eventId="evt-1")
    attempt_id = await _attempt_for(hl, msg["id"])
    a, b = f"/api/v1/app/{mine['id']}", f"/api/v1/app/{theirs['id']}"

    # sanity: the ids are real under their own app
    assert (await client.get(f"{b}/msg/{msg['id']}/attempt/{attempt_id}")).status_code == 200

    reads = [
        f"{a}/endpoint/{ep['id']}",
        f"{a}/endpoint/{ep['id']}/secret",
        f"{a}/endpoint/{ep['id']}/headers",
        f"{a}/endpoint/{ep['id']}/stats",
        f"{a}/msg/{msg['id']}",
        f"{a}/msg/evt-1",
        f"{a}/msg/{msg['id']}/attempt/{attempt_id}",
        f"{a}/msg/{msg['id']}/endpoint",
        f"{a}/attempt/msg/{msg['id']}",
        f"{a}/attempt/endpoint/{ep['id']}",
    ]
    for path in reads:
        assert_error(await client.get(path), 404, "not_found")

    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PUT", f"{a}/endpoint/{ep['id']}", {"url": "https://evil.example/"}),
        ("PATCH", f"{a}/endpoint/{ep['id']}", {"url": "https://evil.example/"}),
        ("PUT", f"{a}/endpoint/{ep['id']}/headers", {"headers": {"x-evil": "1"}}),
        ("PATCH", f"{a}/endpoint/{ep['id']}/headers", {"headers": {"x-evil": "1"}}),
        ("POST", f"{a}/endpoint/{ep['id']}/secret/rotate", {}),
        ("POST", f"{a}/endpoint/{ep['id']}/recover", {"since": "2020-01-01T00:00:00Z"}),
        ("POST", f"{a}/msg/{msg['id']}/endpoint/{ep['id']}/resend", None),
        ("DELETE", f"{a}/endpoint/{ep['id']}", None),
    ]
    secret_before = (await client.get(f"{b}/endpoint/{ep['id']}/secret")).json()["key"]
    for method, path, body in writes:
        resp = await client.request(method, path, json=body)
        assert_error(resp, 404, "not_found")

    # nothing under the other app changed
    got = (await client.get(f"{b}/endpoint/{ep['id']}")).json()
    assert got["url"] == "https://example.com/theirs"
    assert (await client.get(f"{b}/endpoint/{ep['id']}/headers")).json()["headers"] == {}
    assert (await client.get(f"{b}/endpoint/{ep['id']}/secret")).json()["key"] == secret_before
    assert [d["id"] for d in await list_all(client, f"{b}/attempt/msg/{msg['id']}")] == [attempt_id]
    assert await endpoints_of(client, mine["id"]) == []
    assert await messages_of(client, mine["id"]) == []


async def test_another_organisation_cannot_see_or_touch_apps(
    client: httpx.AsyncClient, other_org: httpx.AsyncClient
) -> None:
    app = await create_app(client, "acme", uid="acme-app")
    await send_message(client, app["id"])

    listing = await other_org.get("/api/v1/app")
    assert listing.status_code == 200
    assert listing.json()["data"] == []
    for ref in (app["id"], "acme-app"):
        assert_error(await other_org.get(f"/api/v1/app/{ref}"), 404, "not_found")
        assert_error(await other_org.get(f"/api/v1/app/{ref}/msg"), 404, "not_found")
        assert_error(await other_org.get(f"/api/v1/app/{ref}/endpoint"), 404, "not_found")
    resp = await other_org.post(
        f"/api/v1/app/{app['id']}/msg", json={"eventType": "a", "payload": {}}
    )
    assert_error(resp, 404, "not_found")
    resp = await other_org.post(
        f"/api/v1/app/{app['id']}/endpoint", json={"url": "https://evil.example/"}
    )
    assert_error(resp, 404, "not_found")
    assert_error(await other_org.put(f"/api/v1/app/{app['id']}", json={"name": "x"}), 404)
    assert_error(await other_org.delete(f"/api/v1/app/{app['id']}"), 404)

    assert len(await messages_of(client, app["id"])) == 1
    assert await endpoints_of(client, app["id"]) == []
    assert (await client.get(f"/api/v1/app/{app['id']}")).json()["name"] == "acme"


async def test_uids_and_event_types_are_per_organisation(
    client: httpx.AsyncClient, other_org: httpx.AsyncClient
) -> None:
    await create_app(client, "acme", uid="shared")
    await create_event_type(client, "user.created")
    # the other tenant may reuse both names: they are its own
    theirs = await create_app(other_org, "other", uid="shared")
    assert (await other_org.get("/api/v1/app/shared")).json()["id"] == theirs["id"]
    assert await list_all(other_org, "/api/v1/event-type") == []
    assert_error(await other_org.get("/api/v1/event-type/user.created"), 404)
    await create_event_type(other_org, "user.created")


# conflicts ---------------------------------------------------------------------------------------


async def test_duplicate_event_type_is_409_and_keeps_the_first(client: httpx.AsyncClient) -> None:
    await create_event_type(client, "invoice.paid")
    resp = await client.post(
        "/api/v1/event-type", json={"name": "invoice.paid", "description": "second"}
    )
    body = assert_error(resp, 409, "conflict")
    assert "invoice.paid" in body["detail"]
    types = await list_all(client, "/api/v1/event-type", include_archived="true")
    assert [(t["name"], t["description"]) for t in types] == [("invoice.paid", "invoice.paid")]


async def test_duplicate_event_id_is_409_and_one_message(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    first = await send_message(client, app["id"], eventId="order-17")
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg",
        json={"eventType": "user.created", "payload": {"n": 2}, "eventId": "order-17"},
    )
    assert_error(resp, 409, "conflict")
    msgs = await messages_of(client, app["id"])
    assert [m["id"] for m in msgs] == [first["id"]]
    assert msgs[0]["payload"] == {"n": 1}


async def test_duplicate_app_uid_is_409(client: httpx.AsyncClient) -> None:
    await create_app(client, "one", uid="same")
    assert_error(await client.post("/api/v1/app", json={"name": "two", "uid": "same"}), 409)
    assert [a["name"] for a in await list_all(client, "/api/v1/app")] == ["one"]


# custom headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["webhook-id", "Webhook-Signature", "svix-id", "content-type", "Content-Length", "Host"]
)
@pytest.mark.parametrize("method", ["put", "patch"])
async def test_reserved_custom_header_is_422_and_headers_unchanged(
    client: httpx.AsyncClient, method: str, name: str
) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/headers"
    assert (await client.put(path, json={"headers": {"x-keep": "1"}})).status_code == 204
    resp = await client.request(method, path, json={"headers": {"x-new": "2", name: "v"}})
    assert_invalid(resp, ["body", "headers", name])
    assert (await client.get(path)).json() == {"headers": {"x-keep": "1"}, "sensitive": []}


@pytest.mark.parametrize(
    ("name", "value"), [("x-bad name", "v"), ("x-ok", "a\r\nInjected: 1"), ("x:colon", "v")]
)
async def test_invalid_custom_header_is_422(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    path = f"/api/v1/app/{app['id']}/endpoint/{ep['id']}/headers"
    resp = await client.put(path, json={"headers": {name: value}})
    assert_invalid(resp, ["body", "headers", name])
    assert (await client.get(path)).json()["headers"] == {}


# query parameters and unknown routes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "251"}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"order": "sideways"}, ["query", "order"]),
    ],
)
async def test_bad_paging_query_is_422(
    client: httpx.AsyncClient, query: dict[str, str], loc: list[str | int]
) -> None:
    assert_invalid(await client.get("/api/v1/app", params=query), loc)


async def test_bad_time_query_is_422(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    resp = await client.get(f"/api/v1/app/{app['id']}/msg", params={"before": "yesterday"})
    assert_invalid(resp, ["query", "before"])


async def test_unknown_route_and_method_are_svix_shaped(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nope"), 404, "not_found")
    assert_error(await client.delete("/api/v1/app"), 405)


# never a 5xx -------------------------------------------------------------------------------------

GARBAGE: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"x"',
    b"{}",
    b'{"name": 5, "url": 5, "headers": 5, "since": 5, "key": 5, "description": 5}',
    b'{"name": "a", "url": "x", "headers": {"webhook-id": "1"}, "since": "nope", "key": "k"}',
    b'{"eventType": "a", "payload": {}, "eventId": "' + b"x" * 300 + b'"}',
]


async def test_garbage_bodies_on_every_route_never_5xx(
    hl: Hookline, client: httpx.AsyncClient
) -> None:
    """Every body-taking route, fed junk: a 4xx with a Svix body, or (for junk that happens to
    be a valid request, e.g. an empty PATCH) a 2xx; never a 5xx."""
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    msg = await send_message(client, app["id"])
    attempt_id = await _attempt_for(hl, msg["id"])
    await create_event_type(client, "user.created")
    for op in http.OPERATIONS:
        if op.method == "GET":
            continue
        path = (
            op.path.replace("{app_id}", app["id"])
            .replace("{endpoint_id}", ep["id"])
            .replace("{msg_id}", msg["id"])
            .replace("{attempt_id}", attempt_id)
            .replace("{event_type_name}", "user.created")
        )
        if op.method == "DELETE":
            continue  # deleting the fixtures would only make later routes answer 404
        for raw in GARBAGE:
            resp = await client.request(op.method, path, content=raw, headers=JSON_HEADERS)
            assert resp.status_code < 500, (op.method, path, raw, resp.text)
            if resp.status_code >= 400:
                assert set(resp.json()) == {"code", "detail"}, (op.method, path, raw)
            elif op.body is not None:
                assert raw.startswith(b"{"), (op.method, path, raw, resp.status_code)
