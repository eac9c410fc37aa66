"""One logging set-up shared by the web, worker, beat and CLI processes.

Every process calls :func:`configure_logging` once at start-up so that all of them write the same line format
(human-readable text for local work, one JSON object per line for log shippers) and carry the same context fields:
a line about a batch says which stage it is in and how many events it holds, a line about one event says which
event.  Context is attached either for a block of code with :func:`log_context` or for a single call with
``logger.info(..., extra={"event_id": ...})``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, TextIO

try:  # python-json-logger >= 3 moved the formatter; the old module still works but warns.
    from pythonjsonlogger.json import JsonFormatter
except ImportError:  # pragma: no cover - only on python-json-logger < 3
    from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[no-redef]

#: The only record attributes rendered as context: a fixed list keeps lines greppable and stops arbitrary
#: ``extra`` payloads (or third-party record attributes) from leaking into the output.
CONTEXT_FIELDS: tuple[str, ...] = ("stage", "events", "event_id", "target", "collection", "task_id")
FORMATS: tuple[str, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Loggers that are too chatty at their own default level (see :func:`quiet_third_party`).
NOISY_LOGGERS: tuple[str, ...] = ("snowflake.connector", "snowflake.connector.vendored.urllib3")

#: Attribute set on our handler so a second :func:`configure_logging` replaces it instead of adding another.
_MARKER = "_sophia_logs_handler"
_JSON_KEYS = frozenset(("timestamp", "level", "logger", "message", "exc_info", "stack_info", *CONTEXT_FIELDS))

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "sophia_log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (in this thread / task only).

    Built on contextvars so concurrent threads and asyncio tasks do not see each other's context; blocks nest
    (inner values win) and the outer context is restored on exit, also on exceptions.  Unknown keys are rejected
    because they would silently never be rendered.
    """
    unknown = sorted(set(fields) - set(CONTEXT_FIELDS))
    if unknown:
        raise ValueError(f"unknown log context field(s) {unknown}; allowed: {', '.join(CONTEXT_FIELDS)}")
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the active :func:`log_context` fields onto each record, so formatters only look at the record.

    A value passed via ``extra=`` on the call itself is more specific than the surrounding block, so it wins.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _context_items(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, getattr(record, k)) for k in CONTEXT_FIELDS if getattr(record, k, None) is not None]


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` followed by `` key=value`` per context field (before any traceback, so it stays on the
    line that grep finds)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        for key, value in _context_items(record):
            text = str(value)
            if not text or any(c.isspace() or c in '="' for c in text):
                text = json.dumps(text)  # keep the line splittable on spaces
            line += f" {key}={text}"
        return line


class SophiaJsonFormatter(JsonFormatter):
    """python-json-logger with our key names, keeping only known keys (python-json-logger would otherwise dump
    every non-standard record attribute, e.g. whatever a library passes in ``extra``)."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if k in _JSON_KEYS}


def _resolve_level(level: str | int | None) -> int:
    raw: str | int = level if level not in (None, "") else os.environ.get("SOPHIA_LOG_LEVEL") or "INFO"
    if isinstance(raw, int) or raw.strip().isdigit():
        return int(raw)
    value = logging.getLevelName(raw.strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {raw!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _resolve_format(fmt: str | None) -> str:
    raw = fmt if fmt else os.environ.get("SOPHIA_LOG_FORMAT") or "text"
    value = raw.strip().lower()
    if value not in FORMATS:
        raise ValueError(f"unknown log format {raw!r}; allowed: {', '.join(FORMATS)}")
    return value


def quiet_third_party() -> None:
    """The Snowflake connector logs every internal retry with a traceback at WARNING; our materializer reports
    the outcome once per attempt instead, so only the connector's errors are kept."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def configure_logging(level: str | int | None = None, fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Install the one root handler (stderr or ``stream``) with the text or JSON formatter.

    Level: ``level``, else env ``SOPHIA_LOG_LEVEL``, else INFO.  Format: ``fmt``, else env ``SOPHIA_LOG_FORMAT``,
    else ``text``.  Setting the root level and handler is what makes ``sophia_tasks.*`` and ``web.*`` INFO lines
    appear under gunicorn/Flask, where otherwise only Python's last-resort handler (WARNING and up) prints them.
    Idempotent: a previous handler of ours is replaced, so calling it again (e.g. tests, re-configuration)
    never duplicates lines; handlers installed by others (pytest's capture, gunicorn's own) are left alone.
    """
    levelno = _resolve_level(level)
    formatter = SophiaJsonFormatter() if _resolve_format(fmt) == "json" else TextFormatter(TEXT_FORMAT)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    setattr(handler, _MARKER, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARKER, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    quiet_third_party()


def celery_setup_logging(**kwargs: Any) -> None:
    """Receiver for ``celery.signals.setup_logging``; the worker and beat connect it at start-up.

    Having any receiver on that signal makes Celery skip its own logging set-up (no root hijack, no stdout
    redirection), so worker and beat lines use the same format as web and CLI.  ``SOPHIA_LOG_LEVEL`` wins when set;
    otherwise Celery's ``loglevel`` (from ``--loglevel``) applies.
    Not connected at import time: importing this module must not change Celery's behaviour.
    """
    configure_logging(level=None if os.environ.get("SOPHIA_LOG_LEVEL") else kwargs.get("loglevel"))
