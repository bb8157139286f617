from __future__ import annotations

import asyncio
import errno
import ipaddress
import pickle
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from hookline import delivery
from hookline.egress import EgressPolicy, EgressRefused, GuardedResolver, parse_allowed

DEFAULT = EgressPolicy()


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        # public: allowed
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("172.32.0.1", None),  # just past 172.16/12
        ("100.128.0.1", None),  # just past 100.64/10
        ("2606:4700::1", None),
        ("2001:4860:4860::8888", None),
        # private
        ("10.0.0.5", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        # loopback
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        # link-local
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"),
        # multicast, reserved, broadcast, unspecified
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("100::1", "reserved"),
        ("4000::1", "reserved"),  # outside global unicast 2000::/3
        ("2001::1", "reserved"),  # Teredo
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - classified, not bound
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        # cloud metadata, named explicitly
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        # documentation and benchmarking
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.9", "documentation"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.255", "benchmarking"),
        ("2001:2::1", "benchmarking"),
        # IPv6 forms judged by their embedded IPv4 address
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:8.8.8.8", None),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("::8.8.8.8", None),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("64:ff9b::808:808", None),
        ("64:ff9b:1::1", "private"),  # local-use NAT64
        ("2002:7f00:1::", "loopback"),  # 6to4
        ("2002:a00:1::1", "private"),
        ("2002:808:808::1", None),
    ],
)
def test_classify(address: str, verdict: str | None) -> None:
    assert DEFAULT.classify(ipaddress.ip_address(address)) == verdict


def test_check_raises_a_readable_oserror() -> None:
    with pytest.raises(EgressRefused) as caught:
        DEFAULT.check(ipaddress.ip_address("10.0.0.5"))
    assert str(caught.value) == "egress refused: 10.0.0.5 is a private address"
    assert isinstance(caught.value, OSError)
    assert caught.value.errno == errno.EACCES
    assert caught.value.reason == "private"


def test_check_uses_the_right_article() -> None:
    with pytest.raises(EgressRefused, match=r"^egress refused: :: is an unspecified address$"):
        DEFAULT.check(ipaddress.ip_address("::"))


def test_check_allows_public_addresses() -> None:
    DEFAULT.check(ipaddress.ip_address("8.8.8.8"))


def test_egress_refused_survives_pickling() -> None:
    original = EgressRefused("egress refused: x", host="h", address="10.0.0.1", reason="private")
    copy = pickle.loads(pickle.dumps(original))  # noqa: S301 - our own bytes
    assert (str(copy), copy.host, copy.address, copy.reason, copy.errno) == (
        "egress refused: x",
        "h",
        "10.0.0.1",
        "private",
        errno.EACCES,
    )


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("127.0.0.1", None),
        ("127.8.9.10", None),
        ("::ffff:127.0.0.1", None),  # embedded IPv4 is inside the allow-list
        ("64:ff9b::7f00:1", None),
        ("::1", "loopback"),  # IPv6 loopback is a different network
        ("10.0.0.1", "private"),
        ("169.254.169.254", "cloud metadata"),
    ],
)
def test_allow_list_exempts_only_its_networks(address: str, verdict: str | None) -> None:
    policy = EgressPolicy(parse_allowed("127.0.0.0/8"))
    assert policy.classify(ipaddress.ip_address(address)) == verdict


def test_allow_list_can_exempt_ipv6_and_mixed_entries() -> None:
    policy = EgressPolicy(parse_allowed(" 10.0.0.0/8 , fd00::/8,::1"))
    for allowed in ("10.1.2.3", "fd00:ec2::254", "::1", "::ffff:10.0.0.1"):
        assert policy.classify(ipaddress.ip_address(allowed)) is None
    assert policy.classify(ipaddress.ip_address("192.168.0.1")) == "private"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("  ", ()),
        ("127.0.0.0/8", (ipaddress.ip_network("127.0.0.0/8"),)),
        ("127.0.0.1", (ipaddress.ip_network("127.0.0.1/32"),)),
        (
            "10.0.0.0/8, fd00::/8",
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")),
        ),
    ],
)
def test_parse_allowed(text: str, expected: tuple[object, ...]) -> None:
    assert parse_allowed(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "'localhost'"),
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "'10.0.0.0/33'"),
        ("10.0.0.0/8,,fd00::/8", "''"),
        ("10.0.0.0/8,", "''"),
    ],
)
def test_parse_allowed_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"invalid egress allow-list entry.*{message}"):
        parse_allowed(text)


