"""Migrating an empty database from zero gives exactly the schema in the dialect's schema.sql.

``schema.sql`` is what a reader takes for the schema, and the migrations are what every
database actually runs: if they drift, the file misleads whoever reviews a query or writes the
next migration against it. Each dialect compares the two as a ``schema_files.SchemaDump``
(its objects with normalised SQL, plus the migration version), with the helpers in
``tests/support/schema_files.py``.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import schema_files

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
