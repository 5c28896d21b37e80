"""Prometheus metrics and the one record every GraphQL operation leaves (a sample, a log line).

Each app has its own `CollectorRegistry` (nothing global), served at `/metrics`. Two kinds
of figures:

- measured here, once per operation: the latency histogram (HTTP operations, by operation
  name and outcome) and the error counter (by `extensions.code`, HTTP and WebSocket);
- kept by the code that owns them (`Database.stats`, the pool, the live health cache, the
  chat feed, the rate limiter, open WebSocket operations) and read by `ServerCollector`
  at scrape time, so nothing is counted twice and the hot path pays nothing for them.

Label values are bounded: an operation name is a label only if it is a valid GraphQL name,
and only the first `max_operations` distinct names get one; later names are `other`,
operations without a name `anonymous`. Error codes outside the documented set are `OTHER`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from graphql import GraphQLError, GraphQLSyntaxError, Lexer, Source, TokenKind
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy.pool import QueuePool
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

from logs import log_record, write_json_line
from schema.errors import CODES

if TYPE_CHECKING:
    from resolvers.context import Services
    from schema.ratelimit import RateLimiter

log = logging.getLogger("reelgraph.operations")
Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)

# The text format every Prometheus version reads (prometheus_client's default may be newer).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_INVALID = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED"})
_REJECTED = frozenset({"QUERY_TOO_COMPLEX", "RATE_LIMITED"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,127}")
# The common documents decided without a lexer: `{ ... }`, `query Name ...`, `query (...`.
# Possessive quantifiers: ignored characters are never re-split, so no input backtracks.
_IGNORED = r"(?:[\s,\ufeff]|#[^\n\r]*+)*+"
_LEADING = re.compile(
    _IGNORED + r"(?:(\{)|(?:query|mutation|subscription)(?![_0-9A-Za-z])"
    r"(?:[\s,]*+([_A-Za-z][_0-9A-Za-z]*+))?|(fragment)(?![_0-9A-Za-z]))"
)


def outcome_of(codes: Iterable[str]) -> str:
    """`ok` without errors; `invalid` (parse, validation), `rejected` (limits, rate limit),
    otherwise `error` (anything that went wrong while executing)."""
    found = set(codes)
    if not found:
        return "ok"
    if found & _REJECTED:
        return "rejected"
    if found & _INVALID:
        return "invalid"
    return "error"


def operation_name(provided: object, query: object) -> str:
    """The operation's name as chosen for execution: `operationName` when the client sends
    one, else the first operation in the document; `anonymous` without a name, `other`
    when it is not a valid GraphQL name."""
    if isinstance(provided, str) and provided:
        return provided if _NAME.fullmatch(provided) else "other"
    if not isinstance(query, str):
        return "anonymous"
    match = _LEADING.match(query)
    if match is None or match.group(1):
        return "anonymous"  # `{ ... }`, or not GraphQL (it fails to parse)
    if match.group(3):
        return _scan_for_operation(query)  # fragments first
    name = match.group(2)
    if not name:
        return "anonymous"  # `query { ... }`, `query ($id: ID!) { ... }`
    return name if _NAME.fullmatch(name) else "other"


def _scan_for_operation(query: str) -> str:
    """The name of the first operation of a document that starts with fragments."""
    lexer = Lexer(Source(query))
    depth = 0
    expect_name = False
    try:
        for _ in range(2_000):  # graphql-core refuses documents with more tokens anyway
            token = lexer.advance()
            kind = token.kind
            if kind is TokenKind.EOF:
                break
            if expect_name:
                if kind is TokenKind.NAME and token.value:
                    return token.value if _NAME.fullmatch(token.value) else "other"
                return "anonymous"
            if kind in (TokenKind.BRACE_L, TokenKind.PAREN_L, TokenKind.BRACKET_L):
                depth += 1
            elif kind in (TokenKind.BRACE_R, TokenKind.PAREN_R, TokenKind.BRACKET_R):
                depth -= 1
            elif depth == 0 and kind is TokenKind.NAME:
                expect_name = token.value in ("query", "mutation", "subscription")
    except GraphQLSyntaxError:
        pass
    return "anonymous"


def error_codes(errors: Sequence[GraphQLError] | None) -> list[str]:
    if not errors:
        return []
    return [_code((e.extensions or {}).get("code")) for e in errors]


def formatted_error_codes(errors: object) -> list[str]:
    """Codes of errors already formatted for the wire (graphql-transport-ws payloads)."""
    if not isinstance(errors, list):
        return []
    codes = []
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        codes.append(_code(extensions.get("code") if isinstance(extensions, dict) else None))
    return codes


def _code(code: object) -> str:
    return code if isinstance(code, str) and code in CODES else "OTHER"


class Metrics:
    """The app's registry, and what each operation records when it ends."""

    def __init__(self, *, max_operations: int = 100) -> None:
        self.registry = CollectorRegistry()
        self.max_operations = max_operations
        self.websocket_operations = 0  # in flight over graphql-transport-ws
        self._duration = Histogram(
            "reelgraph_graphql_request_duration_seconds",
            "GraphQL operations over HTTP: time from parsing to the result, by operation "
            "name and outcome.",
            ["operation", "outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "reelgraph_graphql_errors",
            "GraphQL errors sent to clients (HTTP and WebSocket), by extensions.code.",
            ["code"],
            registry=self.registry,
        )
        self._labels = {"anonymous", "other"}  # and the first `max_operations` names
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._codes: dict[str, Counter] = {}

    def watch(self, collector: ServerCollector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def label(self, name: str) -> str:
        if name in self._labels:
            return name
        if len(self._labels) - 2 >= self.max_operations:
            return "other"
        self._labels.add(name)
        return name

    def observe(self, name: str, outcome: str, seconds: float) -> None:
        key = (self.label(name), outcome)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self._duration.labels(*key)
        child.observe(seconds)

    def count_errors(self, codes: Iterable[str]) -> None:
        for code in codes:
            child = self._codes.get(code)
            if child is None:
                child = self._codes[code] = self._errors.labels(code)
            child.inc()

    def finish_http(
        self,
        *,
        request_id: str,
        provided_name: object,
        query: object,
        started: float,
        errors: Sequence[GraphQLError] | None,
        status: int,
    ) -> None:
        """One HTTP operation ended: a histogram sample, its error codes, one log line.

        A refusal before any operation ran comes with its error; `status` 500 without
        errors means that the view raised."""
        seconds = time.perf_counter() - started
        name = operation_name(provided_name, query)
        codes: list[str] = []
        if errors:
            codes = error_codes(errors)
            outcome = outcome_of(codes)
            self.count_errors(codes)
        else:
            outcome = "ok" if status < 400 else "invalid" if status < 500 else "error"
        self.observe(name, outcome, seconds)
        if log.isEnabledFor(logging.INFO):
            _log_operation(
                {
                    "request_id": request_id,
                    "transport": "http",
                    "operation": name,
                    "outcome": outcome,
                    "duration_ms": round(seconds * 1000, 3),
                    "status": status,
                    "error_codes": codes,
                }
            )

    def finish_websocket(
        self,
        *,
        request_id: str,
        provided_name: object,
        query: object,
        started: float,
        codes: Sequence[str],
        failed: bool,
    ) -> None:
        """One graphql-transport-ws operation (a subscription: its whole life) ended.

        Its errors were counted as they were sent; a subscription lasts as long as the
        client wants, so it is logged but kept out of the latency histogram."""
        if not log.isEnabledFor(logging.INFO):
            return
        _log_operation(
            {
                "request_id": request_id,
                "transport": "websocket",
                "operation": operation_name(provided_name, query),
                "outcome": "error" if failed and not codes else outcome_of(codes),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "error_codes": list(codes),
            }
        )


def _log_operation(fields: dict[str, Any]) -> None:
    """`log.info("graphql operation", extra=fields)`: written straight to the stream where
    the handlers allow it (`write_json_line`), else without the stack walk `info` does to
    find its caller (always this line): a quarter of the line's cost, once per request."""
    if not write_json_line(log, logging.INFO, "graphql operation", fields, batch=True):
        log_record(log, logging.INFO, "graphql operation", fields)


class MeteredTransportWS(BaseGraphQLTransportWSHandler[Any, None]):
    """graphql-transport-ws, counting open operations and their errors, logging each end.

    The view that runs it has a `metrics: Metrics` attribute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: Metrics = getattr(self.view, "metrics")  # noqa: B009
        self._codes: dict[str, list[str]] = {}

    async def run_operation(self, operation: Operation[Any, None]) -> None:
        metrics = self._metrics
        started = time.perf_counter()
        codes = self._codes[operation.id] = []
        failed = False
        metrics.websocket_operations += 1
        try:
            await super().run_operation(operation)
        except Exception:
            failed = True
            raise
        finally:
            metrics.websocket_operations -= 1
            if self._codes.get(operation.id) is codes:
                del self._codes[operation.id]
            metrics.finish_websocket(
                request_id=getattr(self.context, "request_id", ""),
                provided_name=operation.operation_name,
                query=operation.query,
                started=started,
                codes=codes,
                failed=failed,
            )

    async def send_message(self, message: Message) -> None:
        kind = message.get("type")
        if kind in ("error", "next"):
            payload: Any = message.get("payload")
            errors = payload if kind == "error" else (payload or {}).get("errors")
            if errors:
                codes = formatted_error_codes(errors)
                self._metrics.count_errors(codes)
                found = self._codes.get(str(message.get("id")))
                if found is not None:
                    found.extend(codes)
        await super().send_message(message)


class ServerCollector:
    """Reads, at scrape time, the counters and gauges the server already keeps."""

    def __init__(
        self,
        *,
        services: Callable[[], Services | None],
        limiter: RateLimiter | None,
        websocket_operations: Callable[[], int],
    ) -> None:
        self._services = services
        self._limiter = limiter
        self._websocket_operations = websocket_operations

    def collect(self) -> Iterator[Metric]:
        yield _gauge(
            "reelgraph_graphql_websocket_operations",
            "Operations in flight over graphql-transport-ws (open subscriptions).",
            self._websocket_operations(),
        )
        if self._limiter is not None:
            yield _counter(
                "reelgraph_rate_limit_rejections",
                "Operations refused with RATE_LIMITED (HTTP 429).",
                self._limiter.rejections,
            )
        services = self._services()
        if services is None:  # before the lifespan started
            return
        stats = services.db.stats
        yield _counter("reelgraph_db_retries", "Database attempts retried.", stats.retries)
        yield _counter(
            "reelgraph_db_timeouts", "Units of work that ended DATABASE_TIMEOUT.", stats.timeouts
        )
        yield _counter(
            "reelgraph_db_unavailable",
            "Units of work that ended DATABASE_UNAVAILABLE.",
            stats.unavailable,
        )
        pool = services.db.engine.pool
        counts = services.db.pool_counts()
        if counts is not None and isinstance(pool, QueuePool):
            in_use, idle = counts
            connections = GaugeMetricFamily(
                "reelgraph_db_pool_connections",
                "Open pooled connections: in_use (running a unit of work) or idle.",
                labels=["state"],
            )
            connections.add_metric(["in_use"], in_use)
            connections.add_metric(["idle"], idle)
            yield connections
            yield _gauge("reelgraph_db_pool_size", "Configured pool size.", pool.size())
            yield _gauge(
                "reelgraph_db_pool_overflow",
                "Connections open beyond the pool size.",
                max(pool.overflow(), 0),
            )
        yield from _cache_metrics("live_health", services.live.cache.stats())
        feed = services.chat_feed
        if feed is not None:
            yield _gauge(
                "reelgraph_chat_subscribers",
                "chatMessageAdded subscribers registered in this process.",
                feed.subscriber_count,
            )
            yield _counter(
                "reelgraph_chat_events_delivered",
                "Chat events handed to subscribers.",
                feed.delivered,
            )
            yield _counter(
                "reelgraph_chat_subscribers_cut_off",
                "Chat subscribers ended because their buffer was full.",
                feed.cut_off,
            )


def _cache_metrics(cache: str, stats: Any) -> Iterator[Metric]:
    labels = {"cache": cache}
    yield _counter("reelgraph_cache_hits", "Cache hits.", stats.hits, labels)
    yield _counter("reelgraph_cache_misses", "Cache misses.", stats.misses, labels)
    yield _counter("reelgraph_cache_loads", "Loader runs (misses coalesced).", stats.loads, labels)
    yield _counter("reelgraph_cache_load_errors", "Loads that raised.", stats.load_errors, labels)
    evictions = CounterMetricFamily(
        "reelgraph_cache_evictions", "Entries evicted, by reason.", labels=["cache", "reason"]
    )
    evictions.add_metric([cache, "expired"], stats.expired_evictions)
    evictions.add_metric([cache, "capacity"], stats.capacity_evictions)
    yield evictions
    yield _gauge("reelgraph_cache_entries", "Entries held.", stats.size, labels)


def _single(
    kind: type[Family],
    name: str,
    documentation: str,
    value: float,
    labels: Mapping[str, str] | None = None,
) -> Family:
    """A metric family with one sample."""
    labels = labels or {}
    family = kind(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


_counter = partial(_single, CounterMetricFamily)
_gauge = partial(_single, GaugeMetricFamily)
