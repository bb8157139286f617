"""Hostile input never produces a 5xx: deep nesting, text that is not UTF-8, lone surrogates,
digits that are not ASCII, numbers too large for any bound. Each refusal is a Svix-shaped 4xx
and writes nothing, and what the API answers afterwards is still strict JSON."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import httpx
import pytest

from hookline import settings
from hookline.api import http

from .conftest import (
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
DEPTH = http.MAX_JSON_DEPTH


def nested(levels: int, leaf: bytes = b"1") -> bytes:
    """``levels`` arrays, one inside the other, around ``leaf``."""
    return b"[" * levels + leaf + b"]" * levels


def strict_json(content: bytes) -> Any:
    """Parse as RFC 8259 demands: UTF-8 text, and no string holding a lone surrogate.

    ``json.loads`` alone is lenient on both counts (``surrogatepass``, ``"\\ud800"``).
    """
    value = json.loads(content.decode("utf-8"))

    def walk(v: Any) -> None:
        if isinstance(v, str):
            v.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for key, item in v.items():
                walk(key)
                walk(item)

    walk(value)
    return value


async def strict_messages(client: httpx.AsyncClient, app_id: str) -> list[dict[str, Any]]:
    """The app's messages, listed as a strict JSON client would read them."""
    resp = await client.get(f"/api/v1/app/{app_id}/msg", params={"limit": "250"})
    assert resp.status_code == 200, resp.text
    return list(strict_json(resp.content)["data"])


def message_body(payload: bytes) -> bytes:
    return b'{"eventType": "user.created", "payload": ' + payload + b"}"


def assert_too_deep(resp: httpx.Response) -> None:
    body = assert_error(resp, 400, "bad_request")
    assert f"nested deeper than {DEPTH} levels" in body["detail"], body


# nesting -----------------------------------------------------------------------------------------


# 100,000 levels is 200 kB of brackets, well inside the body limit: refused for its depth.
DEEP = [1000, 100_000]
# the default body limit, which 100,000 levels fit in
DEEP_LIMIT = pytest.mark.max_payload_bytes(settings.Settings().max_payload_bytes)


@DEEP_LIMIT
@pytest.mark.parametrize("levels", [DEPTH, 1500, *DEEP])
async def test_deeply_nested_payload_is_400_and_sends_nothing(
    client: httpx.AsyncClient, levels: int
) -> None:
    app = await create_app(client)
    payload = b'{"a": ' + nested(levels) + b"}"  # the body's own object makes it one deeper
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", content=message_body(payload), headers=JSON_HEADERS
    )
    assert_too_deep(resp)
    assert await strict_messages(client, app["id"]) == []


