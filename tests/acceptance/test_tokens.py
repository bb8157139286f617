"""Tokens as an operator manages them: the first start, ``token list``/``revoke``, rotation.

Also what a wrong ``HOOKLINE_DATABASE_URL`` prints. Every command is a subprocess of
``python -m hookline`` (the helpers of ``test_cli.py``); servers come from ``start_server`` or
are ``HooklineServer`` context managers, killed afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hookline import cache
from tests.acceptance.test_cli import (
    FIRST_TOKEN_LINE,
    TOKEN,
    _database_bytes,
    _env,
    _serve_once,
    hookline,
)
from tests.support.server import HooklineServer, free_port

REVOKE_DEADLINE_SECONDS = cache.TOKEN_SECONDS + 1.5  # the cache lifetime, plus polling slack


def _token_ids(listing: str) -> list[str]:
    return [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]


def _status(base_url: str, token: str) -> int:
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        return client.get("/api/v1/app", headers={"Authorization": f"Bearer {token}"}).status_code


# first start -------------------------------------------------------------------------------------


def test_a_port_clash_on_the_first_start_creates_no_token_and_the_next_start_prints_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    env = _env(db, HOOKLINE_LOG_FORMAT="console")  # the banner on stderr, as at a terminal
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        clash = hookline("serve", env={**env, "HOOKLINE_LISTEN": f"127.0.0.1:{port}"}, cwd=tmp_path)
    assert clash.returncode != 0
    assert "address already in use" in clash.stderr.lower(), clash.stderr
    assert not TOKEN.search(clash.stderr + clash.stdout)  # nothing shown ...
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)  # ... none stored

    code, _out, err = _serve_once(env, tmp_path, free_port())
    assert code == 0, err
    assert err.count(FIRST_TOKEN_LINE) == 1, err
    (token,) = set(TOKEN.findall(err))
    assert hashlib.sha256(token.encode()).hexdigest().encode() in _database_bytes(db)
    listed = hookline("token", "list", env=env, cwd=tmp_path)
    assert len(_token_ids(listed.stdout)) == 1, listed.stdout
    assert "first" in listed.stdout


def test_a_later_start_says_how_to_get_a_token(tmp_path: Path) -> None:
    env = _env(tmp_path / "h.db")
    assert hookline("token", "create", env=env, cwd=tmp_path).returncode == 0
    code, _out, err = _serve_once(env, tmp_path, free_port())
    assert code == 0, err
    assert FIRST_TOKEN_LINE not in err
    assert "hookline token create" in err and "hookline token list" in err, err


# token list --------------------------------------------------------------------------------------


def test_token_list_shows_ids_names_orgs_and_last_use_but_no_secret(
    start_server: Callable[..., HooklineServer],
) -> None:
    server = start_server()
    env, cwd = server.environment(), server.data_dir
    ci = hookline("token", "create", "--org", "acme", "--name", "ci", env=env, cwd=cwd)
    assert ci.returncode == 0, ci.stderr
    secret = ci.stdout.strip()
    assert _status(server.base_url, secret) == 200  # ci is used once; admin never is

    deadline = time.monotonic() + 10.0
    while True:  # the API writes the last use off the request path, moments later
        listed = hookline("token", "list", env=env, cwd=cwd)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[1]: line.split() for line in listed.stdout.splitlines()[1:]}
        if rows["ci"][-1] != "never" or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    header = listed.stdout.splitlines()[0].split()
    assert header == ["ID", "NAME", "ORGANISATION", "CREATED", "LAST", "USED"]
    assert set(rows) == {"admin", "ci"}
    assert rows["ci"][0].startswith("tok_") and rows["ci"][2] == "acme"
    assert rows["admin"][2] == "default"
    assert rows["admin"][-1] == "never"
    assert rows["ci"][-1].endswith("Z"), listed.stdout  # an ISO time in UTC, not "never"
    output = listed.stdout + listed.stderr
    for value in (secret, server.token):
        assert value not in output
        assert hashlib.sha256(value.encode()).hexdigest() not in output


def test_token_create_refuses_the_name_of_the_seeded_admin_token(tmp_path: Path) -> None:
    done = hookline("token", "create", "--name", "admin", env=_env(tmp_path / "h.db"), cwd=tmp_path)
    assert done.returncode == 2
    assert "HOOKLINE_ADMIN_TOKEN" in done.stderr
    assert not TOKEN.search(done.stdout)


# token revoke ------------------------------------------------------------------------------------


def test_a_revoked_token_is_refused_within_the_token_cache_lifetime(
    start_server: Callable[..., HooklineServer],
) -> None:
    server = start_server()
    env, cwd = server.environment(), server.data_dir
    secret = hookline("token", "create", "--name", "ci", env=env, cwd=cwd).stdout.strip()
    assert _status(server.base_url, secret) == 200  # now in the running API's cache
    (token_id,) = [
        line.split()[0]
        for line in hookline("token", "list", env=env, cwd=cwd).stdout.splitlines()
        if " ci " in line
    ]

    done = hookline("token", "revoke", token_id, env=env, cwd=cwd)
    revoked_at = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert token_id in done.stderr

    while _status(server.base_url, secret) != 401:
        assert time.monotonic() - revoked_at < REVOKE_DEADLINE_SECONDS, "still accepted"
        time.sleep(0.25)
    assert _status(server.base_url, server.token) == 200  # the other tokens keep working
    assert token_id not in _token_ids(hookline("token", "list", env=env, cwd=cwd).stdout)

    again = hookline("token", "revoke", token_id, env=env, cwd=cwd)
    assert again.returncode == 1
    assert "no token" in again.stderr and "Traceback" not in again.stderr


# a seeded admin token that changes ---------------------------------------------------------------


def test_changing_the_seeded_admin_token_invalidates_the_old_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "hl"
    old, new = "hl_seeded_old_0123456789abcdef", "hl_seeded_new_0123456789abcdef"
    with HooklineServer(data_dir, token=old) as first:
        env = first.environment()
        other = hookline("token", "create", "--name", "ci", env=env, cwd=data_dir).stdout.strip()
        assert _status(first.base_url, old) == 200
        first.stop()

    with HooklineServer(data_dir, token=new) as second:
        assert _status(second.base_url, new) == 200
        assert _status(second.base_url, old) == 401
        assert _status(second.base_url, other) == 200  # tokens not seeded are left alone
        listed = hookline("token", "list", env=second.environment(), cwd=data_dir).stdout
        names = [line.split()[1] for line in listed.splitlines()[1:]]
        assert sorted(names) == ["admin", "ci"], listed
        second.stop()

    with HooklineServer(data_dir, token=old) as third:  # back to the old value: it works again
        assert _status(third.base_url, old) == 200
        assert _status(third.base_url, new) == 401


# a wrong database URL ----------------------------------------------------------------------------


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Make a file or directory unwritable, even for root (then with ``chattr +i``)."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a path read-only")
        made.append(path)

    yield make
    for path in reversed(made):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


def _existing_database(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    return path


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("empty path", "names no database file"),
        ("directory", "is a directory"),
        ("not a database", "is not a SQLite database"),
        ("directory cannot be created", "cannot create the directory"),
        ("read-only directory", "not writable"),
        ("read-only file", "read-only"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_wrong_database_url_gets_one_line_naming_the_setting(
    tmp_path: Path, read_only: Callable[[Path], None], command: str, case: str, problem: str
) -> None:
    url = "sqlite:///" + str(tmp_path)  # absolute: sqlite:////tmp/...
    if case == "empty path":
        url = "sqlite:///"
    elif case == "directory":
        (tmp_path / "data").mkdir()
        url += "/data"
    elif case == "not a database":
        (tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 100)
        url += "/notes.db"
    elif case == "directory cannot be created":
        (tmp_path / "a-file").write_text("")
        url += "/a-file/sub/h.db"
    elif case == "read-only directory":
        (tmp_path / "ro").mkdir()
        read_only(tmp_path / "ro")
        url += "/ro/h.db"
    else:
        (tmp_path / "ro").mkdir()
        read_only(_existing_database(tmp_path / "ro" / "h.db"))
        url += "/ro/h.db"
    env = {**_env(tmp_path / "unused.db"), "HOOKLINE_DATABASE_URL": url}

    done = hookline(command, env=env, cwd=tmp_path, timeout=15.0)

    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "HOOKLINE_DATABASE_URL" in line]
    assert len(lines) == 1, done.stderr
    assert problem in lines[0], done.stderr
    if case != "empty path":  # that one is a settings error: click's usage lines come with it
        assert done.stderr.strip() == lines[0]
    assert not TOKEN.search(done.stderr + done.stdout)
