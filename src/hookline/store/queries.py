"""Named SQL queries, read from ``sql/<dialect>/queries.sql``.

A query starts at a ``-- name: <name>`` line and runs to the next one, so each dialect keeps its
SQL in one readable file instead of strings scattered through Python.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def load(dialect: str) -> dict[str, str]:
    """Return ``{name: sql}`` for every named query of ``dialect``."""
    text = resources.files("hookline.store").joinpath(f"sql/{dialect}/queries.sql").read_text()
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations(dialect: str) -> list[tuple[int, str]]:
    """Return ``[(version, sql), ...]`` from ``sql/<dialect>/migrations/NNNN_*.sql`` in order."""
    folder = resources.files("hookline.store").joinpath(f"sql/{dialect}/migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)
