"""The PostgreSQL the tests get: reachable, a fresh empty database per test, loopback only.

The store's contract suite and the integration tests trust ``postgres_url`` to hand each test
a database of its own; if two tests shared one, or one saw another's tables, their failures
would depend on test order.
"""

from __future__ import annotations

import socket

import asyncpg
import pytest

from tests.support import postgres

SEEN: list[str] = []  # the databases earlier runs of test_fresh_empty_database were given


async def test_connects_and_answers(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("run", [1, 2])
async def test_fresh_empty_database(postgres_url: str, run: int) -> None:
    """Each run finds no tables, leaves one behind, and sees the earlier run's database gone."""
    conn = await asyncpg.connect(postgres_url)
    try:
        name = await conn.fetchval("select current_database()")
        tables = await conn.fetch(
            "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname not in ('pg_catalog', 'information_schema')"
            " and n.nspname not like 'pg_toast%'"
        )
        assert tables == []
        await conn.execute("create table left_behind (id int)")
        databases = {r[0] for r in await conn.fetch("select datname from pg_database")}
    finally:
        await conn.close()
    assert name not in SEEN
    assert databases.isdisjoint(SEEN)  # dropped after its test
    SEEN.append(name)


async def test_listens_on_loopback_only(
    postgres_cluster: postgres.PostgresServer, postgres_url: str
) -> None:
    if not isinstance(postgres_cluster, postgres.PostgresCluster):
        pytest.skip(f"{postgres.ENV_URL} names a server that listens where its owner said")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("show listen_addresses") == "127.0.0.1"
        assert str(await conn.fetchval("select inet_server_addr()")) == "127.0.0.1"
    finally:
        await conn.close()
    # Another loopback address on the same port: nothing listens there.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", postgres_cluster.port), timeout=1).close()
