"""An endpoint URL whose host is a non-public literal is refused at create, PUT and PATCH (422),
unless ``allowed_subnets`` covers it (201). Names are left to connect time: DNS can change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline import app, egress, settings

from .conftest import ADMIN_TOKEN, assert_invalid, create_app, create_endpoint, list_all

ALLOW_ALL = "0.0.0.0/0, ::/0"  # covers every network of the table below
KEPT = "https://example.com/kept"
HINT = (
    "; hookline does not deliver to non-public addresses (allow it with HOOKLINE_ALLOWED_SUBNETS)"
)

# url -> the words the 422 message must contain
REFUSED: list[tuple[str, str]] = [
    # dotted IPv4
    ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://192.168.1.1/", "192.168.1.1 is a private address"),
    ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    # cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://100.100.100.200/", "100.100.100.200 is a cloud metadata address"),
    ("https://168.63.129.16/", "168.63.129.16 is a cloud metadata address"),
    # legacy numeric IPv4 forms the C library maps onto an address
    ("http://127.1/", "127.1 is 127.0.0.1, a loopback address"),
    ("http://0x7f.0.0.1/", "0x7f.0.0.1 is 127.0.0.1, a loopback address"),
    ("http://2130706433/", "2130706433 is 127.0.0.1, a loopback address"),
    ("http://0177.0.0.1/", "0177.0.0.1 is 127.0.0.1, a loopback address"),
    ("http://0/", "0 is 0.0.0.0, an unspecified address"),
    # IPv6, including forms that embed an IPv4 address
    ("http://[::1]/", "[::1] is a loopback address"),
    ("http://[fe80::1]/", "[fe80::1] is a link-local address"),
    ("http://[fd00::1]/", "[fd00::1] is a private address"),
    ("http://[::ffff:127.0.0.1]/", "is a loopback address"),
    ("http://[::ffff:7f00:1]/", "[::ffff:7f00:1] is a loopback address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "[64:ff9b::a9fe:a9fe] is a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "[fd00:ec2::254] is a cloud metadata address"),
    ("http://[::]/", "[::] is an unspecified address"),
    ("http://[fe80::1%25eth0]/", "a link-local address"),
    # other spellings of the same hosts
    ("http://127.0.0.1./", "127.0.0.1. is 127.0.0.1, a loopback address"),
    ("http://127.0.0.1../", "is 127.0.0.1, a loopback address"),
    ("HTTP://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://0X7F.0.0.1/", "is 127.0.0.1, a loopback address"),
    ("http://[FD00::1]/", "[fd00::1] is a private address"),
    ("http://user@127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://user:pw@10.0.0.1:8080/x", "10.0.0.1 is a private address"),
    ("http://a@b@192.168.0.1/", "192.168.0.1 is a private address"),
    ("https://127.0.0.1:8443/", "127.0.0.1 is a loopback address"),
    ("http://[::1]:8080/", "[::1] is a loopback address"),
    ("http://%31%32%37.0.0.1/", "is 127.0.0.1, a loopback address"),
    # RFC 6761: localhost and *.localhost always resolve to loopback
    ("http://localhost/", "localhost is a loopback name"),
    ("http://LOCALHOST.:3000/", "localhost. is a loopback name"),
    ("http://api.localhost/", "api.localhost is a loopback name"),
    ("http://%6cocalhost/", "is a loopback name"),
]
# Not URIs as RFC 3986 spells them, whatever their host: refused before the host is judged, so no
# HTTP library's own repair (dropping a tab, folding full-width digits) decides where they go.
NOT_URIS = [
    "http://\uff11\uff12\uff17.0.0.1/",  # full-width digits, which IDNA folds to 127
    "http://127.0.0.1\t/",  # a tab, which browsers drop
    "http://a\\@127.0.0.1/",  # a backslash, which browsers read as a slash
    "https://exa mple.com/",
    "https://b\u00fccher.example/",  # IDN: give it as punycode (xn--bcher-kva.example)
    "https://example.com/caf\u00e9",  # percent-encode it: /caf%C3%A9
    "https://example.com/%zz",
    "https://\x0f\u00a9h/",
    "https://example.com/\n",
]
ACCEPTED = [
    "http://93.184.216.34/",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    "http://[::ffff:93.184.216.34]/",
    "https://example.com/hook",
    "https://localhost.example.com/hook",  # a name like any other, not *.localhost
    "http://metadata.google.internal/",  # names are checked when a delivery connects
    "http://127.0.0.1.nip.io/",  # likewise: a name, whatever it resolves to
]
URLS = [url for url, _ in REFUSED]


@asynccontextmanager
async def _client(tmp_path: Path, allowed: str = "") -> AsyncIterator[httpx.AsyncClient]:
    s = settings.Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        admin_token=ADMIN_TOKEN,
        allowed_subnets=egress.parse_allowed(allowed),
    )
    async with app.opened(s) as hl:
        assert await app.bootstrap_token(hl) is None  # seeds ADMIN_TOKEN, as conftest's hl does
        transport = httpx.ASGITransport(app=app.asgi(hl))
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=headers
        ) as c:
            yield c


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Default settings: no allowed subnets."""
    async with _client(tmp_path) as c:
        yield c


