"""Structured logs: one line per operation, never a token or a variable; JSON or text."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from logs import (
    JsonFormatter,
    LineBatch,
    TextFormatter,
    flush_lines,
    resolve_format,
    write_json_line,
)
from settings import Settings, SettingsError
from tests import conftest

ROOT = Path(__file__).resolve().parent.parent
SECRET_TOKEN = "rg_secret-token-that-must-never-be-logged-0000000000"
SECRET_VALUE = "hunter2-variable-value"
SEARCH = "query Search($s: String) { vods(filter: {search: $s}) { totalCount } }"


@contextlib.contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """The application's log lines, formatted by `formatter`, into a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("reelgraph")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def operation_lines(output: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in output.splitlines()]
    return {line["request_id"]: line for line in lines if line["message"] == "graphql operation"}


async def test_one_json_line_per_operation_without_tokens_or_variables(database_url: str) -> None:
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    with captured(JsonFormatter()) as stream:
        async with conftest.running_app(conftest.test_settings(database_url)) as client:
            unknown_token = await client.http.post(
                "/graphql",
                json={
                    "query": SEARCH,
                    "variables": {"s": SECRET_VALUE},
                },
                headers=headers,
            )
            # graphql-core repeats a value that does not coerce in the error message.
            bad_variable = await client.http.post(
                "/graphql",
                json={
                    "query": "query Page($n: Int) { vods(first: $n) { totalCount } }",
                    "variables": {"n": SECRET_VALUE},
                },
                headers=headers,
            )
            anonymous = await client.http.post("/graphql", json={"query": "{ __typename }"})
    assert SECRET_VALUE in bad_variable.text  # the client is told; the log is not
    output = stream.getvalue()
    for secret in (SECRET_TOKEN, SECRET_VALUE, "Bearer", "authorization", "Authorization"):
        assert secret not in output

    lines = operation_lines(output)
    search = lines[unknown_token.headers["x-request-id"]]
    assert search["logger"] == "reelgraph.operations"
    assert search["level"] == "info"
    assert search["transport"] == "http"
    assert search["operation"] == "Search"
    assert search["outcome"] == "error"
    assert search["error_codes"] == ["UNAUTHENTICATED"]
    assert search["status"] == 200
    assert isinstance(search["duration_ms"], float) and search["duration_ms"] > 0
    page = lines[bad_variable.headers["x-request-id"]]
    assert (page["operation"], page["outcome"]) == ("Page", "error")
    assert page["error_codes"] == ["BAD_USER_INPUT"]
    plain = lines[anonymous.headers["x-request-id"]]
    assert (plain["operation"], plain["outcome"], plain["error_codes"]) == ("anonymous", "ok", [])
    assert set(plain) == {
        *("time", "level", "logger", "message", "request_id", "transport", "operation"),
        *("outcome", "duration_ms", "status", "error_codes"),
    }


async def test_text_format_for_people(database_url: str) -> None:
    with captured(TextFormatter()) as stream:
        async with conftest.running_app(conftest.test_settings(database_url)) as client:
            response = await client.post("query Hello { __typename }")
    line = next(x for x in stream.getvalue().splitlines() if "graphql operation" in x)
    assert " INFO reelgraph.operations graphql operation " in line
    assert f"request_id={response.headers['x-request-id']}" in line
    assert "operation=Hello outcome=ok" in line


def test_json_formatter_keeps_extras_and_exceptions() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("reelgraph.errors").makeRecord(
            "reelgraph.errors",
            logging.ERROR,
            __file__,
            1,
            "unexpected error",
            (),
            sys.exc_info(),
            extra={"request_id": "abc", "path": ["vods", 0]},
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "abc" and line["path"] == ["vods", 0]
    assert line["level"] == "error" and line["message"] == "unexpected error"
    assert "RuntimeError: boom" in line["exception"]
    assert line["time"].endswith("Z") and len(line["time"]) == len("2024-01-01T00:00:00.000Z")


OPERATION = {"request_id": "abc", "operation": "Page", "duration_ms": 1.5, "error_codes": []}


def alone(*handlers: logging.Handler) -> logging.Logger:
    """A logger outside the hierarchy (no root above it, so none of pytest's handlers)."""
    logger = logging.Logger("reelgraph.operations")
    for handler in handlers:
        logger.addHandler(handler)
    return logger


def json_handler(stream: io.StringIO) -> logging.StreamHandler[io.StringIO]:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    return handler


def test_an_operation_line_written_directly_is_the_one_the_handler_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    logger = alone(json_handler(stream))
    monkeypatch.setattr(time, "time", lambda: 1764700000.1234)
    assert write_json_line(logger, logging.INFO, "graphql operation", dict(OPERATION))
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, "graphql operation", (), None, extra=OPERATION
    )
    record.created = 1764700000.1234
    logger.handle(record)
    written, handled = stream.getvalue().splitlines()
    assert written == handled
    line = json.loads(written)
    assert list(line) == ["time", "level", "logger", "message", *OPERATION]
    assert line["time"] == "2025-12-02T18:26:40.123Z"


