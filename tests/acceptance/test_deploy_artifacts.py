"""The operator artefacts in ``deploy/``, held to what the tools that consume them accept.

- ``deploy/prometheus/alerts.yml``: ``promtool check rules`` (lint fatal) and the unit tests in
  ``alerts_test.yml`` (``promtool test rules``); every alert carries a severity, a summary, a
  description and a runbook URL whose anchor is a heading of ``docs/operations.md``.
- ``deploy/grafana/hookline.json``: a dashboard model whose queries parse as PromQL, on the
  ``datasource``, ``job`` and ``instance`` variables.
- Every metric the rules and the dashboard name is one ``hookline.metrics.REGISTRY`` exports,
  with the labels they select on.
- ``deploy/systemd/*.service``: ``systemd-analyze verify`` with nothing to say, the stop
  settings the shutdown needs, and the reason for ``KillMode=mixed`` shown on a real
  ``hookline worker --processes 2``.

promtool comes from Debian's ``prometheus`` package and systemd-analyze from ``systemd``, which
``scripts/test-deps`` installs; when one is missing its tests skip, and fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml  # PyYAML, a test extra

from hookline import settings, supervisor
from tests.support.receiver import Receiver, Reply
from tests.support.server import HooklineServer

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "hookline.json"
SYSTEMD = REPO / "deploy" / "systemd"
ENV_EXAMPLE = SYSTEMD / "hookline.env"
OPERATIONS = REPO / "docs" / "operations.md"
UNITS = {
    "hookline-serve.service": "serve",
    "hookline-api.service": "api",
    "hookline-worker.service": "worker",
}
INSTALLED_BINARY = "/opt/hookline/.venv/bin/hookline"  # where the units expect hookline
TOOL_TIMEOUT_SECONDS = 60.0
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_PREFIX = "docs/operations.md#"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus adds (job, instance) or a histogram's buckets carry (le).
SCRAPE_LABELS = {"job", "instance", "le"}
# Series names a family of each type puts on the wire (prometheus_client names counter
# families without _total), for families without a sample yet (a labelled metric nothing has
# made a child of). _created series are taken from samples only: hookline turns them off.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}
# The Grafana variables, replaced by something PromQL parses when checking the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*"}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
SELECTOR = re.compile(r"\b(hookline_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
WORD_ALTERNATION = re.compile(r"[a-z0-9_]+(\|[a-z0-9_]+)*")
# KillMode check: in-flight deliveries hang this long, longer than the grace below.
HANG_SECONDS = 8.0
GRACE_SECONDS = 3
PER_CHILD = 2  # HOOKLINE_ENDPOINT_CONCURRENCY there


# tools --------------------------------------------------------------------------------------
def _tool(name: str, package: str) -> str:
    """The program's path; skip without it, or fail when CI is set."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is missing: run scripts/test-deps (as root) or apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# reading the artefacts ----------------------------------------------------------------------
def _rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"]
    return groups


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rule_groups() for rule in group["rules"] if "alert" in rule]


def _rule_expressions() -> list[str]:
    return [rule["expr"] for group in _rule_groups() for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return model


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows (collapsed or not) included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_expressions() -> list[str]:
    model = _dashboard()
    exprs = [t["expr"] for p in _panels(model["panels"]) for t in p.get("targets", [])]
    for variable in model["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def _as_promql(grafana_query: str) -> str:
    """A dashboard query with Grafana's variables replaced; label_values(...) as its selector."""
    for variable, value in GRAFANA_VARIABLES.items():
        grafana_query = grafana_query.replace(variable, value)
    match = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_]+\)", grafana_query)
    return match.group(1) if match else grafana_query


def _metric_names(expr: str) -> set[str]:
    """The hookline series an expression reads (recorded series, with colons, left out)."""
    bare = STRING.sub('""', expr)
    return {name for name in IDENTIFIER.findall(bare) if name.startswith("hookline_")}