async def test_unclosed_nesting_is_400(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    body = message_body(b"[" * 3000)
    assert len(body) < MAX_PAYLOAD_BYTES
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", content=body, headers=JSON_HEADERS)
    assert_too_deep(resp)
    assert await strict_messages(client, app["id"]) == []


async def test_payload_at_the_depth_limit_is_kept_byte_for_byte(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    # body object (1) + payload object (1) + arrays = the limit exactly
    payload = b'{"a": ' + nested(DEPTH - 2) + b"}"
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", content=message_body(payload), headers=JSON_HEADERS
    )
    assert resp.status_code == 202, resp.text
    [msg] = await strict_messages(client, app["id"])
    assert json.dumps(msg["payload"], separators=(",", ":")).encode() == payload.replace(b" ", b"")


async def test_brackets_inside_strings_do_not_count(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    text = "[{" * 300 + '\\"[' * 100  # escaped quotes do not end the string
    body = {"eventType": "user.created", "payload": {"s": text, "t": ["]}" * 50]}}
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", json=body)
    assert resp.status_code == 202, resp.text
    [msg] = await strict_messages(client, app["id"])
    assert msg["payload"]["s"] == text


@DEEP_LIMIT
@pytest.mark.parametrize("levels", DEEP)
async def test_deep_event_type_schemas_are_400_on_create_update_and_patch(
    client: httpx.AsyncClient, levels: int
) -> None:
    deep = b'{"1": ' + nested(levels) + b"}"
    resp = await client.post(
        "/api/v1/event-type",
        content=b'{"name": "deep", "description": "d", "schemas": ' + deep + b"}",
        headers=JSON_HEADERS,
    )
    assert_too_deep(resp)
    assert await list_all(client, "/api/v1/event-type", include_archived="true") == []

    await create_event_type(client, "user.created")
    for method in ("PUT", "PATCH"):
        resp = await client.request(
            method,
            "/api/v1/event-type/user.created",
            content=b'{"description": "changed", "schemas": ' + deep + b"}",
            headers=JSON_HEADERS,
        )
        assert_too_deep(resp)
    got = (await client.get("/api/v1/event-type/user.created")).json()
    assert (got["description"], got["schemas"]) == ("user.created", None)


async def test_event_type_schemas_at_the_limit_round_trip(client: httpx.AsyncClient) -> None:
    schemas = b'{"1": ' + nested(DEPTH - 2) + b"}"  # body (1) + schemas (1) + arrays
    resp = await client.post(
        "/api/v1/event-type",
        content=b'{"name": "deep", "description": "d", "schemas": ' + schemas + b"}",
        headers=JSON_HEADERS,
    )
    assert resp.status_code == 201, resp.text
    got = await client.get("/api/v1/event-type/deep")
    assert got.status_code == 200
    assert strict_json(got.content)["schemas"] == json.loads(schemas)


@DEEP_LIMIT
@pytest.mark.parametrize("levels", DEEP)
@pytest.mark.parametrize("field", ["metadata", "headers", "unknownField", "eventTypes"])
async def test_deeply_nested_endpoint_body_is_400_and_creates_nothing(
    client: httpx.AsyncClient, field: str, levels: int
) -> None:
    app = await create_app(client)
    deep = nested(levels)
    body = b'{"url": "https://example.com/hook", "' + field.encode() + b'": ' + deep + b"}"
    resp = await client.post(
        f"/api/v1/app/{app['id']}/endpoint", content=body, headers=JSON_HEADERS
    )
    assert_too_deep(resp)
    assert await list_all(client, f"/api/v1/app/{app['id']}/endpoint") == []


@DEEP_LIMIT
@pytest.mark.parametrize("levels", DEEP)
async def test_deeply_nested_application_metadata_is_400(
    client: httpx.AsyncClient, levels: int
) -> None:
    body = b'{"name": "acme", "metadata": {"k": ' + nested(levels) + b"}}"
    assert_too_deep(await client.post("/api/v1/app", content=body, headers=JSON_HEADERS))
    assert await list_all(client, "/api/v1/app") == []


# text that is not UTF-8, lone surrogates ---------------------------------------------------------

NOT_UTF8 = {
    "invalid byte": b"\xff",
    "overlong slash": b"\xc0\xaf",
    "overlong nul": b"\xc0\x80",
    "overlong three bytes": b"\xe0\x80\xaf",
    "encoded surrogate": b"\xed\xa0\x80",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
    "lone continuation": b"\x80",
    "truncated sequence": b"\xe2\x82",
}


@pytest.mark.parametrize("raw", NOT_UTF8.values(), ids=NOT_UTF8.keys())
@pytest.mark.parametrize("where", ["value", "key", "unknown field"])
async def test_payload_that_is_not_utf8_is_400_and_stores_nothing(
    client: httpx.AsyncClient, raw: bytes, where: str
) -> None:
    app = await create_app(client)
    if where == "value":
        body = message_body(b'{"name": "a' + raw + b'b"}')
    elif where == "key":
        body = message_body(b'{"a' + raw + b'": 1}')
    else:  # a field msgspec skips without reading it
        body = b'{"eventType": "a", "payload": {}, "note": "' + raw + b'"}'
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", content=body, headers=JSON_HEADERS)
    detail = assert_error(resp, 400, "bad_request")["detail"]
    assert "invalid UTF-8 at byte" in detail, detail
    assert await strict_messages(client, app["id"]) == []


LONE_SURROGATES = {
    "high alone": rb'"\ud800"',
    "high upper case": rb'"\uD83D"',
    "high then text": rb'"\ud800abc"',
    "low alone": rb'"\udc00"',
    "high then non-surrogate": rb'"\ud800\u0041"',
    "two highs": rb'"\ud800\ud800"',
    "reversed pair": rb'"\ude00\ud83d"',
}


@pytest.mark.parametrize("escaped", LONE_SURROGATES.values(), ids=LONE_SURROGATES.keys())
@pytest.mark.parametrize("where", ["payload value", "payload key", "unknown field"])
async def test_lone_surrogate_escape_is_400_and_stores_nothing(
    client: httpx.AsyncClient, escaped: bytes, where: str
) -> None:
    app = await create_app(client)
    if where == "payload value":
        body = message_body(b'{"name": ' + escaped + b"}")
    elif where == "payload key":
        body = message_body(b"{" + escaped + b": 1}")
    else:
        body = b'{"eventType": "a", "payload": {}, "note": ' + escaped + b"}"
    resp = await client.post(f"/api/v1/app/{app['id']}/msg", content=body, headers=JSON_HEADERS)
    detail = assert_error(resp, 400, "bad_request")["detail"]
    assert "lone UTF-16 surrogate escape at byte" in detail, detail
    assert await strict_messages(client, app["id"]) == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/app", b'{"name": "a\xffb"}'),
        ("/api/v1/app", b'{"name": "\\ud800"}'),
        ("/api/v1/event-type", b'{"name": "x", "description": "\xc0\xaf"}'),
        (
            "/api/v1/event-type",
            b'{"name": "x", "description": "d", "schemas": {"\xed\xa0\x80": 1}}',
        ),
    ],
)
async def test_other_bodies_that_are_not_utf8_are_400(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    assert_error(await client.post(path, content=body, headers=JSON_HEADERS), 400, "bad_request")
    assert await list_all(client, path, include_archived="true") == []


async def test_valid_unicode_payload_is_delivered_as_sent(client: httpx.AsyncClient) -> None:
    app = await create_app(client)
    payload = '{"name": "Adá Lövelace 😀", "pair": "\\ud83d\\ude00", "cjk": "漢字"}'.encode()
    resp = await client.post(
        f"/api/v1/app/{app['id']}/msg", content=message_body(payload), headers=JSON_HEADERS
    )
    assert resp.status_code == 202, resp.text
    assert payload in resp.content  # the exact bytes received, escapes and all
    [msg] = await strict_messages(client, app["id"])
    assert msg["payload"] == {"name": "Adá Lövelace 😀", "pair": "😀", "cjk": "漢字"}


# integer query parameters ------------------------------------------------------------------------

INT_QUERY = ("limit", "status", "status_code_class")  # every integer query parameter of Svix's
BAD_INTEGERS = {
    "superscript three": "\u00b3",
    "arabic-indic three": "\u0663",
    "full-width three": "\uff13",
    "devanagari one": "\u0967",
    "huge": "9" * 5000,  # past int()'s 4,300-digit limit
    "beyond int64": str(2**64),
    "ten digits": "1000000000",
    "negative": "-1",
    "plus sign": "+1",
    "leading space": " 1",
    "underscore": "1_0",
    "exponent": "1e2",
    "hex": "0x1",
    "empty": "",
}


async def _list_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(path, parameter) for every list route and each integer parameter it reads."""
    app = await create_app(client)
    ep = await create_endpoint(client, app["id"])
    msg = await send_message(client, app["id"])
    found = []
    for op in http.OPERATIONS:
        if op.method != "GET":
            continue
        path = (
            op.path.replace("{app_id}", app["id"])
            .replace("{endpoint_id}", ep["id"])
            .replace("{msg_id}", msg["id"])
        )
        found.extend((path, name) for name in op.query if name in INT_QUERY)
    return found


async def test_every_list_route_is_covered(client: httpx.AsyncClient) -> None:
    routes = await _list_routes(client)
    assert {name for _, name in routes} == set(INT_QUERY)
    assert len({path for path, _ in routes}) >= 7, routes  # apps, endpoints, msgs, ...
    for path, _ in routes:  # the fixtures resolve: a refusal below is the parameter's doing
        assert (await client.get(path)).status_code == 200, path


@pytest.mark.parametrize("value", BAD_INTEGERS.values(), ids=BAD_INTEGERS.keys())
async def test_bad_integer_in_every_query_parameter_is_422(
    client: httpx.AsyncClient, value: str
) -> None:
    for path, name in await _list_routes(client):
        resp = await client.get(path, params={name: value})
        body = assert_invalid(resp, ["query", name])
        assert name in body["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", "1"), ("limit", "250"), ("status", "0"), ("status_code_class", "500")],
)
async def test_good_integers_are_still_read(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    for path, param in await _list_routes(client):
        if param == name:
            resp = await client.get(path, params={name: value})
            assert resp.status_code == 200, (path, resp.text)


async def test_non_ascii_limit_in_a_raw_query_string(client: httpx.AsyncClient) -> None:
    """The issue's own example, percent-encoded by hand."""
    assert_invalid(await client.get("/api/v1/app?limit=%C2%B3"), ["query", "limit"])
    assert_invalid(await client.get("/api/v1/app?limit=%FF"), ["query", "limit"])


# fuzz --------------------------------------------------------------------------------------------

FUZZ_SECONDS = 2.0
FUZZ_MAX_CASES = 3000
STRINGS = [
    "",
    "a",
    "user.created",
    "https://example.com/hook",
    "http://127.0.0.1/x",
    "whsec_" + "A" * 32,
    "漢字",
    "😀",
    "\u0000",
    "\u2028",
    "\ud800",
    "x" * 300,
    "[{",
    '"\\',
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**400, 65535, 65536])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e308, 1e-308])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(8)))
    if kind == 5:
        return json.loads(nested(rng.randrange(DEPTH - 8, DEPTH + 8)))
    if kind in (6, 7):
        return {rng.choice(FIELDS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


FIELDS = [
    "name",
    "uid",
    "url",
    "description",
    "eventType",
    "payload",
    "eventId",
    "channels",
    "eventTypes",
    "filterTypes",
    "metadata",
    "headers",
    "throttleRate",
    "rateLimit",
    "secret",
    "schemas",
    "archived",
    "featureFlag",
    "payloadRetentionPeriod",
    "key",
    "gracePeriodSeconds",
    "since",
]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    """Byte-level damage: flips, inserted bytes that are not UTF-8, truncation, duplication."""
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice(
                [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\\ud800", b"[" * 200, b"[" * 1100]
            )
        elif op == 2:
            del data[at:]
        else:
            data[at:at] = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


async def test_seeded_fuzz_of_post_bodies_never_5xx(client: httpx.AsyncClient) -> None:
    app = await create_app(client, "fuzz")
    ep = await create_endpoint(client, app["id"])
    await create_event_type(client, "user.created")
    routes = [
        ("POST", "/api/v1/app"),
        ("POST", f"/api/v1/app/{app['id']}/msg"),
        ("POST", f"/api/v1/app/{app['id']}/endpoint"),
        ("PATCH", f"/api/v1/app/{app['id']}/endpoint/{ep['id']}"),
        ("POST", "/api/v1/event-type"),
        ("PATCH", "/api/v1/event-type/user.created"),
    ]
    valid = {
        "/api/v1/app": {"name": "n"},
        "msg": {"eventType": "user.created", "payload": {"n": 1}},
        "endpoint": {"url": "https://example.com/hook"},
        "event-type": {"name": "t", "description": "d"},
    }
    rng = random.Random(20240611)
    deadline = time.monotonic() + FUZZ_SECONDS
    cases = 0
    while time.monotonic() < deadline and cases < FUZZ_MAX_CASES:
        cases += 1
        method, path = rng.choice(routes)
        base = dict(next(v for k, v in valid.items() if k in path))
        for _ in range(rng.randrange(4)):
            base[rng.choice(FIELDS)] = _value(rng)
        raw = json.dumps(base, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if rng.random() < 0.4:
            raw = _mutate(rng, raw)
        resp = await client.request(method, path, content=raw, headers=JSON_HEADERS)
        assert resp.status_code < 500, (method, path, raw[:300], resp.text)
        if resp.status_code >= 400:
            assert set(resp.json()) == {"code", "detail"}, (method, path, raw[:300])
    assert cases > 100, cases
    strict_messages_ = await strict_messages(client, app["id"])  # still readable, strictly
    assert all(isinstance(m["payload"], dict) for m in strict_messages_)
    for listed in ("/api/v1/app", "/api/v1/event-type", f"/api/v1/app/{app['id']}/endpoint"):
        strict_json((await client.get(listed, params={"limit": "250"})).content)
