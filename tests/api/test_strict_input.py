"""The server takes exactly what its OpenAPI document describes: unknown fields are refused (422
naming them), Svix fields hookline does not implement are refused unless null, query booleans and
date-times are read strictly, and a 405 names the allowed methods. The document itself is
checked for the typing that lets a fuzzer tell a server bug from a gap in the document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hookline.api import http, openapi

from .conftest import assert_invalid, create_app, create_endpoint, create_event_type, list_all

UNKNOWN = "colour"


@pytest.fixture
async def ids(client: httpx.AsyncClient) -> dict[str, str]:
    await create_event_type(client, "user.created")
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    return {"app": app["id"], "ep": ep["id"]}


# (method, path, a valid body): every operation that takes a body
BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/app", {"name": "acme"}),
    ("PUT", "/app/{app}", {"name": "acme"}),
    ("PATCH", "/app/{app}", {"name": "acme"}),
    ("POST", "/event-type", {"name": "order.paid", "description": "d"}),
    ("PUT", "/event-type/user.created", {"description": "d"}),
    ("PATCH", "/event-type/user.created", {"description": "d"}),
    ("POST", "/app/{app}/endpoint", {"url": "https://example.com/h"}),
    ("PUT", "/app/{app}/endpoint/{ep}", {"url": "https://example.com/h"}),
    ("PATCH", "/app/{app}/endpoint/{ep}", {"url": "https://example.com/h"}),
    ("PUT", "/app/{app}/endpoint/{ep}/headers", {"headers": {"x-a": "1"}}),
    ("PATCH", "/app/{app}/endpoint/{ep}/headers", {"headers": {"x-a": "1"}}),
    ("POST", "/app/{app}/endpoint/{ep}/secret/rotate", {}),
    ("POST", "/app/{app}/endpoint/{ep}/recover", {"since": "2026-01-01T00:00:00Z"}),
    ("POST", "/app/{app}/msg", {"eventType": "user.created", "payload": {}}),
]


def test_the_table_covers_every_operation_with_a_body() -> None:
    with_body = {(op.method, op.path.removeprefix("/api/v1")) for op in http.OPERATIONS if op.body}
    covered = {
        (m, p.replace("{app}", "{app_id}").replace("{ep}", "{endpoint_id}")) for m, p, _ in BODIES
    }
    covered = {(m, p.replace("user.created", "{event_type_name}")) for m, p in covered}
    assert covered == with_body


@pytest.mark.parametrize(("method", "path", "body"), BODIES)
async def test_an_unknown_field_is_422_naming_it_and_changes_nothing(
    client: httpx.AsyncClient, ids: dict[str, str], method: str, path: str, body: dict[str, Any]
) -> None:
    url = "/api/v1" + path.format(**ids)
    before = (await client.get(url)).json() if method in ("PUT", "PATCH") else None
    resp = await client.request(method, url, json={**body, UNKNOWN: 1})
    detail = assert_invalid(resp, ["body"])["detail"][0]
    assert f"unknown field `{UNKNOWN}`" in detail["msg"]
    if before is not None and not path.endswith("/headers"):
        assert (await client.get(url)).json() == before
    # and the same body without it is taken
    assert (await client.request(method, url, json=body)).status_code < 300


async def test_an_unknown_field_in_the_inline_application_is_422_there(
    client: httpx.AsyncClient,
) -> None:
    await create_event_type(client, "user.created")
    body = {
        "eventType": "user.created",
        "payload": {},
        "application": {"name": "inline", UNKNOWN: "red"},
    }
    resp = await client.post("/api/v1/app/inline-app/msg", json=body)
    assert (
        f"unknown field `{UNKNOWN}`"
        in assert_invalid(resp, ["body", "application"])["detail"][0]["msg"]
    )
    assert [a for a in await list_all(client, "/api/v1/app") if a["uid"] == "inline-app"] == []


@pytest.mark.parametrize(("field", "value"), [("featureFlags", ["beta"]), ("groupName", "g")])
async def test_event_type_fields_hookline_lacks_are_refused_unless_null(
    client: httpx.AsyncClient, field: str, value: object
) -> None:
    resp = await client.post(
        "/api/v1/event-type", json={"name": "a.b", "description": "d", field: value}
    )
    assert assert_invalid(resp, ["body", field])["detail"][0]["msg"] == (
        f"{field} is not supported by hookline"
    )
    assert await list_all(client, "/api/v1/event-type", include_archived="true") == []
    ok = await client.post(
        "/api/v1/event-type", json={"name": "a.b", "description": "d", field: None}
    )
    assert ok.status_code == 201, ok.text
    for method in ("PUT", "PATCH"):
        resp = await client.request(
            method, "/api/v1/event-type/a.b", json={"description": "x", field: value}
        )
        assert_invalid(resp, ["body", field])
        resp = await client.request(
            method, "/api/v1/event-type/a.b", json={"description": "x", field: None}
        )
        assert resp.status_code == 200, resp.text


async def test_delete_headers_removes_the_named_headers(
    client: httpx.AsyncClient, ids: dict[str, str]
) -> None:
    url = f"/api/v1/app/{ids['app']}/endpoint/{ids['ep']}/headers"
    await client.put(url, json={"headers": {"x-a": "1", "x-b": "2", "x-c": "3"}})
    resp = await client.patch(url, json={"headers": {"x-d": "4"}, "deleteHeaders": ["x-a", "x-b"]})
    assert resp.status_code == 204, resp.text
    assert (await client.get(url)).json()["headers"] == {"x-c": "3", "x-d": "4"}


async def test_the_deprecated_endpoint_version_is_accepted(
    client: httpx.AsyncClient, ids: dict[str, str]
) -> None:
    resp = await client.post(
        f"/api/v1/app/{ids['app']}/endpoint", json={"url": "https://example.com/v", "version": 1}
    )
    assert resp.status_code == 201, resp.text


# query parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "1", "True", ""])
async def test_boolean_query_parameters_are_true_or_false(
    client: httpx.AsyncClient, ids: dict[str, str], value: str
) -> None:
    assert_invalid(
        await client.get("/api/v1/event-type", params={"include_archived": value}),
        ["query", "include_archived"],
    )
    assert_invalid(
        await client.get(f"/api/v1/app/{ids['app']}/msg", params={"with_content": value}),
        ["query", "with_content"],
    )
    resp = await client.post("/api/v1/app", params={"get_if_exists": value}, json={"name": "x"})
    assert_invalid(resp, ["query", "get_if_exists"])
    assert [a["name"] for a in await list_all(client, "/api/v1/app")] == ["app"]


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00+0100",
        "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
        "now",
    ],
)
async def test_date_time_query_parameters_are_rfc_3339_with_an_offset(
    client: httpx.AsyncClient, ids: dict[str, str], value: str
) -> None:
    resp = await client.get(f"/api/v1/app/{ids['app']}/msg", params={"before": value})
    assert_invalid(resp, ["query", "before"])


@pytest.mark.parametrize(
    "value", ["2026-01-01T00:00:00Z", "2026-01-01t00:00:00.123456789z", "2026-01-01T01:00:00+01:00"]
)
async def test_rfc_3339_date_times_are_taken(
    client: httpx.AsyncClient, ids: dict[str, str], value: str
) -> None:
    resp = await client.get(f"/api/v1/app/{ids['app']}/msg", params={"after": value})
    assert resp.status_code == 200, resp.text


async def test_event_types_filter_takes_only_event_type_names(
    client: httpx.AsyncClient, ids: dict[str, str]
) -> None:
    url = f"/api/v1/app/{ids['app']}/msg"
    assert_invalid(await client.get(url, params={"event_types": "a,b c"}), ["query", "event_types"])
    assert (await client.get(url, params={"event_types": "a,b.c"})).status_code == 200


async def test_a_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/api/v1/app")
    assert resp.status_code == 405
    assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    resp = await client.post("/api/v1/app/app_x")
    assert set(resp.headers["allow"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
        "PUT",
        "PATCH",
        "DELETE",
    }


# the document ----------------------------------------------------------------------------------


def test_the_document_types_every_parameter_and_lists_every_error() -> None:
    doc = openapi.document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            for param in op["parameters"]:
                assert param["schema"], where
            responses = op["responses"]
            assert "503" in responses and "Retry-After" in responses["503"]["headers"], where
            assert "413" in responses, where
            if "requestBody" in op:
                assert {"400", "422"} <= set(responses), where
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[1]
                assert doc["components"]["schemas"][name]["additionalProperties"] is False
            if op.get("security"):
                assert "401" in responses, where
    app_list = doc["paths"]["/api/v1/app"]["get"]
    limit = next(p for p in app_list["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": http.MAX_LIMIT}
    health = doc["paths"]["/api/v1/health"]["get"]["responses"]
    assert set(health) == {"204", "413", "503"}
    resend = doc["paths"]["/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend"]
    assert resend["post"]["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EmptyOut"
    }
    message_in = doc["components"]["schemas"]["MessageIn"]["properties"]
    assert message_in["payload"]["type"] == "object"
    assert {"type": "string", "format": "date-time"} in message_in["deliverAt"]["anyOf"]
    assert message_in["transformationsParams"]["type"] == "null"
    endpoint_in = doc["components"]["schemas"]["EndpointIn"]["properties"]
    assert endpoint_in["url"]["format"] == "uri"
