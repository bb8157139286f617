"""Traces from a real ``hookline serve``, configured the way an operator does: ``OTEL_*``.

With ``OTEL_TRACES_EXPORTER=console`` the spans come out on the server's stdout, which the test
reads back after a graceful stop (that flushes the batch). Without the extra (a stand-in
``opentelemetry`` package that refuses to import, first on ``PYTHONPATH``) the server delivers
as always, and with no ``OTEL_*`` variable it never even tries to import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.receiver import Receiver, Recorded
from tests.support.server import HooklineServer

WAIT_SECONDS = 10.0
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
# Variables of the developer's shell that would change what these servers do
NO_OTEL = {
    "OTEL_SDK_DISABLED": "",
    "OTEL_TRACES_EXPORTER": "",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    "OTEL_SERVICE_NAME": "",
    "OTEL_RESOURCE_ATTRIBUTES": "",
    "OTEL_TRACES_SAMPLER": "",
    "OTEL_PROPAGATORS": "",
}
BLOCKER = """
import os
with open(os.environ["BLOCKED_IMPORT_LOG"], "a") as log:
    log.write("opentelemetry\\n")
raise ImportError("No module named 'opentelemetry' (blocked by the test)")
"""


def _deliver_one(
    server: HooklineServer, receiver: Receiver, *script: int, headers: dict[str, str] | None = None
) -> tuple[str, list[Recorded]]:
    """Create an app, an endpoint on ``receiver`` and one message; wait for every attempt."""
    path = receiver.new_path("traced")
    receiver.script(path, *script, then=200)
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.token}"}
    ) as api:
        app_id = api.post("/api/v1/app", json={"name": "traced"}).json()["id"]
        created = api.post(f"/api/v1/app/{app_id}/endpoint", json={"url": receiver.url(path)})
        assert created.status_code == 201, created.text
        resp = api.post(
            f"/api/v1/app/{app_id}/msg",
            json={"eventType": "invoice.paid", "payload": {"n": 1}},
            headers=headers or {},
        )
        assert resp.status_code == 202, resp.text
    return resp.json()["id"], receiver.wait_for(path, len(script) + 1, timeout=WAIT_SECONDS)


def _spans(output: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects between the log lines)."""
    decoder = json.JSONDecoder()
    found = []
    at = output.find('{\n    "name": ')
    while at != -1:
        span, end = decoder.raw_decode(output, at)
        found.append(span)
        at = output.find('{\n    "name": ', end)
    return found


def test_console_traces_from_a_real_server_link_ingest_attempts_and_receiver(
    start_server: Callable[..., HooklineServer], receiver: Receiver
) -> None:
    server = start_server(
        env={**NO_OTEL, "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50"}
    )
    msg_id, requests = _deliver_one(
        server,
        receiver,
        500,
        headers={"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"},
    )
    assert server.stop() == 0  # flushes the spans still batched
    found = _spans(server.output())
    [ingest] = [s for s in found if s["name"] == "hookline.ingest"]
    attempts = [s for s in found if s["name"] == "hookline.attempt"]
    assert len(attempts) == 2, found

    assert ingest["resource"]["attributes"]["service.name"] == "hookline"
    assert ingest["kind"] == "SpanKind.SERVER"
    assert ingest["attributes"]["messaging.message.id"] == msg_id
    assert ingest["context"]["trace_id"] == f"0x{CLIENT_TRACE_ID}"
    assert ingest["parent_id"] == f"0x{CLIENT_SPAN_ID}"
    by_number = {s["attributes"]["hookline.attempt.number"]: s for s in attempts}
    for number, request in enumerate(requests, 1):
        span = by_number[number]
        assert span["kind"] == "SpanKind.CLIENT"
        assert span["parent_id"] is None
        assert span["attributes"]["messaging.message.id"] == msg_id
        assert [link["context"]["span_id"] for link in span["links"]] == [
            ingest["context"]["span_id"]
        ]
        version, trace_id, span_id, _flags = request.headers["traceparent"].split("-")
        assert (version, f"0x{trace_id}", f"0x{span_id}") == (
            "00",
            span["context"]["trace_id"],
            span["context"]["span_id"],
        )
    assert by_number[1]["attributes"]["http.response.status_code"] == 500
    assert by_number[2]["attributes"]["hookline.attempt.outcome"] == "success"


@pytest.fixture
def without_extra(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment of a server whose ``import opentelemetry`` fails, and the log of tries."""
    blocked = tmp_path / "blocked"
    (blocked / "opentelemetry").mkdir(parents=True)
    (blocked / "opentelemetry" / "__init__.py").write_text(BLOCKER)
    tries = tmp_path / "import-tries.log"
    path = os.pathsep.join(p for p in (str(blocked), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BLOCKED_IMPORT_LOG": str(tries)}, tries


@pytest.mark.parametrize("configured", [False, True], ids=["no-otel-variables", "otel-endpoint"])
def test_without_the_extra_a_server_delivers_as_always(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    without_extra: tuple[dict[str, str], Path],
    configured: bool,
) -> None:
    env, tries = without_extra
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"} if configured else {}
    server = start_server(env={**NO_OTEL, **env, **otel})
    _, [request] = _deliver_one(server, receiver)
    assert "traceparent" not in request.headers
    assert server.stop() == 0
    output = server.output()
    if configured:  # asked for traces: one warning with the install hint, then on as always
        assert tries.read_text() == "opentelemetry\n"
        [line] = [json.loads(x) for x in output.splitlines() if '"tracing_unavailable"' in x]
        assert "hookline[otel]" in line["hint"]
    else:  # not asked: never imported at all
        assert not tries.exists()
        assert "tracing_unavailable" not in output


# In a fresh interpreter: the test process has imported OpenTelemetry already.
_NOTHING_IMPORTED = textwrap.dedent(
    """
    import sys
    from hookline import app, cli, settings
    hl = app.Hookline.build(settings.Settings(database_url="memory://"), "serve")
    assert hl.tracing is None
    app.asgi(hl)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print(",".join(leaked) or "none")
    """
)


@pytest.mark.parametrize(
    "otel_env",
    [{}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}],
    ids=["unset", "sdk-disabled"],
)
def test_with_the_extra_installed_but_not_configured_nothing_of_it_is_imported(
    otel_env: dict[str, str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HOOKLINE_"))}
    env.update(otel_env)
    done = subprocess.run(
        [sys.executable, "-c", _NOTHING_IMPORTED],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