@pytest.mark.parametrize(
    ("host", "refused_as"),
    [
        ("example.com", None),  # names are the resolver's job
        ("localhost", None),
        ("8.8.8.8", None),
        ("[2606:4700::1]", None),
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("::1", "loopback"),
        ("[::ffff:169.254.169.254]", "cloud metadata"),
        ("10.0.0.5", "private"),
        # legacy numeric forms the C library maps onto an address
        ("127.1", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f.0.0.1", "loopback"),
        ("0", "unspecified"),
        # spellings yarl leaves as they are
        ("127.0.0.1.", "loopback"),  # fully qualified
        ("127.0.0.1..", "loopback"),  # aiohttp connects this as "127.0.0.1."
        ("%31%32%37.0.0.1", "loopback"),  # percent-encoded
        ("0X7F.0.0.1", "loopback"),
        ("FE80::1", "link-local"),
        ("fe80::1%25eth0", "link-local"),  # yarl's raw_host keeps the zone id encoded
        ("example.com.", None),
    ],
)
def test_check_host_literal(host: str, refused_as: str | None) -> None:
    if refused_as is None:
        DEFAULT.check_host_literal(host)
        return
    with pytest.raises(EgressRefused, match=r"^egress refused: ") as caught:
        DEFAULT.check_host_literal(host)
    assert caught.value.reason == refused_as
    assert caught.value.host == host


def test_check_host_literal_honours_the_allow_list() -> None:
    EgressPolicy(parse_allowed("127.0.0.0/8")).check_host_literal("127.0.0.1")


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://example.com/hook", None),
        ("http://93.184.216.34/", None),
        ("http://[2606:4700::1]:8443/", None),
        ("http://localhost.example.com/", None),
        ("http://127.0.0.1/", "URL host 127.0.0.1 is a loopback address"),
        ("http://u:p@10.0.0.1:81/x", "URL host 10.0.0.1 is a private address"),
        ("http://[::1]/", "URL host [::1] is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "URL host [::ffff:7f00:1] is a loopback address"),
        ("http://0x7f.0.0.1/", "URL host 0x7f.0.0.1 is 127.0.0.1, a loopback address"),
        ("http://127.0.0.1./", "URL host 127.0.0.1. is 127.0.0.1, a loopback address"),
        ("http://[::]/", "URL host [::] is an unspecified address"),
        ("http://169.254.169.254/", "URL host 169.254.169.254 is a cloud metadata address"),
        (
            "http://Api.LocalHost./",
            "URL host api.localhost. is a loopback name (RFC 6761: it always resolves to loopback)",
        ),
    ],
)
def test_refusal_for_url(url: str, refusal: str | None) -> None:
    assert DEFAULT.refusal_for_url(url) == refusal


@pytest.mark.parametrize(
    ("allowed", "refused"),
    [("127.0.0.0/8", False), ("::1", False), ("10.0.0.0/8", True), ("", True)],
)
def test_localhost_is_refused_unless_loopback_is_allowed(allowed: str, refused: bool) -> None:
    policy = EgressPolicy(parse_allowed(allowed))
    assert (policy.refusal_for_url("http://localhost:3000/") is not None) is refused


def test_refusal_for_url_raises_for_what_yarl_cannot_parse() -> None:
    with pytest.raises(ValueError, match="Port out of range"):
        DEFAULT.refusal_for_url("http://127.0.0.1:99999/")