@pytest.mark.parametrize(
    "route",
    ["two handlers", "a filter", "text format", "handler level", "a handler subclass"],
)
def test_an_operation_line_takes_the_ordinary_way_unless_one_json_stream_gets_it(
    route: str,
) -> None:
    stream = io.StringIO()
    handler = json_handler(stream)
    logger = alone(handler)
    if route == "two handlers":
        logger.addHandler(json_handler(io.StringIO()))
    elif route == "a filter":
        logger.addFilter(lambda record: True)
    elif route == "text format":
        handler.setFormatter(TextFormatter())
    elif route == "handler level":
        handler.setLevel(logging.WARNING)
    else:
        logger.removeHandler(handler)
        logger.addHandler(type("Stream", (logging.StreamHandler,), {})(stream))
    assert not write_json_line(logger, logging.INFO, "graphql operation", dict(OPERATION))
    assert stream.getvalue() == ""


class Writes(io.StringIO):
    """A stream that keeps each write, and fails them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.failing = False

    def write(self, text: str) -> int:
        if self.failing:
            raise OSError("disk full")
        self.writes.append(text)
        return super().write(text)


def _line(n: int) -> dict[str, Any]:
    return {**OPERATION, "request_id": f"r{n}"}


async def test_operation_lines_of_one_turn_of_the_loop_go_out_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Writes()
    logger = alone(json_handler(stream))
    monkeypatch.setattr(time, "time", lambda: 1764700000.1234)
    for n in range(3):
        assert write_json_line(logger, logging.INFO, "graphql operation", _line(n), batch=True)
    assert stream.writes == []  # not before the loop turns
    await asyncio.sleep(0)
    expected = io.StringIO()
    for n in range(3):
        write_json_line(alone(json_handler(expected)), logging.INFO, "graphql operation", _line(n))
    assert stream.writes == [expected.getvalue()]  # the same lines, in order, one write
    write_json_line(logger, logging.INFO, "graphql operation", _line(3), batch=True)
    flush_lines()  # as the lifespan does at shutdown
    assert len(stream.writes) == 2 and '"request_id":"r3"' in stream.writes[1]
    await asyncio.sleep(0)  # the scheduled write finds nothing left
    assert len(stream.writes) == 2


def test_without_a_loop_a_batched_line_is_written_at_once() -> None:
    stream = Writes()
    assert write_json_line(alone(json_handler(stream)), logging.INFO, "m", _line(0), batch=True)
    assert len(stream.writes) == 1


async def test_a_batch_is_written_when_full_and_when_its_loop_has_closed() -> None:
    stream = Writes()
    handler = json_handler(stream)
    batch = LineBatch(limit=2)
    logger = alone(handler)
    batch.add(handler, "a\n", (logger, logging.INFO, "m", _line(0)))
    batch.add(handler, "b\n", (logger, logging.INFO, "m", _line(1)))
    assert stream.writes == ["a\nb\n"]

    closed = asyncio.new_event_loop()
    batch._loop, batch._handler = closed, handler  # a batch left on a loop that then closed
    batch._lines = [("c\n", (logger, logging.INFO, "m", _line(2)))]
    closed.close()
    batch.add(handler, "d\n", (logger, logging.INFO, "m", _line(3)))
    assert stream.writes == ["a\nb\n", "c\n"]
    await asyncio.sleep(0)
    assert stream.writes == ["a\nb\n", "c\n", "d\n"]


async def test_a_failed_batch_write_logs_its_lines_the_ordinary_way() -> None:
    stream = Writes()
    handler = json_handler(stream)
    failures: list[logging.LogRecord] = []
    handler.handleError = failures.append  # type: ignore[method-assign]
    logger = alone(handler)
    for n in range(2):
        write_json_line(logger, logging.INFO, "graphql operation", _line(n), batch=True)
    stream.failing = True
    await asyncio.sleep(0)
    assert [r.request_id for r in failures] == ["r0", "r1"]  # type: ignore[attr-defined]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", _Terminal()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", _Terminal()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    assert Settings.from_env({"REELGRAPH_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError):
        Settings.from_env({"REELGRAPH_LOG_FORMAT": "xml"})


def test_uvicorn_logs_go_through_the_json_formatter() -> None:
    """In a fresh process (logging is global): `auto` with stderr a pipe means JSON."""
    script = (
        "import logging\n"
        "from logs import configure_logging\n"
        "configure_logging('auto')\n"
        "logging.getLogger('uvicorn.error').info('Started server process [%d]', 42)\n"
        "logging.getLogger('uvicorn.access').info("
        "'%s - \"%s %s HTTP/%s\" %d', '127.0.0.1:5000', 'GET', '/healthz', '1.1', 200)\n"
        "logging.getLogger('reelgraph.db').warning('database retry', extra={'attempt': 1})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        ("uvicorn.error", "Started server process [42]"),
        ("uvicorn.access", '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'),
        ("reelgraph.db", "database retry"),
    ]
    assert lines[2]["attempt"] == 1 and lines[2]["level"] == "warning"


def test_create_app_leaves_global_logging_alone() -> None:
    names = ("", "reelgraph", "uvicorn", "uvicorn.error", "uvicorn.access")
    before = [(logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names]
    create_app(Settings(log_format="json"))
    after = [(logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names]
    assert after == before
