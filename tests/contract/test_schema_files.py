"""Migrating an empty database from zero gives exactly the schema in the dialect's schema.sql.

``schema.sql`` is what a reader takes for the schema, and the migrations are what every
database actually runs: if they drift, the file misleads whoever reviews a query or writes the
next migration against it. Each dialect compares the two as a ``schema_files.SchemaDump``
(its objects with normalised SQL, plus the migration version), with the helpers in
``tests/support/schema_files.py``.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from tests.support import schema_files
from tests.support.postgres import PostgresServer

SQLITE_HINT = "sql/sqlite/schema.sql is not what the migrations build; regenerate it: " + (
    schema_files.REGENERATE.format(dialect="sqlite")
)


async def test_sqlite_migrations_from_zero_equal_schema_sql(tmp_path: Path) -> None:
    migrated, from_file = tmp_path / "migrated.db", tmp_path / "schema.db"
    await schema_files.migrate_sqlite(migrated)
    schema_files.load_sqlite_schema(from_file)
    found = schema_files.differences(
        schema_files.sqlite_dump(from_file), schema_files.sqlite_dump(migrated)
    )
    assert not found, "\n".join([SQLITE_HINT, *found])


async def test_sqlite_schema_sql_is_the_generated_text(tmp_path: Path) -> None:
    """Hand edits would be overwritten by the next regeneration, so none may creep in."""
    migrated = tmp_path / "migrated.db"
    await schema_files.migrate_sqlite(migrated)
    text = schema_files.schema_path("sqlite").read_text()
    assert text == schema_files.render_sqlite(migrated), SQLITE_HINT


# PostgreSQL: the catalogs say what a database holds (columns with their types, collations,
# nullability and defaults; indexes and constraints as PostgreSQL spells them back), so two
# databases built different ways compare exactly. hookline_migrations is migrate()'s own
# bookkeeping, created by it and kept out of schema.sql.
_PG_CATALOG = """
SELECT 'column' AS kind, table_name || '.' || column_name AS name,
       concat_ws(' ', data_type, collation_name, is_nullable, column_default) AS definition
  FROM information_schema.columns
 WHERE table_schema = 'public' AND table_name <> 'hookline_migrations'
UNION ALL
SELECT 'index', indexname, indexdef
  FROM pg_indexes
 WHERE schemaname = 'public' AND tablename <> 'hookline_migrations'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
  FROM pg_constraint
 WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'hookline_migrations'
"""


async def _postgres_catalog(url: str) -> dict[tuple[str, str], str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_PG_CATALOG)
    finally:
        await conn.close()
    return {(r["kind"], r["name"]): r["definition"] for r in rows}


async def test_postgres_migrations_from_zero_equal_schema_sql(
    postgres_cluster: PostgresServer,
) -> None:
    from hookline.store.postgres import PostgresStore

    migrated = postgres_cluster.create_database("migrated")
    from_file = postgres_cluster.create_database("schema-sql")
    try:
        store = PostgresStore(postgres_cluster.url(migrated))
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()
        conn = await asyncpg.connect(postgres_cluster.url(from_file))
        try:
            await conn.execute(schema_files.schema_path("postgres").read_text())
        finally:
            await conn.close()
        want = await _postgres_catalog(postgres_cluster.url(migrated))
        got = await _postgres_catalog(postgres_cluster.url(from_file))
    finally:
        postgres_cluster.drop_database(migrated)
        postgres_cluster.drop_database(from_file)
    assert want, "the migrations built nothing"
    differences = [
        f"{key[0]} {key[1]}: migrations {want.get(key)!r}, schema.sql {got.get(key)!r}"
        for key in sorted(set(want) | set(got))
        if want.get(key) != got.get(key)
    ]
    assert not differences, "\n".join(
        ["sql/postgres/schema.sql is not what the migrations build:", *differences]
    )
