"""Typed settings from ``HOOKLINE_*`` environment variables and an optional TOML file.

Precedence: environment variable > TOML file > default. Keys in the TOML file are the
setting names in lower case (``database_url = "..."``); see ``config.example.toml``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hookline import circuit, egress, retry

DEFAULT_DATABASE_URL = "sqlite:///./.hookline/hookline.db"
DEFAULT_LISTEN = "127.0.0.1:8071"
KIB = 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
# "auto": a readable console on a TTY, JSON lines otherwise (a pipe, a file, the journal)
LOG_FORMATS = ("auto", "json", "console")
# PostgreSQL connections a process opens at most, by what it runs: the API's concurrent requests
# (group commit keeps ingest to a few transactions at a time), a worker's claims and outcome
# batches, and the short commands (migrate, token). A worker also holds one LISTEN connection.
POOL_SIZES = {"api": 10, "serve": 10, "worker": 4, "command": 2}


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    listen: str = DEFAULT_LISTEN
    admin_token: str | None = None
    retry_schedule: tuple[float, ...] = retry.DEFAULT_SCHEDULE  # seconds between attempts
    request_timeout: float = 15.0  # seconds, whole request including connect
    request_read_timeout: float = 10.0  # seconds an API request may take to arrive, body included
    allowed_subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_payload_bytes: int = 512 * KIB
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console
    access_log: bool = True  # one log event per API request
    metrics: bool = True  # Prometheus metrics: GET /metrics on the API, METRICS_LISTEN on workers
    metrics_listen: str | None = None  # host:port where ``hookline worker`` serves /metrics
    # per-endpoint labels on delivery metrics: one series per endpoint, so off by default
    metrics_endpoint_labels: bool = False
    # /health/ready answers 503 while the oldest due delivery has waited longer (seconds); 0: off,
    # e.g. for API-only processes that should stay in the load balancer while workers lag
    ready_max_backlog_age: float = 300.0
    # /health/ready calls a worker loop stuck after this many seconds without a round (see
    # worker.HEARTBEAT_STALE_SECONDS for why 30)
    ready_max_worker_stall: float = 30.0
    # Payloads and response bodies are deleted this long after creation (fractions allowed), unless
    # a message sets its own payloadRetentionPeriod. A payload whose deliveries are still pending
    # or being sent is kept until they end (docs/retention.md).
    payload_retention_days: float = 90.0
    # Whole messages (deliveries and attempts too) are deleted this long after creation, as
    # ``hookline prune --older-than`` does; unset: kept until pruned or their app is deleted.
    message_retention_days: float | None = None
    retention_interval: float = 60.0  # seconds between the cleaner's passes
    worker_concurrency: int = 512  # deliveries in flight per worker process
    endpoint_concurrency: int = 16  # deliveries in flight per endpoint per worker process
    circuit_failures: int = circuit.DEFAULT_FAILURES  # consecutive failures that open it
    circuit_cooldown: float = circuit.DEFAULT_COOLDOWN  # seconds before the first probe
    circuit_cooldown_max: float = circuit.DEFAULT_COOLDOWN_MAX  # seconds
    endpoint_disable_after: float = circuit.DEFAULT_DISABLE_AFTER  # seconds failing
    operational_webhook_url: str | None = None
    operational_webhook_secret: str | None = None  # a whsec_ key
    max_backlog: int = 1_000_000  # due deliveries; above it message creation answers 429
    shutdown_grace: float = 10.0  # seconds in-flight deliveries get on SIGTERM
    # PostgreSQL connections per process; 0: the role's default (POOL_SIZES). SQLite ignores it.
    database_pool_size: int = 0

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def lease_seconds(self) -> float:
        """How long a claimed task stays leased: longer than any request can take."""
        return self.request_timeout + 10.0


def parse_listen(value: str) -> str:
    """``host:port`` (IPv6 hosts in brackets), with a port in 1..65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8071)")
    return value


def parse_bool(value: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off, any case)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true or false)")


