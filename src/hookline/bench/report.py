"""The benchmark's outputs: a table per scenario on the console and one JSON file per run."""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
from pathlib import Path

import msgspec
import psutil
from rich.console import Console
from rich.table import Table

import hookline
from hookline.bench.database import Usage
from hookline.bench.scenarios import Phase, RateLimited, Report


class Machine(msgspec.Struct, kw_only=True):
    cpu_model: str
    cores: int
    memory_gb: float
    system: str
    python: str
    sqlite: str
    hookline: str


class RunFile(msgspec.Struct, kw_only=True):
    """What ``--output`` holds: the machine, when, the command and every scenario's report."""

    started_at: str
    command: str
    machine: Machine
    reports: list[Report]


def machine() -> Machine:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return Machine(
        cpu_model=model,
        cores=os.cpu_count() or 0,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        hookline=hookline.__version__,
    )


def write(path: Path, run: RunFile) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(run), indent=2) + b"\n")


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def _latency(phase: Phase) -> str:
    lat = phase.latency_ms
    if not lat:
        return "-"
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms"


def _rate_limit_rows(table: Table, rl: RateLimited) -> None:
    n = len(rl.endpoints)
    table.add_row(
        "rate limit, all endpoints", f"{rl.limit:,}/s ({n} x {rl.limit_per_endpoint}/s)", ""
    )
    steady = "-" if rl.delivered_rate is None else _rate(rl.delivered_rate)
    table.add_row("steady delivered rate", steady, "")
    table.add_row("delivered / limit", "-" if rl.ratio is None else f"{rl.ratio:.3f}", "")
    if rl.ratio_min is not None and rl.ratio_max is not None and n > 1:
        table.add_row(
            "  slowest / fastest endpoint", f"{rl.ratio_min:.3f} / {rl.ratio_max:.3f}", ""
        )
    table.add_row("attempts / unique deliveries", f"{rl.attempts:,} / {rl.unique:,}", "")
    table.add_row(
        "attempts wasted / failed (hookline)",
        f"{rl.wasted:,} / {rl.failed_attempts_recorded:,}",
        "",
    )


def _processes(phase: Phase) -> str:
    """``serve``, or ``api x 2 + worker x 1``: what ran, and in how many processes."""
    return " + ".join(
        f"{name.removeprefix('hookline ')} x {n}"
        if n > 1 or len(phase.processes) > 1
        else name.removeprefix("hookline ")
        for name, n in phase.processes.items()
    )


def _per_message(usage: Usage, key: str, fmt: str = ",.2f") -> str:
    value = usage.per_message.get(key)
    return "-" if value is None else format(value, fmt)


def _database_rows(table: Table, usage: Usage) -> None:
    """PostgreSQL: what the server did per delivered message."""
    if usage.cpu_seconds is not None:
        table.add_row(
            "PostgreSQL CPU per delivered msg", f"{_per_message(usage, 'cpu_us', ',.0f')} µs", ""
        )
    table.add_row(
        "  transactions / statements per msg",
        f"{_per_message(usage, 'transactions')} / {_per_message(usage, 'statements')}",
        "",
    )
    table.add_row(
        "  rows ins / upd / del per msg",
        f"{_per_message(usage, 'rows_inserted')} / {_per_message(usage, 'rows_updated')} / "
        f"{_per_message(usage, 'rows_deleted')}",
        "",
    )
    table.add_row(
        "  WAL per msg (bytes / flushes)",
        f"{_per_message(usage, 'wal_bytes', ',.0f')} / {_per_message(usage, 'wal_flushes', '.3f')}",
        "",
    )
    table.add_row(
        "  database growth per msg", f"{_per_message(usage, 'database_bytes', ',.0f')} bytes", ""
    )


def show(console: Console, report: Report) -> None:
    h, raw = report.hookline, report.raw_pipe
    table = Table(title=f"hookline bench: {report.scenario}", title_justify="left")
    table.add_column("measure")
    table.add_column("hookline", justify="right")
    table.add_column("raw pipe", justify="right")
    if h.processes:
        table.add_row("hookline processes", _processes(h), "")
    table.add_row("messages sent", f"{h.ingest.sent:,}", f"{raw.ingest.sent:,}")
    table.add_row("ingest rate (accepted)", _rate(h.ingest.rate), _rate(raw.ingest.rate))
    table.add_row(
        "delivered (healthy endpoints)", f"{h.delivered:,} of {h.expected:,}", f"{raw.delivered:,}"
    )
    label = "drain rate" if report.drain_rate is not None else "delivered rate"
    table.add_row(label, _rate(report.drain_rate or h.delivered_rate), _rate(raw.delivered_rate))
    table.add_row("ratio to raw pipe", f"{report.ratio_to_raw_pipe:.2f}", "1.00")
    if report.rate_limit is not None:
        _rate_limit_rows(table, report.rate_limit)
    table.add_row("ingest→delivery p50/p95/p99", _latency(h), _latency(raw))
    if h.ingest.post_latency_ms:
        p = h.ingest.post_latency_ms
        table.add_row("ingest POST p50/p99", f"{p['p50']:.1f} / {p['p99']:.1f} ms", "")
    if h.cpu_us_per_message is not None:
        table.add_row("server CPU per delivered msg", f"{h.cpu_us_per_message:,.0f} µs", "")
    if h.database is not None:
        _database_rows(table, h.database)
    if h.load_generator_cpu_us_per_message is not None:
        table.add_row(
            "load generator CPU per msg",
            f"{h.load_generator_cpu_us_per_message:,.0f} µs",
            f"{raw.load_generator_cpu_us_per_message or 0:,.0f} µs",
        )
    if h.receiver_cpu_us_per_request is not None:
        table.add_row(
            "receiver CPU per request",
            f"{h.receiver_cpu_us_per_request:,.0f} µs",
            f"{raw.receiver_cpu_us_per_request or 0:,.0f} µs",
        )
    for name, mb in h.peak_rss_mb.items():
        n = h.processes.get(name, 1)
        label = f"peak RSS, {name}" + (" (largest process)" if n > 1 else "")
        table.add_row(label, f"{mb:,.0f} MB", "")
    table.add_row("missing / duplicates", f"{h.missing:,} / {h.duplicates:,}", "")
    table.add_row("ingest errors", f"{h.ingest.errors:,}", f"{raw.ingest.errors:,}")
    if h.failed_attempts or h.hung_attempts:
        table.add_row(
            "attempts at failing / hanging", f"{h.failed_attempts:,} / {h.hung_attempts:,}", ""
        )
    console.print(table)
    for note in report.notes:
        console.print(f"  {note}")
    if h.ingest.first_error:
        console.print(f"  first ingest error: {h.ingest.first_error}")
