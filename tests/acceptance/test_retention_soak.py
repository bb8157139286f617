"""Soak: under steady traffic with a short retention, the SQLite database stops growing.

A real ``hookline serve`` on SQLite keeps payloads ``PAYLOAD_SECONDS`` and whole messages
``MESSAGE_SECONDS`` (``HOOKLINE_PAYLOAD_RETENTION_DAYS`` and ``HOOKLINE_MESSAGE_RETENTION_DAYS``
as fractions of a day), with the cleaner passing every ``HOOKLINE_RETENTION_INTERVAL`` seconds.
The test offers ``RATE`` messages a second for ``SECONDS`` seconds, each delivered to a real
receiver, and samples the file's size (the database plus its ``-wal``) as it goes.

Once the retention windows are full, the cleaner deletes about as much as comes in and the
freed pages are reused (``auto_vacuum`` is NONE), so the database file holds its size: it may
grow by less than ``GROWTH_BOUND`` over the second half (measured at 40 messages/s for 40 s: 0 %;
the same run without retention grew it by about 90 %, 4.0 to 7.5 MB). The rows kept are a
retention window's worth.
The ``-wal`` beside it is the writer's ring of recent pages, 10-20 MB at this rate with or
without retention and swinging by megabytes between checkpoints; it must stay under the bound
the checkpointer keeps it to (``WAL_TRUNCATE_BYTES`` plus one tick's writes).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from hookline.store import sqlite_writer
from tests.support.receiver import Receiver
from tests.support.server import HooklineServer

DAY = 86400.0
PAYLOAD_SECONDS = 2.0
MESSAGE_SECONDS = 5.0
RATE = 60.0  # messages offered per second
SECONDS = 24.0  # of steady ingest (the retention windows are reached after ~7 s)
PAYLOAD = {"blob": "x" * 2000, "note": "about 2 KB, a typical webhook"}
GROWTH_BOUND = 0.20  # share the file may grow by between the middle and the end
# What the writer may append to the WAL between two checkpoint ticks at this rate (one second
# of 60 messages of about 2 KB, each written a few times over): far less than this.
WAL_TICK_ALLOWANCE_BYTES = 8 * 1024 * 1024


def file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def count(db: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_the_database_file_holds_its_size_under_steady_traffic_with_short_retention(
    start_server: Callable[..., HooklineServer], receiver: Receiver
) -> None:
    server = start_server(
        env={
            "HOOKLINE_PAYLOAD_RETENTION_DAYS": repr(PAYLOAD_SECONDS / DAY),
            "HOOKLINE_MESSAGE_RETENTION_DAYS": repr(MESSAGE_SECONDS / DAY),
            "HOOKLINE_RETENTION_INTERVAL": "0.5",
            "HOOKLINE_LOG_LEVEL": "info",
        }
    )
    path = receiver.new_path("soak")
    headers = {"Authorization": f"Bearer {server.token}"}
    samples: list[tuple[float, int, int]] = []  # (seconds since the start, database, -wal)
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(0.25):
            db, wal = file_bytes(server.db_path), file_bytes(Path(f"{server.db_path}-wal"))
            samples.append((time.monotonic() - started, db, wal))

    sampler = threading.Thread(target=sample, daemon=True)
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10.0) as client:
        a = client.post("/api/v1/app", json={"name": "soak"}).json()["id"]
        client.post(f"/api/v1/app/{a}/endpoint", json={"url": receiver.url(path)})
        sampler.start()
        started = time.monotonic()
        sent = 0
        first = None
        try:
            while (elapsed := time.monotonic() - started) < SECONDS:
                if sent < elapsed * RATE:  # paced: the offered rate does not follow latency
                    body = {"eventType": "soak.tick", "payload": {**PAYLOAD, "n": sent}}
                    resp = client.post(f"/api/v1/app/{a}/msg", json=body)
                    assert resp.status_code == 202, resp.text
                    first = first or resp.json()["id"]
                    sent += 1
                else:
                    time.sleep(0.002)
        finally:
            done.set()
            sampler.join(5)
        receiver.wait_for(path, sent, timeout=30)
        # what retention did, seen through the API: the first message is gone entirely
        assert client.get(f"/api/v1/app/{a}/msg/{first}").status_code == 404
    server.assert_running()

    assert sent >= RATE * SECONDS * 0.9, f"only {sent} messages could be offered"
    db = server.db_path
    # the rows kept are about a retention window's worth, not the whole run's
    assert count(db, "SELECT count(*) FROM messages") < RATE * (MESSAGE_SECONDS + 5)
    assert count(db, "SELECT count(*) FROM messages WHERE length(payload) > 0") < RATE * (
        PAYLOAD_SECONDS + 5
    )

    def largest_database(since: float, until: float) -> int:
        return max(db for t, db, _ in samples if since <= t <= until)

    shown = ", ".join(f"{t:.0f}s={db}+{wal}" for t, db, wal in samples[::8])
    # The database file: flat once the windows are full (without retention this run grows it
    # by about 90 % over the second half, 4.0 to 7.5 MB).
    middle = largest_database(SECONDS / 2 - 2, SECONDS / 2)
    end = largest_database(SECONDS - 2, SECONDS)
    assert end <= middle * (1 + GROWTH_BOUND), f"the database grew {middle} -> {end}: {shown}"
    # Its WAL: the writer's ring of recent pages, which restarts once checkpoints catch up. It is
    # 10-20 MB at this rate whatever retention does, and on a loaded machine (PASSIVE
    # checkpoints falling behind) it reached 34 MB; what bounds it is the truncate past
    # WAL_TRUNCATE_BYTES, plus what the writer appends between two ticks. It must stay under
    # that bound, not grow as the data does.
    wal_peak = max(wal for _, _, wal in samples)
    wal_bound = sqlite_writer.WAL_TRUNCATE_BYTES + WAL_TICK_ALLOWANCE_BYTES
    assert wal_peak <= wal_bound, f"the WAL reached {wal_peak} bytes: {shown}"
