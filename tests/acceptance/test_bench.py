"""``hookline bench`` as a smoke test: every scenario, tiny counts, one run for the whole module.

The real command runs once as a subprocess of ``python -m hookline`` (``--scenario all``) with a
clean ``HOOKLINE_*`` environment; the tests read its JSON file and console output. Nothing here
measures speed: the numbers checked are counts, which must add up whatever the machine. Two more
short runs check ``--api-processes`` / ``--worker-processes`` and ``--database postgresql://``.

While the command runs, its descendants (receiver, hookline processes) are sampled, so that
afterwards the module can check that none of them outlived it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import postgres

SCENARIOS = ("max", "steady", "burst", "slow-endpoints", "retry-storm", "rate-limited")
HEALTHY_ONLY = ("max", "steady", "burst", "rate-limited")  # every endpoint answers 200
COUNT = 60
STEADY_RATE = 40
STEADY_SECONDS = 1
ENDPOINTS = 5
BAD_SHARE = 0.4  # 2 of 5 endpoints hang (slow-endpoints) or answer 500 (retry-storm)
REQUEST_TIMEOUT = 1  # how long a slow endpoint holds a delivery
# rate-limited: 12 messages per endpoint at 20/s, 5 in the bucket's initial burst, so the limit
# holds some back (about 0.35 s) without slowing the run down
RATE_LIMIT = 20
DRAIN_SECONDS = 20
# A run takes seconds; this only turns a hang into a failure before pytest's own timeout (120 s).
RUN_TIMEOUT_SECONDS = 100.0
SAMPLE_SECONDS = 0.1
OUTPUT_TAIL_CHARS = 6000


@dataclass(frozen=True)
class BenchRun:
    returncode: int
    stdout: str
    stderr: str
    output: Path
    workdir: Path  # the bench's TMPDIR: its temporary directory is made in here
    seen: dict[int, str]  # pid -> command line of every descendant seen while it ran
    left_behind: list[str]  # descendants or processes of this run still alive after it exited

    def describe(self) -> str:
        def tail(text: str) -> str:
            return text if len(text) <= OUTPUT_TAIL_CHARS else "[...]" + text[-OUTPUT_TAIL_CHARS:]

        return (
            f"hookline bench exited with status {self.returncode}\n"
            f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}\n---"
        )

    def result(self) -> dict[str, Any]:
        """The JSON file, once the command is known to have succeeded."""
        assert self.returncode == 0, self.describe()
        assert self.output.is_file(), self.describe()
        data: dict[str, Any] = json.loads(self.output.read_text())
        return data

    def report(self, scenario: str) -> dict[str, Any]:
        reports = self.result()["reports"]
        found: list[dict[str, Any]] = [r for r in reports if r["scenario"] == scenario]
        assert len(found) == 1, [r["scenario"] for r in reports]
        return found[0]


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["TMPDIR"] = str(workdir)  # the run's temporary directory (databases, logs) lands here
    env["COLUMNS"] = "120"  # tables are not wrapped differently on every developer's terminal
    env.pop("FORCE_COLOR", None)  # plain text, so the titles can be found in the output
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _alive(pid: int, created: float) -> bool:
    """Whether the process sampled as ``pid`` (not a later one reusing the id) still runs."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _mentioning(root: Path, cwd: Path) -> list[str]:
    """Processes other than this one that belong to the run: by working directory, command line
    or environment (every child inherits TMPDIR; the database path is under it)."""
    me, marker, found = os.getpid(), str(root), []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "environ", "status"], ad_value=None):
        info = proc.info
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        environ = info["environ"] or {}
        if (
            info["cwd"] == str(cwd)
            or marker in cmdline
            or any(marker in value for value in environ.values())
        ):
            found.append(f"pid {info['pid']}: {cmdline}")
    return found


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """The command hung: kill it and every process it started (by pid)."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    proc.kill()
    proc.wait()
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _run_bench(root: Path, options: list[str]) -> BenchRun:
    """Run ``hookline bench --no-progress --output ... <options>`` in ``root``, watching its
    descendants, and return what it did."""
    cwd, workdir = root / "cwd", root / "tmp"
    cwd.mkdir()
    workdir.mkdir()
    output = root / "x.json"
    argv = [
        sys.executable, "-m", "hookline", "bench", *options,
        "--no-progress",
        "--output", str(output),
    ]  # fmt: skip
    me = psutil.Process()
    children_before = {c.pid for c in me.children(recursive=True)}
    seen: dict[int, tuple[float, str]] = {}
    out_path, err_path = root / "bench.out", root / "bench.err"
    # Output goes to files, not pipes: nothing to drain while the descendants are sampled.
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_env(workdir), cwd=cwd
        )
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    try:
        while True:
            try:
                proc.wait(SAMPLE_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                _kill_tree(proc)
                pytest.fail(
                    f"hookline bench did not finish within {RUN_TIMEOUT_SECONDS:g} s\n"
                    f"--- stdout ---\n{out_path.read_text()}\n"
                    f"--- stderr ---\n{err_path.read_text()}"
                )
            try:
                descendants = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                continue
            for child in descendants:
                # the latest command line: a child caught between fork and exec still shows ours
                with contextlib.suppress(psutil.Error):
                    cmd = " ".join(child.cmdline())
                    if cmd or child.pid not in seen:
                        seen[child.pid] = (child.create_time(), cmd)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)

    # checked at once: a process left behind may yet exit on its own, and must not be missed
    left = [f"pid {pid}: {cmd}" for pid, (created, cmd) in seen.items() if _alive(pid, created)]
    left += [
        f"pid {c.pid}: child of the test process"
        for c in me.children(recursive=True)
        if c.pid not in children_before and c.pid not in seen
    ]
    left += [p for p in _mentioning(root, cwd) if p not in left]
    return BenchRun(
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        output=output,
        workdir=workdir,
        seen={pid: cmd for pid, (_, cmd) in seen.items()},
        left_behind=left,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    options = [
        "--scenario", "all",
        "--count", str(COUNT),
        "--rate", str(STEADY_RATE),
        "--seconds", str(STEADY_SECONDS),
        "--endpoints", str(ENDPOINTS),
        "--bad-share", str(BAD_SHARE),
        "--rate-limit", str(RATE_LIMIT),
        "--timeout", str(REQUEST_TIMEOUT),
        "--drain-seconds", str(DRAIN_SECONDS),
    ]  # fmt: skip
    return _run_bench(tmp_path_factory.mktemp("bench"), options)


# the run as a whole ------------------------------------------------------------------------------


def test_bench_exits_zero_and_writes_one_report_per_scenario_in_order(bench: BenchRun) -> None:
    result = bench.result()
    assert [r["scenario"] for r in result["reports"]] == list(SCENARIOS), bench.describe()
    assert result["command"].startswith("hookline bench "), result["command"]
    assert "--scenario all" in result["command"]
    assert result["started_at"]
    assert result["machine"]["cores"] >= 1, result["machine"]
    assert "results written to" in bench.stdout, bench.describe()


def test_console_shows_a_table_per_scenario(bench: BenchRun) -> None:
    bench.result()
    for scenario in SCENARIOS:
        assert f"hookline bench: {scenario}" in bench.stdout, bench.describe()
    assert bench.stdout.count("ratio to raw pipe") == len(SCENARIOS), bench.describe()
    assert "Traceback" not in bench.stdout + bench.stderr, bench.describe()


def test_no_process_is_left_behind(bench: BenchRun) -> None:
    assert bench.returncode is not None
    assert bench.left_behind == [], (
        f"still running after hookline bench exited: {bench.left_behind}\n{bench.describe()}"
    )
    # the check above saw the run's children, so it is not vacuous
    assert any("hookline.bench.receiver" in cmd for cmd in bench.seen.values()), bench.seen
    assert any("-m hookline serve" in cmd for cmd in bench.seen.values()), bench.seen
    assert list(bench.workdir.iterdir()) == []  # the temporary directory is gone too


# each scenario -----------------------------------------------------------------------------------


def _assert_accounted_for(phase: dict[str, Any], where: str) -> None:
    """Every message sent is accepted or an error, and every expected one arrived exactly once."""
    ingest = phase["ingest"]
    assert ingest["sent"] == ingest["accepted"] + ingest["errors"], (where, ingest)
    assert ingest["errors"] == 0, (where, ingest)
    assert ingest["first_error"] is None, (where, ingest)
    assert 0 < phase["expected"] <= ingest["accepted"], (where, phase)
    assert phase["delivered"] <= ingest["sent"], (where, phase)
    assert phase["delivered"] + phase["missing"] == phase["expected"], (where, phase)
    assert phase["missing"] == 0, (where, phase)
    assert phase["duplicates"] >= 0, (where, phase)
    assert phase["latency_ms"], (where, phase)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_raw_pipe_is_measured_once_and_adds_up(bench: BenchRun, scenario: str) -> None:
    raw = bench.report(scenario)["raw_pipe"]
    _assert_accounted_for(raw, f"{scenario}: raw pipe")
    assert raw["ingest"]["sent"] == COUNT, raw
    assert raw["expected"] == raw["ingest"]["accepted"], raw  # the raw pipe has no bad endpoint
    assert raw["duplicates"] == 0, raw
    assert (raw["failed_attempts"], raw["hung_attempts"]) == (0, 0), raw
    assert raw == bench.report("max")["raw_pipe"]  # one measurement shared by every report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_message_is_accounted_for(bench: BenchRun, scenario: str) -> None:
    report = bench.report(scenario)
    phase = report["hookline"]
    _assert_accounted_for(phase, f"{scenario}: hookline")
    sent, accepted = phase["ingest"]["sent"], phase["ingest"]["accepted"]
    assert sent == (STEADY_RATE * STEADY_SECONDS if scenario == "steady" else COUNT), phase
    if scenario in HEALTHY_ONLY:
        assert phase["expected"] == accepted, phase
        assert phase["duplicates"] == 0, phase
        assert (phase["failed_attempts"], phase["hung_attempts"]) == (0, 0), phase
    else:  # some messages went to the misbehaving endpoints and are not expected to arrive
        assert phase["expected"] < accepted, phase
    if scenario == "retry-storm":
        assert phase["failed_attempts"] > 0, phase
        assert phase["hung_attempts"] == 0, phase
    if scenario == "slow-endpoints":
        assert phase["hung_attempts"] > 0, phase
        assert phase["failed_attempts"] == 0, phase
    assert report["ratio_to_raw_pipe"] > 0, report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cpu_and_memory_are_measured_per_hookline_process(bench: BenchRun, scenario: str) -> None:
    phase = bench.report(scenario)["hookline"]
    names = {"hookline api", "hookline worker"} if scenario == "burst" else {"hookline serve"}
    assert set(phase["cpu_seconds"]) == names, phase["cpu_seconds"]
    assert set(phase["peak_rss_mb"]) == names, phase["peak_rss_mb"]
    assert all(v >= 0 for v in phase["cpu_seconds"].values()), phase["cpu_seconds"]
    assert all(v > 0 for v in phase["peak_rss_mb"].values()), phase["peak_rss_mb"]
    per_message = phase["cpu_us_per_message"]
    assert isinstance(per_message, int | float), phase
    assert per_message > 0, phase
    # the load generator and the receiver are measured too, in both phases, for scale (with 60
    # messages a process's CPU may not reach one clock tick, so zero is a valid reading)
    for measured in (phase, bench.report(scenario)["raw_pipe"]):
        assert measured["load_generator_cpu_us_per_message"] >= 0, measured
        assert measured["receiver_cpu_us_per_request"] >= 0, measured


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_settings_are_the_ones_asked_for(bench: BenchRun, scenario: str) -> None:
    report = bench.report(scenario)
    settings = report["settings"]
    assert settings["endpoints"] == ENDPOINTS, settings
    assert settings["bad_share"] == BAD_SHARE, settings
    assert settings["request_timeout"] == REQUEST_TIMEOUT, settings
    if scenario == "burst":
        assert report["drain_rate"] is not None, report
        assert report["drain_rate"] > 0, report
    else:
        assert report["drain_rate"] is None, report
    if scenario == "steady":
        assert f"offered rate {STEADY_RATE:g} messages/s" in report["notes"], report["notes"]
    if scenario == "rate-limited":
        assert settings["rate_limit"] == RATE_LIMIT, settings
    else:
        assert "rate_limit" not in settings, settings
        assert report["rate_limit"] is None, report


def test_rate_limited_delivers_every_message_once_and_wastes_no_attempt(bench: BenchRun) -> None:
    """Counts only: the delivered rate depends on the machine, and is not checked here."""
    report = bench.report("rate-limited")
    phase, limited = report["hookline"], report["rate_limit"]
    assert limited["limit_per_endpoint"] == RATE_LIMIT, limited
    assert limited["limit"] == RATE_LIMIT * ENDPOINTS, limited
    assert limited["burst"] == RATE_LIMIT / 4, limited
    # every message reached its endpoint in exactly one request, and hookline recorded no
    # failed attempt: a delivery held back by the limit waits, it is not tried and failed
    assert limited["attempts"] == limited["unique"] == phase["delivered"] == COUNT, limited
    assert limited["wasted"] == 0, limited
    assert limited["failed_attempts_recorded"] == 0, limited
    # the receiver saw each endpoint separately, round-robin: COUNT / ENDPOINTS requests each
    per_endpoint = limited["endpoints"]
    assert [e["endpoint"] for e in per_endpoint] == list(range(ENDPOINTS)), per_endpoint
    assert [e["requests"] for e in per_endpoint] == [COUNT // ENDPOINTS] * ENDPOINTS, per_endpoint
    for row in ("rate limit, all endpoints", "steady delivered rate", "delivered / limit"):
        assert row in bench.stdout, bench.describe()


# several processes per role, and PostgreSQL ---------------------------------------------------


def test_split_topology_runs_the_processes_asked_for(tmp_path: Path) -> None:
    run = _run_bench(
        tmp_path,
        [
            "--scenario", "max", "--count", str(COUNT), "--endpoints", str(ENDPOINTS),
            "--drain-seconds", str(DRAIN_SECONDS),
            "--topology", "split", "--api-processes", "2", "--worker-processes", "2",
        ],
    )  # fmt: skip
    report = run.report("max")
    phase = report["hookline"]
    _assert_accounted_for(phase, "max, 2 + 2 processes")
    assert (report["settings"]["api_processes"], report["settings"]["worker_processes"]) == (2, 2)
    assert phase["processes"] == {"hookline api": 2, "hookline worker": 2}, phase
    assert "api x 2 + worker x 2" in run.stdout, run.describe()
    # each supervisor and its two forked children (same command line) ran, and are gone
    for role in ("api", "worker"):
        seen = [c for c in run.seen.values() if f"-m hookline {role} --processes 2" in c]
        assert len(seen) == 3, run.seen
    assert run.left_behind == [], run.left_behind
    # CPU is the whole tree's: the children did the work, the supervisors only waited
    assert all(phase["cpu_seconds"][name] > 0 for name in phase["processes"]), phase


def test_split_processes_without_split_topology_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hookline", "bench", "--api-processes", "2", "--no-progress"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 2, result
    assert "--topology split" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything ran or was written


def _databases(server: postgres.PostgresServer) -> list[str]:
    import asyncpg

    async def names() -> list[str]:
        conn = await asyncpg.connect(server.admin_url, timeout=postgres.SQL_TIMEOUT_SECONDS)
        try:
            return [r[0] for r in await conn.fetch("SELECT datname FROM pg_database")]
        finally:
            await conn.close()

    return asyncio.run(names())


def test_postgres_gives_each_scenario_a_fresh_database_and_reports_the_server(
    tmp_path: Path, postgres_cluster: postgres.PostgresServer
) -> None:
    before = _databases(postgres_cluster)
    run = _run_bench(
        tmp_path,
        [
            "--scenario", "max", "--scenario", "burst", "--count", str(COUNT),
            "--endpoints", str(ENDPOINTS), "--drain-seconds", str(DRAIN_SECONDS),
            "--database", postgres_cluster.admin_url,
        ],
    )  # fmt: skip
    for scenario in ("max", "burst"):
        report = run.report(scenario)
        phase = report["hookline"]
        # a fresh database each: burst's count is not added to what max left behind
        _assert_accounted_for(phase, scenario)
        assert phase["delivered"] == COUNT, phase
        usage = phase["database"]
        assert usage["delivered"] == COUNT, usage
        # a message, its delivery task and its attempt; the task updated by claim and outcome.
        # Setup rows (apps, endpoints) may be counted too, as the server flushes counters late.
        assert 3 * COUNT <= usage["rows_inserted"] < 4 * COUNT, usage
        assert 2 * COUNT <= usage["rows_updated"] < 3 * COUNT, usage
        assert usage["transactions"] > 0 and usage["wal_bytes"] > 0, usage
        if isinstance(postgres_cluster, postgres.PostgresCluster):  # runs on this machine
            assert usage["cpu_seconds"] > 0, usage
        assert report["settings"]["postgres"]["version"], report["settings"]
    assert "rows ins / upd / del per msg" in run.stdout, run.describe()
    assert run.left_behind == [], run.left_behind
    # every scenario's database is dropped again, and the named database got no tables
    assert sorted(_databases(postgres_cluster)) == sorted(before)
