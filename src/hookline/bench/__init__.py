"""``hookline bench``: end-to-end throughput, latency, CPU and memory on this machine.

A run starts a receiver process, measures the raw pipe (the load generator posting straight to
the receiver), then for each scenario starts a fresh hookline on a fresh database, drives load
through its API and measures what the receiver gets (and, on PostgreSQL, what the server did).
Scenarios live in ``scenarios``, databases in ``database``; ``run`` strings them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import tempfile
from pathlib import Path

import aiohttp
from rich.console import Console

from hookline.bench import database, processes, report, scenarios
from hookline.bench.display import Display
from hookline.bench.scenarios import SCENARIOS, Options, Report

__all__ = ["SCENARIOS", "Options", "Unusable", "run"]
Unusable = database.Unusable


async def run(
    names: list[str], opts: Options, *, console: Console, progress: bool, command: str
) -> report.RunFile:
    """Run ``names`` in order with one receiver and one raw-pipe measurement; stop everything.

    Raises ``Unusable`` before anything starts when ``--database`` names a PostgreSQL server
    that cannot be used.
    """
    started_at = report.now_iso()
    postgres = None
    if database.is_postgres(opts.database):
        assert opts.database is not None
        postgres = await database.Server.open(opts.database)
    # SIGTERM cancels the run like Ctrl-C does, so the finally blocks stop every child process
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with tempfile.TemporaryDirectory(prefix="hookline-bench-") as tmp:
        opts = dataclasses.replace(opts, workdir=Path(tmp))
        receiver, port = processes.start_receiver(Path(tmp))
        try:
            async with aiohttp.ClientSession() as control:
                ctx = scenarios.Run(
                    opts,
                    f"http://{processes.HOST}:{port}",
                    control,
                    Display(console, enabled=progress),
                    receiver,
                    postgres,
                )
                ctx.raw_pipe = await scenarios.measure_raw_pipe(ctx)
                reports: list[Report] = []
                for name in names:
                    result = await _one(ctx, name, reports)
                    reports.append(result)
                    report.show(console, result)
        finally:
            receiver.stop()
    return report.RunFile(
        started_at=started_at, command=command, machine=report.machine(), reports=reports
    )


async def _one(ctx: scenarios.Run, name: str, earlier: list[Report]) -> Report:
    """One scenario; ``steady`` without ``--rate`` offers half the rate ``max`` reached."""
    max_report = next((r for r in earlier if r.scenario == "max"), None)
    if name == "steady" and ctx.opts.rate is None and max_report is not None:
        half = max(1.0, round(max_report.hookline.delivered_rate / 2))
        result = await scenarios.steady(ctx, rate=half)
    else:
        result = await scenarios.RUNNERS[name](ctx)
    # rate-limited runs at the limit it sets, so a share of max would say nothing about hookline
    if (
        max_report is not None
        and name not in ("max", "rate-limited")
        and max_report.hookline.delivered_rate
    ):
        rate = result.drain_rate or result.hookline.delivered_rate
        share = rate / max_report.hookline.delivered_rate
        result.notes.append(f"{share:.2f} x the max scenario's delivered rate in this run")
    return result
