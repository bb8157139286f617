"""Logs: one event per line on stderr, as JSON lines or as a readable console.

``configure(level, fmt)`` sets up structlog and the standard library's ``logging`` together, so
that hookline's own events and the lines of uvicorn, asyncio, aiohttp and Python's warnings
come out in one format. Every line carries ``event`` (a stable snake_case name), ``level``,
``timestamp`` (ISO 8601, UTC) and ``logger``, plus the context variables bound for the work in
hand (``request_id``, ``app_id``, ``msg_id``, ``endpoint_id``, ``attempt_id``: bind them with
``structlog.contextvars``, never pass them by hand).

A line from the standard library keeps its text in ``message``; its ``event`` is the top
package of its logger plus ``_message`` (``uvicorn_message``, ``asyncio_message``,
``aiohttp_message``), and a Python warning's is ``python_warning``. Those texts are the
libraries' own and change between their versions; an event name must not.

In JSON a traceback is the ``exception`` field of its line, never raw lines of text.
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("json", "console")
Clock = Callable[[], float]
# Libraries log at debug what only their own developers need (psycopg's pool, asyncio): a
# HOOKLINE_LOG_LEVEL of debug is for hookline's events, and theirs start at info.
LIBRARY_MIN_LEVEL = logging.INFO

# Unknown types (an exception, a Path) become their str() rather than failing the line.
_encoder = msgspec.json.Encoder(enc_hook=str)


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``json`` or ``console``; ``auto`` picks console on a terminal and JSON otherwise."""
    fmt = fmt.lower()
    if fmt == "auto":
        return "console" if _isatty(stream) else "json"
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use auto, json or console")
    return fmt


def configure(
    level: str, fmt: str, *, stream: TextIO | None = None, cache_loggers: bool = True
) -> str:
    """Route every log line of this process to ``stream`` (stderr) in one format; return it.

    Call once at start, before anything logs: loggers are cached on first use for speed
    (``cache_loggers``), so a logger used before a later ``configure`` keeps the earlier
    setup. The root logger's handlers are replaced.
    """
    stream = sys.stderr if stream is None else stream
    resolved = resolve_format(fmt, stream)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    tail: list[Processor]
    if resolved == "json":
        tail = [format_exc_info, render_json]
    else:
        # ConsoleRenderer prints a traceback itself, readably; format_exc_info would flatten it
        tail = [structlog.dev.ConsoleRenderer(colors=_isatty(stream))]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_logger_name,
        add_timestamp,
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_LoggerFactory(stream),
        cache_logger_on_first_use=cache_loggers,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _library_event],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, LIBRARY_MIN_LEVEL))
    logging.captureWarnings(True)  # warnings.warn() lines become events, not raw text
    if resolved == "json":
        # An uncaught exception would print a raw traceback among the JSON lines.
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_thread_uncaught
    return resolved


def format_exc_info(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """``exc_info`` as the ``exception`` field's text; skipped (costs nothing) on most lines."""
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(logger, name, event_dict)
    return event_dict


def render_json(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> str:
    """The event as one line of JSON (msgspec: a few times faster than ``json.dumps``)."""
    return _encoder.encode(event_dict).decode()


def add_logger_name(logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """``logger``: the name given to ``structlog.get_logger``, or the stdlib record's."""
    record = event_dict.get("_record")
    event_dict["logger"] = record.name if record is not None else getattr(logger, "name", "")
    return event_dict


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def add_timestamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: ISO 8601 in UTC with microseconds, as ``TimeStamper(fmt="iso", utc=True)``.

    The date and time of day are formatted once per second: on an access-log line the datetime
    formatting was a quarter of the cost of the whole line.
    """
    record = event_dict.get("_record")
    now = record.created if record is not None else time.time()
    whole = int(now)
    if whole != _second[0]:
        text = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0], _second[1] = whole, text
    event_dict["timestamp"] = f"{_second[1]}.{int((now - whole) * 1_000_000):06d}Z"
    return event_dict


def _library_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """A standard-library line: its text moves to ``message``; ``event`` names its source."""
    event_dict["message"] = event_dict.get("event")
    event_dict["event"] = library_event_name(event_dict["logger"])
    return event_dict


def library_event_name(logger_name: str) -> str:
    """``uvicorn.error`` → ``uvicorn_message``; ``py.warnings`` → ``python_warning``."""
    if logger_name == "py.warnings":
        return "python_warning"
    top = logger_name.split(".", 1)[0] or "root"
    return "".join(c if c.isalnum() else "_" for c in top.lower()) + "_message"


class _Logger(structlog.WriteLogger):
    """Writes and flushes one line per event; keeps its name for the ``logger`` field.

    A whole line goes out in one write, so the lines of several processes sharing stderr
    (``--processes N``) do not interleave within a line.
    """

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name


class _LoggerFactory:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _Logger:
        return _Logger(self._stream, str(args[0]) if args else "hookline")


class Throttle:
    """At most one log line per ``seconds`` for a repeated event, counting what it folds in.

    ``hit()`` is called for every occurrence; it returns how many occurrences the line to write
    now stands for (this one and those suppressed since the last line), or 0 for no line.
    """

    __slots__ = ("_clock", "_next", "_seconds", "_suppressed")

    def __init__(self, seconds: float = 1.0, clock: Clock = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def hit(self) -> int:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return 0
        self._next = now + self._seconds
        count, self._suppressed = self._suppressed + 1, 0
        return count


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    structlog.get_logger("hookline").critical("uncaught_exception", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    structlog.get_logger("hookline").error(
        "thread_failed",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
