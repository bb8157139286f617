"""The ``hookline`` command as an operator uses it: tokens, migrations, first start, bad settings.

Every command runs as a subprocess of ``python -m hookline`` with a clean ``HOOKLINE_*``
environment; servers come from the shared ``start_server`` fixture, which kills them afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.server import HooklineServer, free_port

COMMAND_TIMEOUT_SECONDS = 30.0
STARTUP_TIMEOUT_SECONDS = 20.0
TOKEN = re.compile(r"hl_[A-Za-z0-9_-]{20,}")
FIRST_TOKEN_LINE = "Your API token (shown once, store it now)"


def _env(db: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["HOOKLINE_DATABASE_URL"] = f"sqlite:///{db.resolve()}"
    env.update(settings)
    return env


def hookline(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run one ``hookline`` command to completion (``TimeoutExpired`` if it does not end)."""
    return subprocess.run(
        [sys.executable, "-m", "hookline", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _serve_once(env: Mapping[str, str], cwd: Path, port: int) -> tuple[int, str, str]:
    """Start ``hookline serve``, wait until healthy, SIGTERM it; return (status, stdout, stderr).

    Output goes to files, not pipes, so a chatty server cannot block on a full pipe.
    """
    out_path, err_path = cwd / "serve.out", cwd / "serve.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookline", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**env, "HOOKLINE_LISTEN": f"127.0.0.1:{port}"},
            cwd=cwd,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
            while True:
                assert proc.poll() is None, err_path.read_text()
                try:
                    if client.get("/api/v1/health").status_code == 204:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(COMMAND_TIMEOUT_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, out_path.read_text(), err_path.read_text()


def _database_bytes(db: Path) -> bytes:
    """The database file and its WAL: a committed row may still live only in the WAL."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


# token create ------------------------------------------------------------------------------------


def test_token_create_prints_a_working_token_and_stores_only_its_hash(
    start_server: Callable[..., HooklineServer],
) -> None:
    server = start_server()
    env = server.environment()
    done = hookline(
        "token", "create", "--org", "acme", "--name", "ci", env=env, cwd=server.data_dir
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert TOKEN.fullmatch(token), done.stdout  # stdout is the token alone: $(hookline token …)
    assert token not in done.stderr
    server.assert_running()

    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        auth = {"Authorization": f"Bearer {token}"}
        created = client.post("/api/v1/app", json={"name": "ci app"}, headers=auth)
        assert created.status_code == 201, created.text
        listed = client.get("/api/v1/app", headers=auth).json()["data"]
        assert [a["id"] for a in listed] == [created.json()["id"]]
        # acme is its own tenant: the admin token of the default organisation does not see it
        admin = {"Authorization": f"Bearer {server.token}"}
        assert client.get("/api/v1/app", headers=admin).json()["data"] == []
        unknown = client.get("/api/v1/app", headers={"Authorization": f"Bearer {token}x"})
        assert unknown.status_code == 401

    server.stop()
    stored = _database_bytes(server.db_path)
    assert token.encode() not in stored
    assert server.token.encode() not in stored  # nor the seeded admin token
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    with sqlite3.connect(server.db_path) as conn:
        (names,) = conn.execute("SELECT group_concat(name) FROM tokens").fetchone()
    assert "ci" in names.split(",")


def test_token_create_works_before_the_first_start(tmp_path: Path) -> None:
    """An operator may mint the first token on an empty database; serve then prints none."""
    db = tmp_path / "h.db"
    env = _env(db)
    done = hookline("token", "create", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert TOKEN.fullmatch(token), done.stdout
    code, out, err = _serve_once(env, tmp_path, free_port())
    assert code == 0, err
    assert FIRST_TOKEN_LINE not in err
    assert not TOKEN.search(err + out)
    assert token.encode() not in _database_bytes(db)


def test_token_create_refuses_the_organisation_reserved_for_operational_webhooks(
    tmp_path: Path,
) -> None:
    done = hookline(
        "token",
        "create",
        "--org",
        "_hookline_operational",
        env=_env(tmp_path / "h.db"),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "reserved" in done.stderr
    assert not TOKEN.search(done.stdout)


# migrate -----------------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "h.db"
    env = _env(db)
    for _ in range(2):
        done = hookline("migrate", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "migrations applied" in done.stderr
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version >= 1
    assert {"applications", "endpoints", "messages", "tokens"} <= tables
    # migrate creates no token: the first start still prints one
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


# first start -------------------------------------------------------------------------------------


def test_first_start_prints_a_token_once(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    # the console banner, as at a terminal (JSON logs: test_observability.py's token test)
    env = _env(db, HOOKLINE_ALLOWED_SUBNETS="127.0.0.0/8", HOOKLINE_LOG_FORMAT="console")
    port = free_port()

    code, out, err = _serve_once(env, tmp_path, port)
    assert code == 0, err
    assert err.count(FIRST_TOKEN_LINE) == 1, err
    tokens = set(TOKEN.findall(err))
    assert len(tokens) == 1, err
    (token,) = tokens
    assert token not in out  # secrets go to the terminal (stderr), not to piped stdout
    assert f"http://127.0.0.1:{port}" in err
    assert token.encode() not in _database_bytes(db)

    code, out, err = _serve_once(env, tmp_path, port)
    assert code == 0, err
    assert FIRST_TOKEN_LINE not in err
    assert not TOKEN.search(err + out), err
    assert "$HOOKLINE_TOKEN" in err  # the hint still shows how to call the API

    # the token printed on the first start keeps working on later starts
    server = subprocess.Popen(
        [sys.executable, "-m", "hookline", "serve"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "HOOKLINE_LISTEN": f"127.0.0.1:{port}"},
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
            while True:
                try:
                    resp = client.get("/api/v1/app", headers={"Authorization": f"Bearer {token}"})
                    break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
        assert resp.status_code == 200, resp.text
    finally:
        server.kill()
        server.wait()


def test_seeded_admin_token_is_never_printed(tmp_path: Path) -> None:
    env = _env(tmp_path / "h.db", HOOKLINE_ADMIN_TOKEN="hl_seeded_by_the_operator_0123456789")
    code, out, err = _serve_once(env, tmp_path, free_port())
    assert code == 0, err
    assert FIRST_TOKEN_LINE not in err
    assert "hl_seeded_by_the_operator" not in err + out


# bad settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOOKLINE_RETRY_SCHEDULE", "abc"),
        ("HOOKLINE_RETRY_SCHEDULE", "5,-1"),
        ("HOOKLINE_REQUEST_TIMEOUT", "soon"),
        ("HOOKLINE_MAX_PAYLOAD_BYTES", "1MB"),
        ("HOOKLINE_ALLOWED_SUBNETS", "not-a-subnet"),
        ("HOOKLINE_WORKER_CONCURRENCY", "many"),
        ("HOOKLINE_LISTEN", "nonsense"),
        ("HOOKLINE_LISTEN", "127.0.0.1:notaport"),
        ("HOOKLINE_LISTEN", "127.0.0.1:99999"),  # must not wrap around to another port
        ("HOOKLINE_DATABASE_URL", "postgres://db/hookline"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_bad_setting_exits_non_zero_naming_it(
    tmp_path: Path, command: str, name: str, value: str
) -> None:
    db = tmp_path / "h.db"
    done = hookline(command, env=_env(db, **{name: value}), cwd=tmp_path)
    assert done.returncode != 0
    assert name in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # a message, not a crash
    assert not db.exists()  # refused before touching anything


def test_bad_setting_in_config_file_names_it(tmp_path: Path) -> None:
    config = tmp_path / "hookline.toml"
    config.write_text('retry_schedule = "abc"\n')
    done = hookline("--config", str(config), "migrate", env=_env(tmp_path / "h.db"), cwd=tmp_path)
    assert done.returncode != 0
    assert "RETRY_SCHEDULE" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_setting_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "hookline.toml"
    config.write_text('retry_shedule = "5,10"\n')  # a typo must not be silently ignored
    done = hookline("--config", str(config), "migrate", env=_env(tmp_path / "h.db"), cwd=tmp_path)
    assert done.returncode != 0
    assert "retry_shedule" in done.stderr, done.stderr


def test_busy_port_exits_non_zero_at_once(tmp_path: Path) -> None:
    """Another process on the port: hookline says so and exits instead of running API-less."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(tmp_path / "h.db", HOOKLINE_LISTEN=f"127.0.0.1:{port}")
        done = hookline("serve", env=env, cwd=tmp_path, timeout=15.0)
    assert done.returncode != 0
    assert "address already in use" in done.stderr.lower(), done.stderr
    assert str(port) in done.stderr, done.stderr
