"""Each dialect's ``schema.sql`` and the database its migrations build, in one comparable form.

``schema.sql`` is the schema to read (one file, the current state) while the numbered
migrations are the schema to run (every step from zero). ``tests/contract/test_schema_files.py``
checks that the two agree; this module holds what that check and the regeneration share:

* ``normalise(sql)``: a statement as its tokens, without comments or layout, so that a
  statement SQLite stored from a migration and the same one from ``schema.sql`` compare equal;
* ``SchemaDump``: a database's objects and version, the thing compared;
* ``sqlite_dump`` / ``load_sqlite_schema`` / ``render_sqlite``: SQLite's side of it. A
  PostgreSQL dump (from its catalogs) returns the same ``SchemaDump``.

Regenerate a dialect's file from a database migrated from zero::

    .venv/bin/python -m tests.support.schema_files sqlite
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hookline.store
from tests.support.stores import opened_sqlite

SQL_DIR = Path(hookline.store.__file__).parent / "sql"
REGENERATE = ".venv/bin/python -m tests.support.schema_files {dialect}"
# String literals and quoted identifiers stay whole (their spaces are data); comments are
# matched so that they can be dropped; everything else is a word or one punctuation character.
_TOKEN = re.compile(
    r"""(?P<comment>--[^\n]*|/\*.*?\*/)|(?P<token>'(?:[^']|'')*'|"(?:[^"]|"")*"|\w+|[^\s\w])""",
    re.DOTALL,
)
# A CREATE TABLE item starting with one of these is a table constraint, not a column.
_CONSTRAINTS = frozenset({"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"})


@dataclass(frozen=True)
class SchemaObject:
    """One table, index, view or trigger; ``sql`` is normalised."""

    type: str
    name: str
    tbl_name: str
    sql: str


@dataclass(frozen=True)
class SchemaDump:
    """What a database's schema is: its migration version and its objects by name.

    A dict, so that a failed comparison names the objects that differ.
    """

    version: int
    objects: dict[str, SchemaObject]


def differences(schema_sql: SchemaDump, migrated: SchemaDump) -> list[str]:
    """What differs between a database made from ``schema.sql`` and one migrated, one per line."""
    found = []
    if schema_sql.version != migrated.version:
        found.append(f"version: schema.sql {schema_sql.version}, migrations {migrated.version}")
    for name in sorted(schema_sql.objects.keys() | migrated.objects.keys()):
        ours, theirs = schema_sql.objects.get(name), migrated.objects.get(name)
        if theirs is None:
            found.append(f"only in schema.sql: {ours}")
        elif ours is None:
            found.append(f"only in the migrations: {theirs}")
        elif ours != theirs:
            found.append(f"differs:\n  schema.sql: {ours}\n  migrations: {theirs}")
    return found


def schema_path(dialect: str) -> Path:
    return SQL_DIR / dialect / "schema.sql"


def normalise(sql: str) -> str:
    """``sql`` as its tokens joined by single spaces: comments and layout do not count."""
    return " ".join(m["token"] for m in _TOKEN.finditer(sql) if m["token"] is not None)


# sqlite --------------------------------------------------------------------------------------


def _sqlite_rows(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    """``sqlite_master`` in creation order, without SQLite's own objects.

    ``sqlite_autoindex_*`` (the indexes behind UNIQUE and PRIMARY KEY, with no SQL of their
    own) follow from their table's statement, and ``sqlite_sequence`` from AUTOINCREMENT, so
    comparing the statements compares them too. Migration bookkeeping is no table here: it is
    ``PRAGMA user_version`` in the database header, which ``schema.sql`` sets and the dump
    compares, since a database made from the file must read as current to ``migrate()``.
    """
    rows: list[tuple[str, str, str, str]] = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master"
        " WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
    ).fetchall()
    return rows


def sqlite_dump(path: Path) -> SchemaDump:
    """The schema of the SQLite database at ``path``."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = {
            name: SchemaObject(type_, name, table, normalise(sql))
            for type_, name, table, sql in sorted(_sqlite_rows(conn))
        }
    return SchemaDump(version, objects)


async def migrate_sqlite(path: Path) -> None:
    """Create a database at ``path`` and migrate it from zero, the way ``hookline`` does."""
    async with opened_sqlite(path):
        pass


def load_sqlite_schema(path: Path) -> None:
    """Create a database at ``path`` from ``schema.sql`` alone."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(schema_path("sqlite").read_text())


