"""Egress guard: keep webhook deliveries away from internal networks (SSRF).

Endpoint URLs are chosen by API users, so without a guard a URL such as
``http://169.254.169.254/`` would turn hookline into a proxy into its own
network. The guard works at two points:

* ``GuardedResolver`` is given to ``aiohttp.TCPConnector(resolver=...)``. It
  resolves the host, drops every refused address and returns only the
  allowed ones, so aiohttp connects to exactly the addresses that were
  checked -- there is no second lookup a DNS-rebinding attacker could win.
  When nothing is left it raises ``EgressRefused``; aiohttp wraps that in
  ``aiohttp.ClientConnectorDNSError`` (aiohttp >= 3.11; a plain
  ``ClientConnectorError`` before, both ``OSError``) whose ``os_error`` is the
  ``EgressRefused`` and whose text is
  ``"Cannot connect to host <host>:<port> ssl:<ssl> [egress refused: ...]"``.
* aiohttp never calls the resolver for IP-literal hosts, so the delivery code
  must call ``EgressPolicy.check_host_literal(url.raw_host)`` before sending.

The API also refuses, when an endpoint is created or changed, a URL whose host
is a refused literal (``EgressPolicy.refusal_for_url``), so the mistake is
reported to whoever made it rather than on every delivery. It judges the host
exactly as delivery does; names are left to connect time, as DNS can change.

Redirects must not be followed and no HTTP proxy may be configured: with a
proxy the resolver only ever sees the proxy's name, never the target's.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeAlias

import yarl
from aiohttp import DefaultResolver
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "GuardedResolver",
    "IPAddress",
    "IPNetwork",
    "parse_allowed",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network


def _v4(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def _v6(cidr: str) -> IPv6Network:
    return IPv6Network(cidr)


# Instance-metadata endpoints. Most already fall in a refused range; they are
# named so that the refusal says what was really being reached. Azure's
# WireServer (168.63.129.16) is a public address and is only refused here.
_CLOUD_METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
    )
)

# First match wins, so more specific networks come before the ones they sit in.
_V4_RULES: tuple[tuple[IPv4Network, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified"),  # Linux connects 0.0.0.0 to localhost
    (_v4("10.0.0.0/8"), "private"),
    (_v4("100.64.0.0/10"), "carrier-grade NAT"),
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("169.254.0.0/16"), "link-local"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_v4("192.0.2.0/24"), "documentation"),
    (_v4("192.88.99.0/24"), "reserved"),  # deprecated 6to4 relay anycast
    (_v4("192.168.0.0/16"), "private"),
    (_v4("198.18.0.0/15"), "benchmarking"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("255.255.255.255/32"), "broadcast"),
    (_v4("240.0.0.0/4"), "reserved"),
)

_V6_RULES: tuple[tuple[IPv6Network, str], ...] = (
    (_v6("::/128"), "unspecified"),
    (_v6("::1/128"), "loopback"),
    (_v6("64:ff9b:1::/48"), "private"),  # local-use NAT64 (RFC 8215)
    (_v6("100::/64"), "reserved"),  # discard-only
    (_v6("2001:2::/48"), "benchmarking"),
    (_v6("2001::/23"), "reserved"),  # IETF protocol assignments, Teredo
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("3fff::/20"), "documentation"),
    (_v6("fc00::/7"), "private"),
    (_v6("fe80::/10"), "link-local"),
    (_v6("fec0::/10"), "site-local"),
    (_v6("ff00::/8"), "multicast"),
)
# Everything outside 2000::/3 not matched above is unallocated.
_V6_GLOBAL_UNICAST = _v6("2000::/3")
_NAT64 = _v6("64:ff9b::/96")
# What the name "localhost" reaches; RFC 6761 has it and every *.localhost resolve to loopback.
_LOOPBACK: tuple[IPAddress, ...] = (IPv4Address("127.0.0.1"), IPv6Address("::1"))


class EgressRefused(OSError):
    """A delivery target was refused by the egress policy.

    An ``OSError`` (errno ``EACCES``) so that aiohttp's connector reports it
    as a connection failure like any other, rather than crashing the request.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        address: str | None = None,
        reason: str | None = None,
    ) -> None:
        # strerror carries the message because aiohttp's ClientConnectorError
        # renders only the wrapped error's strerror.
        super().__init__(errno.EACCES, message)
        self.message = message
        self.host = host
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError's default would call __init__(errno, message) on unpickling.
        return (type(self), (self.message,), self.__dict__)


