"""The ``hookline`` command: serve | api | worker | migrate | token create|list|revoke | bench |
prune."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from hookline import (
    app,
    cache,
    errors,
    logs,
    metrics,
    metrics_server,
    operational,
    retention,
    settings,
    supervisor,
)
from hookline.bench import report as bench_report
from hookline.bench.scenarios import SCENARIOS as SCENARIO_NAMES
from hookline.store import base as store_base

T = TypeVar("T")
# tests/acceptance read this line
FIRST_TOKEN_LINE = "Your API token (shown once, store it now)"  # noqa: S105  (a label)

log = structlog.get_logger("hookline")


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # uvloop is optional off Linux/macOS
        return asyncio.run(main())


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML settings file (HOOKLINE_* environment variables take precedence).",
)
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """hookline: durable, signed webhook delivery with a Svix-compatible API."""
    try:
        ctx.obj = settings.load(config_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(ctx.obj.log_level, ctx.obj.log_format)


def _print_welcome(s: settings.Settings, token: str | None) -> None:
    base = f"http://{s.listen}"
    # a PostgreSQL URL may carry a password: never print it
    database = settings.redacted_url(s.database_url)
    if logs.resolve_format(s.log_format, sys.stderr) == "json":
        _log_welcome(base, database, token)
        return
    click.echo(f"hookline is listening on {base} (database {database})", err=True)
    if token is not None:
        click.echo("", err=True)
        click.echo(f"  {FIRST_TOKEN_LINE}: {token}", err=True)
        click.echo("", err=True)
    shown = token or "$HOOKLINE_TOKEN"
    click.echo(
        f'  Try: curl -s -X POST {base}/api/v1/app -H "Authorization: Bearer {shown}" '
        "-H 'Content-Type: application/json' -d '{\"name\": \"My first app\"}'",
        err=True,
    )
    if token is None:
        # Later starts print no token: say where one comes from (the first may have been lost).
        click.echo(
            "  No token at hand? 'hookline token create' prints a new one; "
            "'hookline token list' shows those that exist.",
            err=True,
        )
    click.echo(f"  API docs: {base}/docs", err=True)


def _log_welcome(base: str, database: str, token: str | None) -> None:
    """The banner as a ``listening`` event among JSON lines; the first token never in one.

    Log lines are collected, shipped and kept; a secret in one is copied everywhere they go.
    So the token goes to stdout, the one place it is written, as a plain line saying what it
    is: a terminal shows it as before, and ``hookline serve 2>log.json`` keeps it out of the
    log file.
    """
    if token is not None:
        click.echo(f"{FIRST_TOKEN_LINE}: {token}")
        sys.stdout.flush()
        extra = {"first_token": "printed on stdout"}
    else:
        extra = {"hint": "'hookline token create' prints a token; 'hookline token list' lists them"}
    log.info("listening", url=base, database=database, docs_url=f"{base}/docs", **extra)


def _serve(s: settings.Settings, *, api_role: bool, worker_role: bool, processes: int = 1) -> None:
    """Run the roles in this process, or in ``processes`` supervised children of it."""
    if processes == 1:
        _run(lambda: _main(s, api_role=api_role, worker_role=worker_role, announce=True))
        return

    async def prepare() -> None:
        # Once, before the fork: migrations, the seeded admin token and a clear one-line error
        # for a database that cannot be used, instead of N children failing the same way.
        async with app.opened(s) as hl:
            await app.seed_admin_token(hl)

    _run(prepare)
    sock = app.bind_socket(s) if api_role else None
    metrics_sock = None
    if s.metrics_listen and not api_role:  # metrics (if on) and the health probes
        metrics_sock = metrics_server.bind(s.metrics_listen)  # shared by the children
    # Every child records its metric values in files here (prometheus-client's multiprocess
    # mode), so that any child's /metrics answers for all of them.
    directory = _metrics_directory() if s.metrics else None
    if directory is not None:
        metrics.enable_multiprocess(directory)

    def child(index: int, restarted: bool) -> int:
        # Only the first child creates a first token and prints the welcome, once it listens.
        announce = index == 0 and not restarted
        _run(
            lambda: _main(
                s,
                api_role=api_role,
                worker_role=worker_role,
                announce=announce,
                sock=sock,
                metrics_sock=metrics_sock,
            )
        )
        return 0

    try:
        status = supervisor.run(processes, child, grace=s.shutdown_grace)
    finally:
        if directory is not None:  # the children are gone: nobody reads these files now
            shutil.rmtree(directory, ignore_errors=True)
    sys.exit(status)


METRICS_DIR_PREFIX = "hookline-metrics-"


def _metrics_directory() -> str:
    """A fresh directory for the children's metric files, named after this process.

    A supervisor killed with SIGKILL cannot remove its directory; the next one started here
    removes those whose supervisor is gone, so they do not pile up in the temp directory.
    """
    for stale in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*-*"):
        pid = stale.name.removeprefix(METRICS_DIR_PREFIX).split("-", 1)[0]
        with contextlib.suppress(OSError):
            if pid.isdigit() and stale.stat().st_uid == os.getuid() and not _alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


async def _main(
    s: settings.Settings,
    *,
    api_role: bool,
    worker_role: bool,
    announce: bool,
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    role = "serve" if api_role and worker_role else "api" if api_role else "worker"
    async with app.opened(s, role) as hl:
        await app.seed_admin_token(hl)  # before the API accepts requests that present it

        async def on_listening() -> None:
            # The first token is created only now: a start that fails to listen (a port
            # clash) stores none, and the next start creates and prints it.
            token = None
            try:
                token = await app.first_token(hl)
            except errors.Unavailable:
                log.warning(
                    "first_token_not_created",
                    reason="the database refuses writes; the next start tries again",
                )
            _print_welcome(s, token)

        # A worker alone creates no first token: it is printed where the API runs.
        await app.run(
            hl,
            api_role=api_role,
            worker_role=worker_role,
            on_listening=on_listening if announce else None,
            sock=sock,
            metrics_sock=metrics_sock,
        )


PROCESSES = click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Processes of this role, forked and supervised by this one (one per core).",
)


@main.command()
@click.pass_obj
def serve(s: settings.Settings) -> None:
    """Run the API and the delivery worker in one process."""
    _serve(s, api_role=True, worker_role=True)


@main.command()
@PROCESSES
@click.pass_obj
def api(s: settings.Settings, processes: int) -> None:
    """Run only the HTTP API (several processes share one listening socket)."""
    _serve(s, api_role=True, worker_role=False, processes=processes)


@main.command()
@PROCESSES
@click.pass_obj
def worker(s: settings.Settings, processes: int) -> None:
    """Run only the delivery worker (several processes share the work of one database)."""
    _serve(s, api_role=False, worker_role=True, processes=processes)


@main.command()
@click.pass_obj
def migrate(s: settings.Settings) -> None:
    """Apply database migrations and exit."""

    async def main_() -> None:
        async with app.opened(s):
            pass

    _run(main_)
    click.echo("migrations applied", err=True)


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--org", default=app.DEFAULT_ORG, show_default=True, help="Organisation (tenant).")
@click.option("--name", default="api", show_default=True, help="A label for the token.")
@click.pass_obj
def token_create(s: settings.Settings, org: str, name: str) -> None:
    """Create a token and print it (only its hash is stored)."""
    if org == operational.ORG_NAME:
        raise click.BadParameter(
            "this organisation is reserved for hookline itself", param_hint="--org"
        )
    if name == app.ADMIN_TOKEN_NAME and org == app.DEFAULT_ORG:
        raise click.BadParameter(
            f"{name!r} is reserved for the token seeded from HOOKLINE_ADMIN_TOKEN",
            param_hint="--name",
        )

    async def main_() -> str:
        async with app.opened(s) as hl:
            return await app.create_token(hl, org=org, name=name)

    click.echo(_run(main_))


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@token.command("list")
@click.pass_obj
def token_list(s: settings.Settings) -> None:
    """List tokens: id, name, organisation, created, last used (never a secret or its hash)."""

    async def main_() -> list[store_base.TokenInfo]:
        async with app.opened(s) as hl:
            return await hl.store.list_tokens()

    header = ("ID", "NAME", "ORGANISATION", "CREATED", "LAST USED")
    rows = [
        (t.id, t.name, t.org_name, _when(t.created_at), _when(t.last_used_at)) for t in _run(main_)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    click.echo(
        f"(last used: written at most every {cache.LAST_USED_SECONDS:.0f} s per token and "
        "API process)",
        err=True,
    )


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_obj
def token_revoke(s: settings.Settings, token_id: str) -> None:
    """Revoke a token by its id (see 'token list'); running APIs refuse it within 10 s."""

    async def main_() -> store_base.TokenInfo | None:
        async with app.opened(s) as hl:
            found = [t for t in await hl.store.list_tokens() if t.id == token_id]
            if not found or not await hl.store.revoke_token(token_id):
                return None
            return found[0]

    revoked = _run(main_)
    if revoked is None:
        raise click.ClickException(f"no token with id {token_id!r} (see 'hookline token list')")
    click.echo(
        f"revoked {revoked.id} ({revoked.name}, organisation {revoked.org_name}); running API "
        f"processes refuse it within {cache.TOKEN_SECONDS:.0f} s",
        err=True,
    )
    if revoked.name == app.ADMIN_TOKEN_NAME and revoked.org_name == app.DEFAULT_ORG:
        click.echo(
            "note: a start with HOOKLINE_ADMIN_TOKEN still set to this token stores it again",
            err=True,
        )


def _redacted(arg: str) -> str:
    """A command-line argument with the password of any URL in it replaced by ``***``."""
    name, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return f"{name}{sep}{settings.redacted_url(value)}" if "://" in value else arg


def _bench_settings(items: tuple[str, ...]) -> tuple[str, ...]:
    """``NAME=VALUE`` items naming real settings (checked by parsing them as hookline would)."""
    names = {f.name for f in dataclasses.fields(settings.Settings)}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip().lower() not in names:
            raise click.BadParameter(
                f"{item!r}: use NAME=VALUE with a setting name, e.g. metrics=false"
            )
        try:
            settings.load(env={f"HOOKLINE_{name.strip().upper()}": value.strip()})
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return items


@main.command()
@click.option(
    "--scenario",
    "names",
    type=click.Choice([*SCENARIO_NAMES, "all"]),
    multiple=True,
    default=["max"],
    show_default=True,
    help="Scenario to run (repeatable); 'all' runs every one, max first.",
)
@click.option("--count", type=click.IntRange(min=1), help="Messages per scenario.")
@click.option("--rate", type=click.FloatRange(min=1), help="steady: offered messages/s.")
@click.option("--seconds", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option("--endpoints", type=click.IntRange(min=1, max=1000), default=10, show_default=True)
@click.option(
    "--bad-share",
    type=click.FloatRange(min=0, max=1),
    default=0.2,
    show_default=True,
    help="Share of endpoints that hang (slow-endpoints) or answer 500 (retry-storm).",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1, max=65535),  # the API's range for rateLimit
    default=50,
    show_default=True,
    help="rate-limited: every endpoint's rateLimit, messages/s "
    "(default count: endpoints x rate limit x 10 s).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Ingest requests the load generator keeps in flight.",
)
@click.option(
    "--worker-concurrency",
    type=click.IntRange(min=1),
    help="hookline's deliveries in flight per worker (default: hookline's own default).",
)
@click.option("--payload-bytes", type=click.IntRange(min=64), default=512, show_default=True)
@click.option(
    "--setting",
    multiple=True,
    metavar="NAME=VALUE",
    callback=lambda _ctx, _param, value: _bench_settings(value),
    help="A hookline setting for the benchmarked processes, repeatable: e.g. --setting "
    "metrics=false --setting log_level=info (they run with log_level=warning otherwise).",
)
@click.option(
    "--database",
    metavar="URL",
    help="Database URL (default: a temporary SQLite file per scenario). With "
    "postgresql://USER@HOST:PORT/DB, a PostgreSQL server you run (13+): every scenario gets a "
    "fresh database, created through DB and dropped when the scenario ends; DB itself is not "
    "written (name the server's 'postgres' database), and USER needs CREATEDB. The report then "
    "adds the server's transactions, statements (with pg_stat_statements preloaded), rows, WAL "
    "and, for a server on this machine, CPU per delivered message.",
)
@click.option(
    "--topology",
    type=click.Choice(["embedded", "split"]),
    default="embedded",
    show_default=True,
    help="embedded: one 'hookline serve'; split: 'hookline api' and 'hookline worker'.",
)
@click.option(
    "--api-processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Run 'hookline api --processes N' (--topology split, and the burst scenario).",
)
@click.option(
    "--worker-processes",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Run 'hookline worker --processes N' (--topology split, and the burst scenario).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="hookline's request timeout, i.e. how long slow endpoints hang.",
)
@click.option(
    "--drain-seconds",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Longest wait for deliveries once ingest is done.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON results file (default: bench-results/<scenarios>.json).",
)
@click.option("--progress/--no-progress", default=True, help="Live progress bars.")
def bench(names: tuple[str, ...], output: Path | None, progress: bool, **options: Any) -> None:
    """Benchmark hookline end to end on this machine (receiver and load generator included)."""
    from rich.console import Console

    from hookline import bench as bench_

    order = list(SCENARIO_NAMES) if "all" in names else list(dict.fromkeys(names))
    opts = bench_.Options(**options)
    several = opts.api_processes > 1 or opts.worker_processes > 1
    if several and opts.topology == "embedded" and "burst" not in order:
        raise click.UsageError(
            "--api-processes and --worker-processes need --topology split (or the burst "
            "scenario): 'hookline serve' runs in one process"
        )
    # the JSON keeps the command: never a database password in it
    command = " ".join(["hookline", *(_redacted(arg) for arg in sys.argv[1:])])
    console = Console()
    try:
        result = _run(
            lambda: bench_.run(order, opts, console=console, progress=progress, command=command)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("hookline bench: interrupted; its processes are stopped", err=True)
        sys.exit(130)
    except bench_.Unusable as exc:
        raise click.ClickException(str(exc)) from exc
    path = output or Path("bench-results") / f"{'-'.join(order)}.json"
    bench_report.write(path, result)
    console.print(f"results written to {path}")


def _days(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter("must be a number of days, 0 or more (0.5 is 12 hours)")
    return value


@main.command()
@click.option(
    "--older-than",
    "days",
    type=float,
    required=True,
    callback=_days,
    metavar="DAYS",
    help="Delete messages created more than DAYS ago (fractions allowed: 0.5 is 12 hours).",
)
@click.option(
    "--include-pending",
    is_flag=True,
    help="Also delete messages whose deliveries still wait for an attempt or a retry "
    "(never one being sent at this moment).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=retention.BATCH_SIZE,
    show_default=True,
    help="Messages deleted per transaction.",
)
@click.option("--progress/--no-progress", default=True, help="A progress bar on stderr.")
@click.pass_obj
def prune(
    s: settings.Settings, days: float, include_pending: bool, batch_size: int, progress: bool
) -> None:
    """Delete old messages with their deliveries and attempts, in batches.

    Runs beside a running hookline. Each batch is one transaction, so Ctrl-C (or SIGTERM)
    stops after the batch in hand with nothing half-deleted; a second Ctrl-C stops at once
    (the batch in hand is rolled back). Messages with deliveries still pending or being sent
    are kept unless --include-pending.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)

    async def main_() -> tuple[retention.Totals, int, float]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                console.print("hookline prune: stopped at once; the batch in hand is rolled back")
                os._exit(130)
            console.print("hookline prune: stopping after the batch in hand (again: at once)")
            stop.set()

        async def nap(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            return stop.is_set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        async with app.opened(s) as hl:
            before = hl.store.now() - days * retention.DAY_SECONDS
            total = await hl.store.count_messages_before(before)
            columns = (TextColumn("pruning"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, console=console, disable=not progress) as bar:
                task = bar.add_task("prune", total=total)
                totals = await retention.prune(
                    hl.store,
                    before,
                    include_pending=include_pending,
                    batch_size=batch_size,
                    nap=nap,
                    on_batch=lambda b: bar.advance(task, b.deleted + b.skipped),
                )
        return totals, total, before

    totals, total, before = _run(main_)
    cut = _when(before)
    if totals.interrupted:
        click.echo(
            f"interrupted after {totals.batches} batches: deleted {totals.done} of the {total} "
            f"messages created before {cut}; each batch is its own transaction, so nothing is "
            "half-deleted: run the same command again to go on",
            err=True,
        )
        sys.exit(130)
    click.echo(
        f"deleted {totals.done} messages created before {cut}, with their deliveries and "
        f"attempts ({totals.batches} {'batch' if totals.batches == 1 else 'batches'})",
        err=True,
    )
    if totals.skipped:
        why = (
            "being sent right now; run again once they are done"
            if include_pending
            else "with deliveries still pending or being sent; --include-pending deletes "
            "the pending ones too"
        )
        click.echo(f"kept {totals.skipped} {why}", err=True)
    if s.database_url.startswith("sqlite:") and totals.done:
        click.echo(
            "the database file keeps its size: SQLite reuses the freed pages for new rows "
            "(VACUUM, with hookline stopped, gives the space back to the disk)",
            err=True,
        )
