"""``hookline prune`` as an operator runs it: beside a running server, in batches, interruptible.

The server runs on SQLite and on PostgreSQL (``backend_env``); the interruption test fills a
SQLite file of its own so that it has enough batches to stop between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from hookline import ids
from hookline.models import Application, ClaimPolicy, Endpoint, Message
from tests.contract.conftest import completion_for
from tests.support.receiver import Receiver
from tests.support.server import HooklineServer
from tests.support.stores import opened_sqlite
from tests.support.wait import until

COMMAND_TIMEOUT_SECONDS = 60.0


def _env(server: HooklineServer) -> dict[str, str]:
    """What ``hookline prune`` needs to reach the server's database, and nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["HOOKLINE_DATABASE_URL"] = server.environment()["HOOKLINE_DATABASE_URL"]
    return env


def prune(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookline", "prune", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def test_prune_deletes_delivered_messages_and_keeps_those_still_to_be_sent(
    start_server: Callable[..., HooklineServer],
    receiver: Receiver,
    backend_env: dict[str, str],
    tmp_path: Path,
) -> None:
    server = start_server(env=backend_env)
    path = receiver.new_path("pruned")
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        a = client.post("/api/v1/app", json={"name": "prune"}).json()["id"]
        client.post(f"/api/v1/app/{a}/endpoint", json={"url": receiver.url(path)})
        sent = [
            client.post(f"/api/v1/app/{a}/msg", json={"eventType": "e", "payload": {"n": n}})
            for n in range(7)
        ]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        waiting = client.post(
            f"/api/v1/app/{a}/msg", json={"eventType": "e", "payload": {}, "deliverAt": later}
        ).json()["id"]
        delivered = [r.json()["id"] for r in sent]
        receiver.wait_for(path, 7)
        until(
            lambda: [
                client.get(f"/api/v1/app/{a}/attempt/msg/{m}").json()["data"] for m in delivered
            ],
            lambda found: all(found),
            what="every attempt recorded",
        )

        done = prune("--older-than", "0", "--batch-size", "3", env=_env(server), cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert "deleted 7 messages" in done.stderr, done.stderr
        assert "(3 batches)" in done.stderr, done.stderr
        assert "kept 1 with deliveries still pending" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        for msg_id in delivered:
            assert client.get(f"/api/v1/app/{a}/msg/{msg_id}").status_code == 404
        listed = client.get(f"/api/v1/app/{a}/msg").json()["data"]
        assert [m["id"] for m in listed] == [waiting]
        assert client.get(f"/api/v1/app/{a}/msg/{waiting}").status_code == 200

        everything = prune("--older-than", "0", "--include-pending", env=_env(server), cwd=tmp_path)
        assert everything.returncode == 0, everything.stderr
        assert "deleted 1 messages" in everything.stderr, everything.stderr
        assert client.get(f"/api/v1/app/{a}/msg/{waiting}").status_code == 404
        # the server goes on as before
        again = client.post(f"/api/v1/app/{a}/msg", json={"eventType": "e", "payload": {}})
        assert again.status_code == 202
        receiver.wait_for(path, 8)
    server.assert_running()


def test_a_negative_age_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["HOOKLINE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'h.db'}"
    for value in ("-1", "nan", "inf", "a week"):
        done = prune("--older-than", value, env=env, cwd=tmp_path)
        assert done.returncode == 2, (value, done.stderr)
        assert "--older-than" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "h.db").exists()  # refused before opening anything


async def _fill(db: Path, count: int) -> None:
    """``count`` delivered messages, each with its delivery and one attempt."""
    async with opened_sqlite(db) as store:
        org = await store.ensure_org("default", time.time())
        now = time.time()
        app = Application(
            id=ids.new(ids.APP), org_id=org.id, name="a", created_at=now, updated_at=now
        )
        await store.create_app(app)
        endpoint = Endpoint(
            id=ids.new(ids.ENDPOINT),
            app_id=app.id,
            url="https://x.example/h",
            created_at=now,
            updated_at=now,
        )
        await store.create_endpoint(endpoint)
        await asyncio.gather(
            *(
                store.create_message(
                    Message(
                        id=ids.new(ids.MESSAGE),
                        app_id=app.id,
                        event_type="e",
                        payload=b"{}",
                        created_at=now,
                    )
                )
                for _ in range(count)
            )
        )
        while claims := await store.claim_due(time.time(), ClaimPolicy(limit=1000), 60):
            await store.complete([completion_for(c) for c in claims], time.time())


def _counts(db: Path) -> tuple[int, int, int]:
    """Messages, deliveries and attempts in the file, read as another process would."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        found = [
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("messages", "deliveries", "attempts")
        ]
    return found[0], found[1], found[2]


def test_an_interrupted_prune_stops_between_batches_and_a_second_run_finishes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    count = 2000
    asyncio.run(_fill(db, count))
    assert _counts(db) == (count, count, count)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update({"HOOKLINE_DATABASE_URL": f"sqlite:///{db}", "HOOKLINE_LOG_LEVEL": "warning"})
    command = [sys.executable, "-m", "hookline", "prune", "--older-than", "0"]
    with (tmp_path / "prune.err").open("w+") as err:
        proc = subprocess.Popen(
            [*command, "--batch-size", "10", "--no-progress"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=tmp_path,
        )
        try:
            until(lambda: _counts(db)[0], lambda n: n < count, what="a first batch", timeout=20)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(COMMAND_TIMEOUT_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()

    assert code == 130, stderr
    assert "Traceback" not in stderr, stderr
    line = next(ln for ln in stderr.splitlines() if ln.startswith("interrupted after"))
    deleted = int(line.split("deleted ", 1)[1].split(" ", 1)[0])
    assert 0 < deleted < count, line
    left = count - deleted
    # every batch whole: no message without its delivery and attempt, none of those without it
    assert _counts(db) == (left, left, left), stderr

    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"deleted {left} messages" in done.stderr, done.stderr
    assert _counts(db) == (0, 0, 0)