def parse_finite(value: str) -> float:
    """A finite number (``inf`` and ``nan`` are refused: they make no period or interval)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def parse_database_url(value: str) -> str:
    """``memory://``, ``sqlite:`` with a file path, or ``postgresql://`` (``postgres://``).

    The database itself is checked when opened: the file, or the server's answer.
    """
    if not value.startswith(("sqlite:", "memory:", "postgresql:", "postgres:")):
        raise ValueError(
            f"{value!r}: use sqlite:///path/to/file.db, postgresql://user@host/dbname or memory://"
        )
    # keep in step with store.sqlite.path_from_url: what is left is the file's path
    if value.startswith("sqlite:") and not value.removeprefix("sqlite:").lstrip("/"):
        raise ValueError(
            f"{value!r} names no database file: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    if value.startswith(("postgresql:", "postgres:")):
        parts = urllib.parse.urlsplit(value)
        try:
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            raise ValueError(f"{redacted_url(value)}: the port is not a number") from None
        if not value.split(":", 1)[1].startswith("//"):
            raise ValueError(f"{redacted_url(value)}: use postgresql://user@host:port/dbname")
    return value


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and error lines."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_PARSERS: dict[str, Any] = {
    "listen": parse_listen,
    "database_url": parse_database_url,
    "retry_schedule": retry.parse_schedule,
    "allowed_subnets": egress.parse_allowed,
    "request_timeout": float,
    "request_read_timeout": float,
    "max_payload_bytes": int,
    "worker_concurrency": int,
    "endpoint_concurrency": int,
    "circuit_failures": int,
    "circuit_cooldown": float,
    "circuit_cooldown_max": float,
    "endpoint_disable_after": float,
    "max_backlog": int,
    "shutdown_grace": float,
    "database_pool_size": int,
    "access_log": parse_bool,
    "metrics": parse_bool,
    "metrics_listen": parse_listen,
    "metrics_endpoint_labels": parse_bool,
    "ready_max_backlog_age": float,
    "ready_max_worker_stall": parse_finite,
    "payload_retention_days": parse_finite,
    "message_retention_days": parse_finite,
    "retention_interval": parse_finite,
}


def load(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings; raises ``ValueError`` naming the setting when a value is invalid."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as fh:
            raw.update(tomllib.load(fh))
    names = {f.name for f in fields(Settings)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"unknown setting(s) in {config_file}: {', '.join(sorted(unknown))}")
    for name in names:
        value = env.get(f"HOOKLINE_{name.upper()}")
        if value is not None and value != "":
            raw[name] = value
    values: dict[str, Any] = {}
    for name, value in raw.items():
        parser = _PARSERS.get(name)
        try:
            if parser is not None:
                if isinstance(value, list):  # TOML arrays for schedules and subnets
                    value = ",".join(str(v) for v in value)
                if isinstance(value, bool) and parser is parse_bool:  # a TOML boolean
                    values[name] = value
                else:
                    values[name] = parser(value if isinstance(value, str) else str(value))
            else:
                values[name] = str(value)
        except ValueError as exc:
            raise ValueError(f"invalid {name} (HOOKLINE_{name.upper()}): {exc}") from exc
    settings = Settings(**values)
    positive: tuple[str, ...] = (
        "request_timeout",
        "request_read_timeout",
        "max_payload_bytes",
        "worker_concurrency",
        "endpoint_concurrency",
        "circuit_failures",
        "circuit_cooldown",
        "circuit_cooldown_max",
        "endpoint_disable_after",
        "max_backlog",
        "payload_retention_days",
        "retention_interval",
        "ready_max_worker_stall",
    )
    if settings.message_retention_days is not None:
        positive += ("message_retention_days",)
    for name in positive:
        if not getattr(settings, name) > 0:
            raise ValueError(f"invalid {name} (HOOKLINE_{name.upper()}): must be > 0")
    if not settings.ready_max_backlog_age >= 0:  # 0: readiness ignores the backlog
        raise ValueError(
            "invalid ready_max_backlog_age (HOOKLINE_READY_MAX_BACKLOG_AGE): must be >= 0"
        )
    if not settings.shutdown_grace >= 0:
        raise ValueError("invalid shutdown_grace (HOOKLINE_SHUTDOWN_GRACE): must be >= 0")
    if bool(settings.operational_webhook_url) != bool(settings.operational_webhook_secret):
        raise ValueError(
            "operational webhooks need both HOOKLINE_OPERATIONAL_WEBHOOK_URL and "
            "HOOKLINE_OPERATIONAL_WEBHOOK_SECRET"
        )
    if settings.log_level.lower() not in LOG_LEVELS:
        raise ValueError(
            f"invalid log_level (HOOKLINE_LOG_LEVEL): use one of {', '.join(LOG_LEVELS)}"
        )
    if settings.log_format.lower() not in LOG_FORMATS:
        raise ValueError(
            f"invalid log_format (HOOKLINE_LOG_FORMAT): use one of {', '.join(LOG_FORMATS)}"
        )
    return settings