@pytest.fixture
async def allowing(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """``allowed_subnets`` covering every IPv4 and IPv6 address."""
    async with _client(tmp_path, ALLOW_ALL) as c:
        yield c


async def _endpoints(client: httpx.AsyncClient, app_id: str) -> list[dict[str, Any]]:
    return await list_all(client, f"/api/v1/app/{app_id}/endpoint")


@pytest.mark.parametrize(("url", "words"), REFUSED)
async def test_create_refuses_a_non_public_literal(
    client: httpx.AsyncClient, url: str, words: str
) -> None:
    a = await create_app(client)
    resp = await client.post(f"/api/v1/app/{a['id']}/endpoint", json={"url": url})
    msg = assert_invalid(resp, ["body", "url"])["detail"][0]["msg"]
    assert msg.startswith("URL host ") and msg.endswith(HINT), msg
    assert words in msg, msg
    assert await _endpoints(client, a["id"]) == []


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(("url", "words"), REFUSED)
async def test_update_refuses_a_non_public_literal_and_keeps_the_url(
    client: httpx.AsyncClient, method: str, url: str, words: str
) -> None:
    a = await create_app(client)
    ep = await create_endpoint(client, a["id"], url=KEPT)
    path = f"/api/v1/app/{a['id']}/endpoint/{ep['id']}"
    resp = await client.request(method, path, json={"url": url})
    assert words in assert_invalid(resp, ["body", "url"])["detail"][0]["msg"]
    assert (await client.get(path)).json()["url"] == KEPT


@pytest.mark.parametrize("url", URLS)
async def test_allowed_subnets_let_every_spelling_through(
    allowing: httpx.AsyncClient, url: str
) -> None:
    a = await create_app(allowing)
    created = await create_endpoint(allowing, a["id"], url=KEPT)
    resp = await allowing.post(f"/api/v1/app/{a['id']}/endpoint", json={"url": url})
    assert resp.status_code == 201, resp.text
    assert resp.json()["url"] == url  # stored as given, not normalised
    path = f"/api/v1/app/{a['id']}/endpoint/{created['id']}"
    for method in ("PUT", "PATCH"):
        resp = await allowing.request(method, path, json={"url": url})
        assert resp.status_code == 200, resp.text
        assert resp.json()["url"] == url


@pytest.mark.parametrize("url", NOT_URIS)
async def test_a_url_that_is_not_an_rfc_3986_uri_is_refused_even_when_allowed(
    allowing: httpx.AsyncClient, url: str
) -> None:
    a = await create_app(allowing)
    ep = await create_endpoint(allowing, a["id"], url=KEPT)
    resp = await allowing.post(f"/api/v1/app/{a['id']}/endpoint", json={"url": url})
    assert "RFC 3986" in assert_invalid(resp, ["body", "url"])["detail"][0]["msg"]
    path = f"/api/v1/app/{a['id']}/endpoint/{ep['id']}"
    for method in ("PUT", "PATCH"):
        resp = await allowing.request(method, path, json={"url": url})
        assert "RFC 3986" in assert_invalid(resp, ["body", "url"])["detail"][0]["msg"]
    assert (await allowing.get(path)).json()["url"] == KEPT


@pytest.mark.parametrize("url", ACCEPTED)
async def test_public_literals_and_names_are_accepted(client: httpx.AsyncClient, url: str) -> None:
    a = await create_app(client)
    ep = await create_endpoint(client, a["id"], url=url)
    assert ep["url"] == url
    path = f"/api/v1/app/{a['id']}/endpoint/{ep['id']}"
    for method in ("PUT", "PATCH"):
        resp = await client.request(method, path, json={"url": url})
        assert resp.status_code == 200, resp.text


async def test_the_message_names_host_reason_and_setting(client: httpx.AsyncClient) -> None:
    a = await create_app(client)
    resp = await client.post(
        f"/api/v1/app/{a['id']}/endpoint", json={"url": "http://127.0.0.1:8080/hook"}
    )
    assert resp.json() == {
        "code": "validation",
        "detail": [
            {
                "loc": ["body", "url"],
                "msg": "URL host 127.0.0.1 is a loopback address; hookline does not deliver to "
                "non-public addresses (allow it with HOOKLINE_ALLOWED_SUBNETS)",
                "type": "value_error",
            }
        ],
    }


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("http://127.0.0.1/", 201),
        ("http://127.8.9.10/", 201),
        ("http://[::ffff:127.0.0.1]/", 201),  # judged by its embedded IPv4 address
        ("http://localhost/", 201),  # loopback is allowed, so the name is too
        ("http://[::1]/", 422),  # IPv6 loopback is another network
        ("http://10.0.0.1/", 422),
        ("http://169.254.169.254/", 422),
    ],
)
async def test_an_allow_list_exempts_only_its_networks(
    tmp_path: Path, url: str, status: int
) -> None:
    async with _client(tmp_path, "127.0.0.0/8") as c:
        a = await create_app(c)
        resp = await c.post(f"/api/v1/app/{a['id']}/endpoint", json={"url": url})
        assert resp.status_code == status, resp.text


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/", "http://[::1/", "http://[::1]./", "http://[::1]x/"]
)
async def test_a_url_delivery_could_not_parse_is_422_not_500(
    client: httpx.AsyncClient, url: str
) -> None:
    a = await create_app(client)
    resp = await client.post(f"/api/v1/app/{a['id']}/endpoint", json={"url": url})
    assert assert_invalid(resp, ["body", "url"])["detail"][0]["msg"].startswith("Invalid URL")
    assert await _endpoints(client, a["id"]) == []
