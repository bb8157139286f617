"""Ids: ULID text that python-ulid (the reference implementation) reads back exactly."""

from __future__ import annotations

import time

from ulid import ULID

from hookline import ids


def test_ids_are_prefixed_ulids_with_the_current_time() -> None:
    before = time.time()
    value = ids.new(ids.MESSAGE)
    after = time.time()
    prefix, _, text = value.partition("_")
    assert prefix == "msg"
    assert ids.has_prefix(value, ids.MESSAGE)
    parsed = ULID.from_str(text)  # raises on anything that is not ULID text
    assert str(parsed) == text
    assert int(before * 1000) / 1000 <= parsed.timestamp <= after


def test_ids_sort_by_creation_time_across_milliseconds() -> None:
    made = []
    for _ in range(5):
        made.append(ids.new(ids.ATTEMPT))
        time.sleep(0.002)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_encoding_matches_the_reference_for_edge_values() -> None:
    for raw in (b"\0" * 16, b"\xff" * 16, bytes(range(16))):
        expected = str(ULID.from_bytes(raw))
        got = ids.base32_of(raw)
        assert got == expected