def _labels_used(expr: str) -> dict[str, set[str]]:
    """Label name -> the values an expression selects (empty when it only groups by it)."""
    used: dict[str, set[str]] = {}
    for _metric, matchers in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(matchers):
            values = used.setdefault(label, set())
            if op in ("=", "=~") and WORD_ALTERNATION.fullmatch(value):
                values.update(value.split("|"))
    for grouping in GROUPING.findall(STRING.sub('""', expr)):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            used.setdefault(label, set())
    return used


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if fenced or match is None:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> every value given to it, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# what hookline exports ----------------------------------------------------------------------
class Exported:
    """Series names and label names (with the values seen) of ``hookline.metrics.REGISTRY``."""

    def __init__(self) -> None:
        from hookline import metrics  # the module under test; its registry is the contract

        self.names: set[str] = set()
        self.labels: dict[str, dict[str, set[str]]] = {}
        for family in metrics.REGISTRY.collect():
            wire = {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
            wire.update(sample.name for sample in family.samples)
            for name in wire:
                self.names.add(name)
                known = self.labels.setdefault(name, {})
                for sample in family.samples:
                    for label, value in sample.labels.items():
                        known.setdefault(label, set()).add(value)
        # A labelled metric with no child yet has no sample to show its label names; the
        # collector knows them (prometheus_client keeps them as _labelnames).
        collectors = getattr(metrics.REGISTRY, "_collector_to_names", {})
        for collector, names in collectors.items():
            for label in getattr(collector, "_labelnames", ()):
                for name in names:
                    self.labels.setdefault(name, {}).setdefault(label, set())


def _check_against_registry(exported: Exported, source: str, exprs: list[str]) -> list[str]:
    problems: list[str] = []
    for expr in exprs:
        names = _metric_names(expr)
        problems += [f"{source}: {name} is not exported" for name in names - exported.names]
        known = [exported.labels.get(name, {}) for name in names & exported.names]
        if not known:
            continue
        for label, values in _labels_used(expr).items():
            if label in SCRAPE_LABELS:
                continue
            carriers = [labels for labels in known if label in labels]
            if not carriers:
                problems.append(f"{source}: no metric in {sorted(names)} has a label {label!r}")
                continue
            seen = set().union(*(labels[label] for labels in carriers))
            if seen and values - seen:
                problems.append(
                    f"{source}: {label} values {sorted(values - seen)} are not among {sorted(seen)}"
                )
    return problems


def test_every_metric_in_the_rules_and_the_dashboard_is_exported() -> None:
    exported = Exported()
    assert any(name.startswith("hookline_") for name in exported.names), exported.names
    problems = _check_against_registry(exported, "alerts.yml", _rule_expressions())
    problems += _check_against_registry(exported, "hookline.json", _dashboard_expressions())
    assert not problems, "\n".join(sorted(set(problems)))


# alert rules --------------------------------------------------------------------------------
def test_alert_rules_pass_promtool_check() -> None:
    promtool = _tool("promtool", "prometheus")
    result = _run([promtool, "check", "rules", "--lint=all", "--lint-fatal", str(ALERTS)])
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_pass() -> None:
    promtool = _tool("promtool", "prometheus")
    result = _run([promtool, "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    alerts = _alerts()
    assert len(alerts) >= 10
    anchors = _anchors(OPERATIONS.read_text())
    problems: list[str] = []
    for alert in alerts:
        name = alert["alert"]
        if alert.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        url = str(annotations.get("runbook_url", ""))
        anchor = url.removeprefix(RUNBOOK_PREFIX)
        if not url.startswith(RUNBOOK_PREFIX) or anchor != name.lower():
            problems.append(f"{name}: runbook_url should be {RUNBOOK_PREFIX}{name.lower()}")
        elif anchor not in anchors:
            problems.append(f"{name}: docs/operations.md has no heading with anchor #{anchor}")
    assert not problems, "\n".join(problems)
    assert len({a["alert"] for a in alerts}) == len(alerts), "alert names repeat"


def test_the_unit_tests_cover_the_slo_alerts_and_the_deferred_work_alert() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    wanted = {
        "HooklineIngestErrorBudgetFastBurn",
        "HooklineIngestErrorBudgetSlowBurn",
        "HooklineDeliveryErrorBudgetFastBurn",
        "HooklineDeferredWorkRising",
        "HooklineBacklogOldestAgeHigh",
    }
    assert wanted <= tested, wanted - tested


# dashboard ----------------------------------------------------------------------------------
def test_dashboard_is_a_grafana_model_on_the_datasource_job_and_instance_variables() -> None:
    model = _dashboard()
    assert model["uid"] and model["title"] and model["schemaVersion"] >= 36
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DATASOURCE
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"

    panels = list(_panels(model["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description"), f"{panel['title']}: no description"
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, panel["title"]
            for metric, matchers in SELECTOR.findall(target["expr"]):
                # every hookline series follows the job and instance pickers
                assert 'job=~"$job"' in matchers, f"{panel['title']}: {metric} ignores $job"
                assert 'instance=~"$instance"' in matchers, f"{panel['title']}: {metric}"


def test_dashboard_charts_every_metric_an_alert_reads() -> None:
    charted = set().union(*map(_metric_names, _dashboard_expressions()))
    alerting = set().union(*map(_metric_names, _rule_expressions()))
    assert alerting <= charted, sorted(alerting - charted)


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = _tool("promtool", "prometheus")
    exprs = [_as_promql(e) for e in _dashboard_expressions()]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# systemd units ------------------------------------------------------------------------------
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Nothing to say about our units; the installed path is swapped for a real program.

    ``verify`` refuses an ExecStart that does not exist, so the copies point at this Python.
    Run as root in a container without a running systemd it still verifies offline; lines it
    prints about units other than ours (the host's) are shown, not held against these.
    """
    analyze = _tool("systemd-analyze", "systemd")
    copies = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert INSTALLED_BINARY in text, name
        copy = tmp_path / name
        copy.write_text(text.replace(INSTALLED_BINARY, sys.executable))
        copies.append(copy)
    result = _run([analyze, "verify", *map(str, copies)], cwd=tmp_path)
    output = (result.stdout + result.stderr).strip()
    print(f"systemd-analyze verify: exit status {result.returncode}\n{output}")
    ours = [
        line
        for line in output.splitlines()
        if str(tmp_path) in line or any(name in line for name in UNITS)
    ]
    assert result.returncode == 0 and not ours, output


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_its_role_stops_gracefully_and_is_hardened(name: str) -> None:
    values = _unit(name)["Service"]
    service = {key: given[-1] for key, given in values.items()}
    binary, *args = service["ExecStart"].split()
    assert binary == INSTALLED_BINARY and args[0] == UNITS[name], service["ExecStart"]
    # the arguments are ones hookline takes
    parsed = _run([sys.executable, "-m", "hookline", *args, "--help"])
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr

    assert service["User"] == "hookline" and service["StateDirectory"] == "hookline"
    assert service["EnvironmentFile"] == "-/etc/hookline/hookline.env"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only (see the test below for why)
    assert service["KillMode"] == "mixed"
    # the stop waits for the grace, plus the supervisor's margin for --processes children
    stop_seconds = float(service["TimeoutStopSec"].removesuffix("s"))
    grace = settings.Settings().shutdown_grace
    assert stop_seconds > grace + supervisor.STOP_MARGIN_SECONDS
    assert int(service["LimitNOFILE"]) >= 4 * settings.Settings().worker_concurrency
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }
    assert {k: service.get(k) for k in hardening} == hardening
    # the SQLite file lives in the state directory, writable under ProtectSystem=strict
    environment = dict(v.split("=", 1) for v in values["Environment"])
    database = environment["HOOKLINE_DATABASE_URL"]
    assert database == "sqlite:////var/lib/hookline/hookline.db", database


def test_env_example_names_only_real_settings() -> None:
    known = {f"HOOKLINE_{f.name.upper()}" for f in fields(settings.Settings)}
    named = re.findall(r"^#?(HOOKLINE_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert named
    assert set(named) <= known, sorted(set(named) - known)
    units = " ".join((SYSTEMD / name).read_text() for name in UNITS)
    assert set(re.findall(r"\b(HOOKLINE_[A-Z0-9_]+)=", units)) <= known


def _events(server: HooklineServer, event: str) -> list[dict[str, Any]]:
    """The process's log events (its children's included) of one name, in order.

    The parent and its children write to one file, so two lines can run together (each
    object is written whole, its newline apart): the objects are read one after another
    wherever they start, not line by line.
    """
    text, at = server.output(), 0
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    while (start := text.find("{", at)) >= 0:
        try:
            obj, at = decoder.raw_decode(text, start)
        except ValueError:
            at = start + 1
            continue
        if isinstance(obj, dict) and obj.get("event") == event:
            found.append(obj)
    return found


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigterm_to_every_process_of_the_unit_forces_supervised_children_out(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Why the units say KillMode=mixed.

    With ``mixed`` systemd signals the main process, which passes SIGTERM on once: children
    drain for the grace and release what is still in flight. With the default
    ``control-group`` every process gets SIGTERM from systemd, and then again from its parent:
    a second signal, which makes a hookline process exit at once, without the drain. (Two
    signals that arrive together may merge into one; the test signals the parent once the
    children have begun their stop, so that the outcome does not depend on timing.)
    """
    env = {
        "HOOKLINE_SHUTDOWN_GRACE": str(GRACE_SECONDS),
        "HOOKLINE_REQUEST_TIMEOUT": str(HANG_SECONDS + 5),
        # two in flight per endpoint and process: every child gets some of the work
        "HOOKLINE_ENDPOINT_CONCURRENCY": str(PER_CHILD),
        "HOOKLINE_LOG_LEVEL": "info",
    }
    data = tmp_path / "hl"
    api = HooklineServer(data, command="api", env=env).start()
    workers: list[HooklineServer] = []

    def hanging_work() -> str:
        """An endpoint whose receiver holds every delivery, and messages for it."""
        path = receiver.new_path("hang")
        receiver.script(path, then=Reply(200, delay=HANG_SECONDS))
        headers = {"Authorization": f"Bearer {api.token}"}
        with httpx.Client(base_url=api.base_url, headers=headers, timeout=10.0) as client:
            app = client.post("/api/v1/app", json={"name": path}).json()["id"]
            endpoint = client.post(f"/api/v1/app/{app}/endpoint", json={"url": receiver.url(path)})
            assert endpoint.status_code == 201, endpoint.text
            for seq in range(4 * PER_CHILD):
                body = {"eventType": "killmode.test", "payload": {"seq": seq}}
                assert client.post(f"/api/v1/app/{app}/msg", json=body).status_code == 202
        return path

    def start_worker(mode: str, path: str) -> HooklineServer:
        worker = HooklineServer(
            data,
            command="worker",
            token=api.token,
            env=env,
            name=f"worker-{mode}",
            args=("--processes", "2"),
        )
        workers.append(worker.start())
        # both children past their start (their signal handlers in place), each with work
        _wait(lambda: len(_events(worker, "worker_started")) == 2, "two workers started")
        _wait(lambda: receiver.inflight(path) == 2 * PER_CHILD, "deliveries in flight")
        return worker

    try:
        # KillMode=mixed: the main process alone gets SIGTERM.
        worker = start_worker("mixed", hanging_work())
        started = time.monotonic()
        assert worker.stop() == 0
        took = time.monotonic() - started
        exits = [e["status"] for e in _events(worker, "process_exited")]
        assert exits == [0, 0], worker.output_tail()
        assert len(_events(worker, "worker_released")) == 2, worker.output_tail()
        assert not _events(worker, "shutdown_forced"), worker.output_tail()
        assert took >= GRACE_SECONDS, f"stopped in {took:.1f} s, before the grace was over"

        # KillMode=control-group: every process of the unit gets SIGTERM.
        worker = start_worker("control-group", hanging_work())
        assert worker.pid is not None
        children = psutil.Process(worker.pid).children()
        assert len(children) == 2
        started = time.monotonic()
        for child in children:
            os.kill(child.pid, signal.SIGTERM)

        def children_stopping() -> bool:
            lines = _events(worker, "shutdown_started")
            return len([e for e in lines if "children" not in e]) == 2  # not the parent's

        _wait(children_stopping, "the children to begin their stop", timeout=GRACE_SECONDS)
        os.kill(worker.pid, signal.SIGTERM)
        # one signal each, as systemd sends: wait for the exit instead of stop(), whose own
        # SIGTERM could reach the parent after its handlers are gone
        _wait(lambda: not worker.running, "the parent to exit", timeout=GRACE_SECONDS + 10)
        assert worker.stop() == 0  # exited already: reaps it and returns its status
        took = time.monotonic() - started
        exits = [e["status"] for e in _events(worker, "process_exited")]
        forced = 128 + signal.SIGTERM
        assert exits == [forced, forced], worker.output_tail()
        assert not _events(worker, "worker_released"), worker.output_tail()
        assert took < GRACE_SECONDS, f"took {took:.1f} s: the children drained after all"
    finally:
        for worker in workers:
            worker.kill()
        api.kill()
