"""The OpenAPI document against the running server: a seeded, bounded schemathesis run.

schemathesis reads ``/api/v1/openapi.json`` and sends what it describes (valid requests) and what
it forbids (wrong types, out-of-range values, missing and unknown fields, unsupported methods),
then checks every answer against the document: no 5xx, only documented statuses, content types
and headers, bodies that match their schemas, 405s that carry ``Allow``, bad input refused.

The server is seeded first (an application, an endpoint on a local receiver, a delivered message
with an attempt) with ``hookline serve``; the fuzzing then runs against ``hookline api`` on the
same database. No worker runs while schemathesis creates endpoints with URLs of its choosing, so
no delivery can leave the machine.

Checks left out, and why:
- ``positive_data_acceptance`` (a request the document allows must succeed): an endpoint URL
  that matches the document is still refused when its host is not public, and an integer field
  is read from a JSON integer only (``5.0`` is an integer to JSON Schema, not to hookline nor to
  Svix's serde). Both answer a documented 422.
- ``use_after_free`` on event types only: deleting an event type archives it, as in Svix, so it
  can still be read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

SEED = 20261202
MAX_EXAMPLES = 20  # per operation and phase; the whole run takes about a minute here
# Each of the two passes: 15-40 s here alone, about twice that beside other tests (it is
# CPU-bound), so pytest's 120 s for a whole test is too short for both.
RUN_TIMEOUT_SECONDS = 150.0
# schemathesis walks schemas recursively; Python 3.11's default limit of 1000 frames ends some
# of its walks with a SystemError from ast.parse ("AST constructor recursion depth mismatch").
RUNNER = (
    "import sys; sys.setrecursionlimit(20000); "
    "from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
)
CASES = re.compile(r"(\d+) generated")


def _seed(server: HooklineServer, receiver: Receiver) -> dict[str, str]:
    """One of each resource, plus doomed ones for the DELETE operations to take."""
    with httpx.Client(
        base_url=server.base_url + "/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10.0,
    ) as api:

        def post(path: str, body: dict[str, object], status: int = 201) -> dict[str, str]:
            response = api.post(path, json=body)
            assert response.status_code == status, response.text
            answer: dict[str, str] = response.json()
            return answer

        for name in ("fuzz.event", "fuzz.doomed"):
            post("/event-type", {"name": name, "description": name})
        app = post("/app", {"name": "fuzz", "uid": "fuzz-app"})["id"]
        doomed_app = post("/app", {"name": "doomed"})["id"]
        hook = receiver.new_path("fuzz")
        endpoint = post(f"/app/{app}/endpoint", {"url": receiver.url(hook)})["id"]
        doomed_endpoint = post(f"/app/{app}/endpoint", {"url": receiver.url(hook)})["id"]
        msg = post(f"/app/{app}/msg", {"eventType": "fuzz.event", "payload": {"a": 1}}, 202)["id"]
        receiver.wait_for(hook, 2)
        deadline = time.monotonic() + 10
        attempts: list[dict[str, str]] = []
        while len(attempts) < 2 and time.monotonic() < deadline:
            attempts = api.get(f"/app/{app}/attempt/msg/{msg}").json()["data"]
            time.sleep(0.05)
        assert attempts, "the seeded message was never attempted"
    return {
        "app": app,
        "doomed_app": doomed_app,
        "endpoint": endpoint,
        "doomed_endpoint": doomed_endpoint,
        "msg": msg,
        "attempt": attempts[0]["id"],
    }


def _config(token: str, seeded: dict[str, str] | None) -> str:
    """The run's settings; ``seeded`` pins every path parameter to the seeded resources."""
    config = f"""
seed = {SEED}
headers = {{ Authorization = "Bearer {token}" }}

[generation]
max-examples = {MAX_EXAMPLES}
database = "none"

[checks]
positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "get_event_type"
checks.use_after_free.enabled = false
"""
    if seeded is not None:
        config += f"""
[parameters]
app_id = "{seeded["app"]}"
endpoint_id = "{seeded["endpoint"]}"
msg_id = "{seeded["msg"]}"
attempt_id = "{seeded["attempt"]}"
event_type_name = "fuzz.event"
"""
    return config


def _schemathesis(tmp_path: Path, name: str, config: str, *args: str) -> tuple[int, int, str]:
    """Run schemathesis; (exit status, cases generated, output)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            "--config-file",
            str(path),
            "run",
            *args,
            "--workers",
            "1",  # two threads crash Python 3.11's ast.parse inside hypothesis now and then
            "--no-color",
            "--report-dir",
            str(tmp_path / f"{name}-report"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        cwd=tmp_path,
        env=env,
    )
    output = run.stdout + run.stderr
    cases = CASES.findall(output)
    return run.returncode, int(cases[-1]) if cases else 0, output


@pytest.mark.timeout(2 * RUN_TIMEOUT_SECONDS + 30)
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "hl"
    seeding = HooklineServer(data).start()
    try:
        seeded = _seed(seeding, receiver)
    finally:
        seeding.stop()
    api = HooklineServer(data, command="api", token=seeding.token).start()
    schema = f"{api.base_url}/api/v1/openapi.json"
    try:
        # Pinned to the seeded resources, so that every operation reaches past its 404; DELETE
        # would take them away from the rest, so it runs in the second pass only.
        pinned = _schemathesis(
            tmp_path, "pinned", _config(api.token, seeded), schema, "--exclude-method", "DELETE"
        )
        # Free: ids of its own making, and sequences (create, read, delete) from the links.
        free = _schemathesis(tmp_path, "free", _config(api.token, None), schema)
        assert api.running, "hookline api died under the fuzzing"
    finally:
        api.stop()
    with capsys.disabled():
        print(
            f"\nschemathesis (seed {SEED}): {pinned[1]} + {free[1]} cases,"
            f" exit status {pinned[0]} and {free[0]}"
        )
    for status, cases, output in (pinned, free):
        assert status == 0, output[-20000:]
        assert cases > 1000, output[-5000:]