def render_sqlite(path: Path) -> str:
    """``schema.sql`` for the SQLite database at ``path``: each table, then its indexes.

    Tables come in the order the migrations created them; SQL is re-laid out one column per
    line (a column added by ALTER TABLE is stored by SQLite as ``\\n, name TYPE)``).
    """
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        rows = _sqlite_rows(conn)
    first = min(n for n, _ in _migration_files())
    lines = [
        f"-- hookline SQLite schema: what migrations/{first:04d}..{version:04d} build from zero.",
        "-- Generated from a migrated database; do not edit. Change the schema with a new",
        "-- numbered file in migrations/, then regenerate this one:",
        f"--     {REGENERATE.format(dialect='sqlite')}",
        "-- tests/contract/test_schema_files.py checks that the two agree. The migrations'",
        "-- comments say what the columns mean (SQLite keeps no comments of a migration).",
        "",
    ]
    tables = [row for row in rows if row[0] == "table"]
    others = [row for row in rows if row[0] != "table"]
    for _, name, _, sql in tables:
        lines += [_layout_table(sql) + ";", ""]
        for _, _, _, index_sql in sorted(
            (row for row in others if row[2] == name), key=lambda row: row[1]
        ):
            lines.append(_compact(index_sql) + ";")
        if lines[-1]:
            lines.append("")
    lines += [f"PRAGMA user_version = {version};", ""]
    return "\n".join(lines)


def _migration_files() -> Iterator[tuple[int, Path]]:
    for path in (SQL_DIR / "sqlite" / "migrations").glob("*.sql"):
        yield int(path.name.split("_", 1)[0]), path


def _spans(sql: str) -> list[re.Match[str]]:
    return [m for m in _TOKEN.finditer(sql) if m["token"] is not None]


def _join(tokens: list[re.Match[str]]) -> str:
    """The tokens with one space wherever the source had any gap between them, else none."""
    out = ""
    for i, token in enumerate(tokens):
        if i and token.start() > tokens[i - 1].end():
            out += " "
        out += token[0]
    return out


def _compact(sql: str) -> str:
    return _join(_spans(sql))


def _layout_table(sql: str) -> str:
    """``CREATE TABLE name (`` + one item per line, columns aligned + ``)`` and its options."""
    tokens = _spans(sql)
    open_at = next(i for i, t in enumerate(tokens) if t[0] == "(")
    items: list[list[re.Match[str]]] = [[]]
    depth = 0
    for close_at in range(open_at + 1, len(tokens)):
        text = tokens[close_at][0]
        if text == "(":
            depth += 1
        elif text == ")":
            if depth == 0:
                break
            depth -= 1
        if text == "," and depth == 0:
            items.append([])
        else:
            items[-1].append(tokens[close_at])
    rendered = [_join(item) for item in items]
    columns = [r for item, r in zip(items, rendered, strict=True) if item[0][0] not in _CONSTRAINTS]
    width = max(len(r.split(" ", 1)[0]) for r in columns)
    body = []
    for item, text in zip(items, rendered, strict=True):
        if item[0][0] not in _CONSTRAINTS:
            name, _, rest = text.partition(" ")
            text = f"{name.ljust(width)}  {rest}".rstrip()
        body.append(f"    {text}")
    head = _join(tokens[: open_at + 1])
    tail = _join(tokens[close_at:])
    return head + "\n" + ",\n".join(body) + "\n" + tail


def main(argv: list[str]) -> int:
    if argv != ["sqlite"]:
        print(f"usage: {REGENERATE.format(dialect='sqlite')}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hookline-schema-") as tmp:
        db = Path(tmp) / "migrated.db"
        asyncio.run(migrate_sqlite(db))
        text = render_sqlite(db)
    schema_path("sqlite").write_text(text)
    print(f"wrote {schema_path('sqlite')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