def _embedded_v4(ip: IPv6Address) -> IPv4Address | None:
    """Return the IPv4 address an IPv6 transition form reaches, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    # IPv4-compatible ::a.b.c.d (excluding :: and ::1) and well-known NAT64.
    if 1 < value < 2**32 or ip in _NAT64:
        return IPv4Address(value & 0xFFFFFFFF)
    return None


def _classify_v4(ip: IPv4Address) -> str | None:
    if ip in _CLOUD_METADATA:
        return "cloud metadata"
    for network, reason in _V4_RULES:
        if ip in network:
            return reason
    return None


def _classify_v6(ip: IPv6Address) -> str | None:
    if ip in _CLOUD_METADATA:
        return "cloud metadata"
    for network, reason in _V6_RULES:
        if ip in network:
            return reason
    embedded = _embedded_v4(ip)
    if embedded is not None:
        return _classify_v4(embedded)
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None


def _a(reason: str) -> str:
    return f"{'an' if reason[0] in 'aeiou' else 'a'} {reason}"


def _describe(ip: IPAddress, reason: str) -> str:
    return f"{ip} is {_a(reason)} address"


def parse_allowed(text: str) -> tuple[IPNetwork, ...]:
    """Parse a comma-separated list of CIDRs (``"10.0.0.0/8, fd00::/8"``).

    A bare address means just that address. Blank input yields ``()``.
    Raises ``ValueError`` naming the bad item, including CIDRs with host bits
    set (``10.0.0.1/8``), which usually hide a typo.
    """
    if not text.strip():
        return ()
    networks: list[IPNetwork] = []
    for item in text.split(","):
        item = item.strip()
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"invalid egress allow-list entry {item!r}: {exc}") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which addresses deliveries may connect to.

    Non-public addresses are refused unless they fall inside ``allowed``.
    """

    allowed: tuple[IPNetwork, ...] = ()

    def _is_allowed(self, ip: IPAddress) -> bool:
        embedded = _embedded_v4(ip) if isinstance(ip, IPv6Address) else None
        return any(ip in net or (embedded is not None and embedded in net) for net in self.allowed)

    def classify(self, ip: IPAddress) -> str | None:
        """Return None if ``ip`` may be contacted, else a short reason.

        IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
        6to4) are judged by that IPv4 address.
        """
        if self.allowed and self._is_allowed(ip):
            return None
        if isinstance(ip, IPv4Address):
            return _classify_v4(ip)
        return _classify_v6(ip)

    def check(self, ip: IPAddress) -> None:
        """Raise ``EgressRefused`` unless ``ip`` may be contacted."""
        reason = self.classify(ip)
        if reason is not None:
            raise EgressRefused(
                f"egress refused: {_describe(ip, reason)}", address=str(ip), reason=reason
            )

    def check_host_literal(self, host: str) -> None:
        """Check ``host`` if it is an IP literal; do nothing for a name.

        Needed because aiohttp bypasses the resolver for IP literals.
        Accepts bracketed IPv6 (``[::1]``) and, defensively, the legacy
        numeric IPv4 forms (``127.1``, ``0x7f.0.0.1``, ``2130706433``) that
        the C library would map onto an address.
        """
        verdict = _literal_verdict(self, host)
        if verdict is not None:
            ip, reason = verdict
            raise EgressRefused(
                f"egress refused: {_describe(ip, reason)}",
                host=host,
                address=str(ip),
                reason=reason,
            )

    def refusal_for_url(self, url: str | yarl.URL) -> str | None:
        """Say why the host of ``url`` alone rules out delivering there, or return None.

        The host is taken as delivery takes it (``yarl.URL(url).raw_host``)
        and judged by ``check_host_literal``, so a URL accepted here is not
        refused as a literal later. On top of that the names ``localhost``
        and ``*.localhost`` count as loopback unless the policy allows
        127.0.0.1 or ::1 (RFC 6761: they always resolve there). Other names
        give None: their addresses are checked at connect time, since DNS can
        change. Raises ``ValueError`` if yarl cannot parse ``url``.
        """
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        host = parsed.raw_host or ""
        shown = f"[{host}]" if ":" in host else host
        try:
            self.check_host_literal(host)  # keep in step with delivery.send
        except EgressRefused as exc:
            address, reason = exc.address or "", exc.reason or "refused"
            if host == address:
                return f"URL host {shown} is {_a(reason)} address"
            return f"URL host {shown} is {address}, {_a(reason)} address"
        name = _canonical_host(host)
        if (name == "localhost" or name.endswith(".localhost")) and all(
            self.classify(ip) is not None for ip in _LOOPBACK
        ):
            return f"URL host {shown} is a loopback name (RFC 6761: it always resolves to loopback)"
        return None