class _NoNetwork:
    """Stands in for the aiohttp session: every POST fails as a refused connection."""

    def __init__(self) -> None:
        self.posted: list[str] = []

    def post(self, url: object, **_: object) -> None:
        self.posted.append(str(url))
        raise ConnectionRefusedError("no network in unit tests")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://user@10.0.0.1:8080/",
        "http://127.1/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0X7F.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1%25eth0]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://\uff11\uff12\uff17.0.0.1/",
        "http://93.184.216.34/",
        "https://example.com/",
        "http://127.0.0.1.nip.io/",
    ],
)
def test_creation_and_delivery_judge_a_literal_host_alike(url: str) -> None:
    """What the API refuses as a literal, ``delivery.send`` refuses before connecting."""
    session = _NoNetwork()
    request = delivery.Request(url=url, headers={}, body=b"{}")
    response = asyncio.run(
        delivery.send(session, request, timeout_seconds=1, policy=DEFAULT)  # type: ignore[arg-type]
    )
    refused_at_send = response.error is not None and response.error.startswith("egress refused")
    assert refused_at_send is (DEFAULT.refusal_for_url(url) is not None)
    assert (session.posted == []) is refused_at_send


class FakeResolver(AbstractResolver):
    """Answers every lookup with fixed addresses and records the calls."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.calls: list[tuple[str, int, int]] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append((host, port, family))
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


def test_resolver_returns_only_allowed_addresses() -> None:
    inner = FakeResolver(
        ["10.0.0.1", "93.184.215.14", "::1", "2606:2800:21f:cb07::1", "169.254.169.254"]
    )
    resolver = GuardedResolver(DEFAULT, inner=inner)
    results = asyncio.run(resolver.resolve("hooks.example", 443, socket.AF_UNSPEC))
    assert [r["host"] for r in results] == ["93.184.215.14", "2606:2800:21f:cb07::1"]
    assert all(r["port"] == 443 and r["hostname"] == "hooks.example" for r in results)
    assert inner.calls == [("hooks.example", 443, socket.AF_UNSPEC)]


def test_resolver_refuses_a_host_with_only_refused_addresses() -> None:
    inner = FakeResolver(["10.0.0.1", "169.254.169.254", "10.0.0.1"])
    resolver = GuardedResolver(DEFAULT, inner=inner)
    with pytest.raises(EgressRefused) as caught:
        asyncio.run(resolver.resolve("rebind.example", 80))
    assert str(caught.value) == (
        "egress refused: rebind.example resolves only to refused addresses: "
        "10.0.0.1 (private), 169.254.169.254 (cloud metadata)"
    )
    assert caught.value.host == "rebind.example"


def test_resolver_honours_the_allow_list() -> None:
    resolver = GuardedResolver(
        EgressPolicy(parse_allowed("10.0.0.0/8")), inner=FakeResolver(["10.0.0.1", "::1"])
    )
    results = asyncio.run(resolver.resolve("internal.example", 80))
    assert [r["host"] for r in results] == ["10.0.0.1"]


def test_resolver_reports_an_empty_answer_as_a_lookup_failure() -> None:
    resolver = GuardedResolver(DEFAULT, inner=FakeResolver([]))
    with pytest.raises(socket.gaierror, match="no addresses"):
        asyncio.run(resolver.resolve("empty.example", 80))


def test_resolver_leaves_an_injected_inner_resolver_open() -> None:
    inner = FakeResolver([])
    asyncio.run(GuardedResolver(DEFAULT, inner=inner).close())
    assert not inner.closed


async def _post_via_guard(allowed: str) -> int:
    app = web.Application()

    async def accept(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_post("/", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(EgressPolicy(parse_allowed(allowed)))
        )
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(f"http://localhost:{port}/", data=b"{}") as response,
        ):
            return response.status
    finally:
        await runner.cleanup()


def test_real_session_is_refused_then_allowed_by_the_allow_list() -> None:
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        asyncio.run(_post_via_guard(""))
    # What aiohttp surfaces: ClientConnectorDNSError wrapping our EgressRefused.
    assert "egress refused: localhost resolves only to refused addresses" in str(caught.value)
    assert isinstance(caught.value.os_error, EgressRefused)

    assert asyncio.run(_post_via_guard("127.0.0.0/8")) == 204
