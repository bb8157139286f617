"""``logs.configure``: one format for hookline's events and the standard library's lines.

Each test configures logging onto a StringIO (or one that claims to be a terminal) and puts
structlog, the root logger and the exception hooks back afterwards. Loggers are not cached
here (``cache_loggers=False``), so that other tests' module-level loggers keep working.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from hookline import logs

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
ANSI = "\x1b["


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        sys.excepthook, threading.excepthook = hooks


def _configure(fmt: str, stream: io.StringIO, level: str = "info") -> str:
    return logs.configure(level, fmt, stream=stream, cache_loggers=False)


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_auto_is_json_off_a_terminal_and_console_on_one() -> None:
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("auto", _Terminal()) == "console"
    assert logs.resolve_format("JSON", _Terminal()) == "json"
    assert logs.resolve_format("console", io.StringIO()) == "console"
    with pytest.raises(ValueError, match="auto, json or console"):
        logs.resolve_format("xml", io.StringIO())


def test_json_lines_carry_event_level_timestamp_logger_and_the_bound_context() -> None:
    out = io.StringIO()
    assert _configure("auto", out) == "json"
    log = structlog.get_logger("hookline.test")
    structlog.contextvars.bind_contextvars(request_id="r-1", app_id="app_x")
    log.info("thing_done", count=3)
    structlog.contextvars.clear_contextvars()
    log.warning("other_thing", msg_id="msg_y")
    log.debug("too_quiet")  # below the level
    first, second = _json_lines(out)
    assert first["event"] == "thing_done"
    assert first["level"] == "info"
    assert first["logger"] == "hookline.test"
    assert ISO_UTC.fullmatch(first["timestamp"]), first
    assert (first["request_id"], first["app_id"], first["count"]) == ("r-1", "app_x", 3)
    assert second["event"] == "other_thing" and second["level"] == "warning"
    assert "request_id" not in second  # cleared context stays out
    assert second["msg_id"] == "msg_y"


def test_standard_library_lines_come_out_in_the_same_json() -> None:
    out = io.StringIO()
    _configure("json", out)
    structlog.contextvars.bind_contextvars(request_id="r-2")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("asyncio").error("Task %s failed", "t-1")
    logging.getLogger("psycopg.pool").debug("libraries' debug lines are dropped")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # catch_warnings put showwarning back; configure set it
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    uvicorn_line, asyncio_line, warning_line = _json_lines(out)
    assert uvicorn_line == {
        "event": "uvicorn_message",
        "message": "Invalid HTTP request received.",
        "level": "warning",
        "logger": "uvicorn.error",
        "timestamp": uvicorn_line["timestamp"],
        "request_id": "r-2",
    }
    assert ISO_UTC.fullmatch(uvicorn_line["timestamp"])
    assert asyncio_line["event"] == "asyncio_message"
    assert asyncio_line["message"] == "Task t-1 failed"
    assert asyncio_line["level"] == "error"
    assert warning_line["event"] == "python_warning"
    assert "an old API" in warning_line["message"]


def test_a_traceback_is_one_field_of_one_line_in_json() -> None:
    out = io.StringIO()
    _configure("json", out)

    def fail() -> None:
        raise RuntimeError("boom")

    try:
        fail()
    except RuntimeError:
        structlog.get_logger("hookline.test").exception("it_failed", msg_id="msg_1")
        logging.getLogger("aiohttp.server").exception("Error handling request")
    ours, theirs = _json_lines(out)
    assert ours["event"] == "it_failed" and ours["level"] == "error"
    assert ours["exception"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: boom" in ours["exception"]
    assert theirs["event"] == "aiohttp_message"
    assert "RuntimeError: boom" in theirs["exception"]


def test_an_uncaught_exception_is_logged_as_json_not_printed_raw() -> None:
    out = io.StringIO()
    _configure("json", out)
    try:
        raise ValueError("unexpected")
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = _json_lines(out)
    assert line["event"] == "uncaught_exception" and line["level"] == "critical"
    assert "ValueError: unexpected" in line["exception"]


def test_console_is_readable_and_plain_off_a_terminal() -> None:
    out = io.StringIO()
    assert _configure("console", out) == "console"
    structlog.contextvars.bind_contextvars(request_id="r-3")
    structlog.get_logger("hookline.test").info("thing_done", count=3)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    first, second = out.getvalue().splitlines()
    assert ANSI not in out.getvalue()
    assert "thing_done" in first and "count=3" in first and "request_id=r-3" in first
    assert "[hookline.test]" in first
    assert "uvicorn_message" in second and "Invalid HTTP request received." in second
    assert "[uvicorn.error]" in second


def test_console_on_a_terminal_has_colours() -> None:
    out = _Terminal()
    assert _configure("auto", out) == "console"
    structlog.get_logger("hookline.test").info("thing_done")
    assert ANSI in out.getvalue()


def test_library_event_names_are_stable_snake_case() -> None:
    assert logs.library_event_name("uvicorn.error") == "uvicorn_message"
    assert logs.library_event_name("aiohttp.access") == "aiohttp_message"
    assert logs.library_event_name("psycopg_pool") == "psycopg_pool_message"
    assert logs.library_event_name("py.warnings") == "python_warning"
    assert logs.library_event_name("") == "root_message"


def test_the_timestamp_matches_structlogs_iso_utc_format() -> None:
    ours = logs.add_timestamp(None, "info", {})["timestamp"]
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})["timestamp"]
    assert ISO_UTC.fullmatch(ours) and ISO_UTC.fullmatch(theirs)
    apart = datetime.datetime.fromisoformat(theirs) - datetime.datetime.fromisoformat(ours)
    assert datetime.timedelta(0) <= apart < datetime.timedelta(seconds=1)


def test_throttle_writes_one_line_per_period_counting_what_it_folded_in() -> None:
    now = [100.0]
    throttle = logs.Throttle(1.0, clock=lambda: now[0])
    assert throttle.hit() == 1  # the first occurrence is logged at once
    assert [throttle.hit() for _ in range(5)] == [0] * 5
    now[0] += 0.999
    assert throttle.hit() == 0
    now[0] += 0.001
    assert throttle.hit() == 7  # itself and the six suppressed
    now[0] += 5.0
    assert throttle.hit() == 1
