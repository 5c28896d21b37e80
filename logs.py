"""Log output, configured once at the command-line edge (never by `create_app`).

`json`: one JSON object per line (`time`, `level`, `logger`, `message`, then the record's
`extra` fields, and `exception` with the traceback). `text`: a human line, `extra` fields
appended as `key=value`. `auto` picks text on a terminal, JSON otherwise. Uvicorn's loggers
go through the same handler.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import sys
import time
from typing import Any, TextIO

import orjson

FORMATS = ("auto", "json", "text")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
        "color_message",  # uvicorn's ANSI-coloured copy of the message
    }
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        """UTC, ISO 8601, milliseconds; the part up to the second is formatted once."""
        second = int(created)
        cached, prefix = self._second
        if cached != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}Z"

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """A line without exception or stack, as `format` writes it (before encoding)."""
        return {
            "time": self._time(created),
            "level": level.lower(),
            "logger": logger,
            "message": message,
            **fields,
        }

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(
            record.created, record.levelname, record.name, record.getMessage(), _extras(record)
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def resolve_format(log_format: str, stream: TextIO) -> str:
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


def logging_config(log_format: str = "auto", *, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: our formatter on stderr, uvicorn's loggers
    through it. Also handed to uvicorn (`log_config=`), which applies it in every worker."""
    formatter = JsonFormatter if resolve_format(log_format, sys.stderr) == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"reelgraph": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "reelgraph",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in _UVICORN},
            "alembic.runtime.plugins": {"level": "WARNING"},  # a line per plugin, every run
        },
    }


def configure_logging(log_format: str = "auto", *, level: str = "INFO") -> dict[str, Any]:
    """Configure this process's logging; returns the config for uvicorn's `log_config`."""
    config = logging_config(log_format, level=level)
    logging.config.dictConfig(config)
    return config


def write_json_line(
    logger: logging.Logger,
    level: int,
    message: str,
    fields: dict[str, Any],
    *,
    batch: bool = False,
) -> bool:
    """Write `logger.log(level, message, extra=fields)`'s line without a `LogRecord`, when
    the record would reach exactly one handler, a plain `StreamHandler` with our
    `JsonFormatter`, and no filter on its way: the bytes it would write, about half the
    line's CPU (the record's construction, the handler's dispatch, `_extras`). False
    otherwise (nothing written): log it the ordinary way.

    `batch`: on an event loop, the line is written with the others of the same turn of
    the loop, in one write (`LineBatch`), right after the callbacks already scheduled."""
    handler = _sole_json_handler(logger, level)
    if handler is None:
        return False
    formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
    text = (
        orjson.dumps(
            formatter.line(time.time(), logging.getLevelName(level), logger.name, message, fields),
            default=str,
        ).decode()
        + handler.terminator
    )
    if batch and _batch.add(handler, text, (logger, level, message, fields)):
        return True
    return _write(handler, text)


def _write(handler: logging.StreamHandler[Any], text: str) -> bool:
    try:
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(text)
            handler.flush()
    except Exception:
        return False  # the ordinary way reports it (`Handler.handleError`)
    return True


Line = tuple[logging.Logger, int, str, dict[str, Any]]


def log_record(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, message, extra=fields)` without the stack walk `log` does to
    find its caller: the ordinary way of a line `write_json_line` did not write."""
    logger.handle(
        logger.makeRecord(logger.name, level, __file__, 0, message, (), None, extra=fields)
    )


class LineBatch:
    """Lines written together, once per turn of the event loop: the operation line is
    one per request, and one write per line was about 3 % of a W3 request's CPU (a
    system call each; bench/RESULTS.md, ninth session). At 16 concurrent requests, the
    lines of all the responses of one turn go out in one write.

    A batch is written by a callback scheduled on the loop when its first line comes;
    also at once when it holds `limit` lines, and when a line comes for a loop that
    closed before the batch was written (a process that ran a loop and stopped it). A
    write that fails logs its lines the ordinary way, one by one, so the handler
    reports the failure as it would have. What a crash of the process can lose: the
    lines of the turn it crashed in, at most `limit`."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._handler: logging.StreamHandler[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lines: list[tuple[str, Line]] = []  # each line's text, and what it says

    def add(self, handler: logging.StreamHandler[Any], text: str, line: Line) -> bool:
        """Queue `text` for `handler`; False when there is no event loop (write it now)."""
        loop = self._loop
        if loop is not None and (handler is not self._handler or loop.is_closed()):
            self.flush()
            loop = None
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            loop.call_soon(self.flush)
            self._loop, self._handler = loop, handler
        self._lines.append((text, line))
        if len(self._lines) >= self.limit:
            self.flush()
        return True

    def flush(self) -> None:
        handler, lines = self._handler, self._lines
        self._loop = self._handler = None
        self._lines = []
        if handler is None or not lines or _write(handler, "".join(t for t, _ in lines)):
            return
        for _, line in lines:
            log_record(*line)


_batch = LineBatch()


def flush_lines() -> None:
    """Write the lines waiting for the loop's turn (at shutdown, say)."""
    _batch.flush()


def _sole_json_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    if logger.disabled or logger.manager.disable >= level:
        return None
    found: logging.StreamHandler[Any] | None = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        for handler in node.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or level < handler.level
            ):
                return None
            found = handler
        if not node.propagate:
            break
        node = node.parent
    return found