def _canonical_host(host: str) -> str:
    # The spellings of one host that yarl leaves apart: percent-encoding (which aiohttp would
    # hand undecoded to the resolver), IPv6 brackets and the trailing dots of a fully
    # qualified name (aiohttp keeps one). Undoing them can only make more hosts literals.
    host = urllib.parse.unquote(host).removeprefix("[").removesuffix("]")
    return host.rstrip(".").lower()


# Every delivery checks its URL's host; parsing it each time showed up in profiles. The
# verdict depends only on the (immutable) policy and the host text, so it is cached.
@functools.lru_cache(maxsize=4096)
def _literal_verdict(policy: EgressPolicy, host: str) -> tuple[IPAddress, str] | None:
    literal = _canonical_host(host)
    try:
        ip: IPAddress = ipaddress.ip_address(literal)
    except ValueError:
        legacy = _legacy_ipv4(literal)
        if legacy is None:
            return None
        ip = legacy
    reason = policy.classify(ip)
    return None if reason is None else (ip, reason)


_LEGACY_IPV4_CHARS = frozenset("0123456789abcdefABCDEFxX.")


def _legacy_ipv4(text: str) -> IPv4Address | None:
    # inet_aton is a pure parser (no lookup); the character check stops it
    # from accepting glibc's "address followed by junk" forms.
    if not text or not set(text) <= _LEGACY_IPV4_CHARS:
        return None
    try:
        return IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses the policy allows.

    ``inner`` does the actual lookup; by default aiohttp's
    ``DefaultResolver``, created on first use (it needs a running loop).
    An injected ``inner`` is not closed by ``close()``: its owner closes it.
    """

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and keep only the allowed addresses.

        Raises ``EgressRefused`` naming the host and every refused address
        when none is allowed.
        """
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        if not results:
            # aiohttp asserts on an empty list; fail the way a lookup does.
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolved to no addresses")
        allowed: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for result in results:
            try:
                reason = self._policy.classify(ipaddress.ip_address(result["host"]))
            except ValueError:
                reason = "unparseable"
            if reason is None:
                allowed.append(result)
            elif (result["host"], reason) not in refused:
                refused.append((result["host"], reason))
        if not allowed:
            details = ", ".join(f"{address} ({reason})" for address, reason in refused)
            raise EgressRefused(
                f"egress refused: {host} resolves only to refused addresses: {details}",
                host=host,
                address=refused[0][0],
                reason=refused[0][1],
            )
        return allowed

    async def close(self) -> None:
        """Close the inner resolver if this object created it."""
        if self._owns_inner and self._inner is not None:
            await self._inner.close()
