"""The /graphql endpoint: Strawberry's ASGI view with our context, transports and refusals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData, process_result
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from graphiql import GraphiQLPage
from metrics import MeteredTransportWS, Metrics
from middleware import GraphQLHttpError, http_error_code, http_error_response
from resolvers.context import Context, bearer_token
from schema import build_schema
from schema.lane import Lane
from schema.limits import Limits
from schema.ratelimit import RateLimiter
from settings import Settings


class InFlight:
    """Counts the /graphql requests and WebSockets in progress, so shutdown can wait."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


# Over HTTP: subscriptions would execute like queries (and fail); they run over WebSocket.
HTTP_OPERATION_TYPES = frozenset({OperationType.QUERY, OperationType.MUTATION})
SUBSCRIPTIONS_OVER_WEBSOCKET = (
    "Subscriptions run over WebSocket (graphql-transport-ws) at /graphql."
)


class LaneResponse:
    """What a lane operation may set on its response, as on Strawberry's sub-response:
    the status and headers (the rate limiter's 429 and Retry-After)."""

    __slots__ = ("headers", "status_code")

    def __init__(self) -> None:
        self.status_code: int | None = None
        self.headers: dict[str, str] = {}


async def read_body(receive: Receive) -> bytes:
    """The request's body, as Starlette's `Request.body` reads it (`ClientDisconnect` if
    the client went away first), without a `Request` and its async generator."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for a request whose body was read already: the body once, in one
    message, then the server's own messages (a disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header's first value, as Starlette's `request.headers.get` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")  # type: ignore[no-any-return]
    return None


class TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends graphql-transport-ws messages as text frames. Strawberry sends binary ones when
    `encode_json` returns bytes (ours does, for HTTP); a browser's graphql-ws client then
    gets a Blob and fails ("Message is missing the 'type' property")."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(self.view.encode_json_string(message))
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view; `services` are filled in by the lifespan.

    Each operation is recorded once, when it ends (`Metrics.finish_http`, and
    `MeteredTransportWS` over WebSocket): a latency sample, its error codes, a log line."""

    graphql_transport_ws_handler_class = MeteredTransportWS
    websocket_adapter_class = TextFrameWebSocketAdapter

    def __init__(
        self,
        state: dict[str, Any],
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        graphiql: GraphiQLPage | None = None,
        **kwargs: Any,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.graphiql = graphiql or GraphiQLPage.from_directory(settings.graphiql_dir)
        self.limiter = RateLimiter(
            budget=settings.rate_limit_budget, period=settings.rate_limit_period, clock=clock
        )
        schema = build_schema(
            limits=Limits(
                max_depth=settings.max_depth,
                max_aliases=settings.max_aliases,
                max_tokens=settings.max_tokens,
                max_cost=settings.max_cost,
            ),
            limiter=self.limiter,
            cache_size=settings.graphql_cache_size,
            plans=settings.execution_plans,
            debug=settings.debug,
        )
        # Browsers don't apply CORS to WebSockets; Strawberry checks the handshake's Origin
        # against the same list.
        kwargs.setdefault("allowed_origins", settings.cors_origins)
        super().__init__(schema, allow_queries_via_get=False, **kwargs)
        self.lane = Lane(schema) if settings.fast_lane else None
        self.state = state
        self.in_flight = InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.in_flight.track():
            if scope["type"] != "http":
                await super().__call__(scope, receive, send)
                return
            if self.lane is not None and scope["method"] == "POST":
                body = await read_body(receive)
                if await self._run_lane(scope, body, send):
                    return
                receive = replay(body, receive)  # Strawberry's path reads it again
            # As Strawberry's, except that its refusals (HTTPException) are GraphQL JSON.
            request = Request(scope, receive)
            try:
                response = await self.run(request)
            except HTTPException as exc:
                request_id = getattr(request.state, "request_id", None)
                response = http_error_response(exc, request_id=request_id)
            await response(scope, receive, send)

    async def _run_lane(self, scope: Scope, body: bytes, send: Send) -> bool:
        """Answer a plain query run by `Lane` (schema/lane.py): True once answered. False:
        the body is anything else, or the lane declined it, and nothing was sent;
        Strawberry's path answers, as it would have anyway.

        The answer is the one Strawberry's `create_response` makes (the same status,
        headers and body), sent as two ASGI messages without its Response objects."""
        assert self.lane is not None
        if self._stream_transport_map:  # none by default: streaming is over WebSocket
            return False
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if type(data) is not dict or data.get("extensions") is not None:
            return False
        query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
        if (
            type(query) is not str
            or not (variables is None or type(variables) is dict)
            or not (name is None or type(name) is str)
        ):
            return False
        started = time.perf_counter()
        client = scope.get("client")
        sub_response = LaneResponse()
        context = Context(
            services=self.state["services"],
            token=bearer_token(_header(scope, b"authorization")),
            client_address=client[0] if client else None,
            response=sub_response,
        )
        try:
            result = await self.lane.execute(query, variables, name, context)
        except BaseException:
            self._finish(context, name, query, started, None, 500)
            raise
        if result is None:
            return False
        body = self.encode_json(process_result(result))
        status = sub_response.status_code or 200
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"x-request-id", context.request_id.encode()),
        ]
        for key, value in sub_response.headers.items():
            headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
        self._finish(context, name, query, started, result.errors, status)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    def _finish(
        self,
        context: Context,
        name: str | None,
        query: str | None,
        started: float,
        errors: Sequence[GraphQLError] | None,
        status: int,
    ) -> None:
        """The operation's record: a metrics sample, its error codes, a log line."""
        self.metrics.finish_http(
            request_id=context.request_id,
            provided_name=name,
            query=query,
            started=started,
            errors=errors,
            status=status,
        )

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            services=self.state["services"],
            token=bearer_token(request.headers.get("authorization")),
            client_address=request.client.host if request.client else None,
            response=response if isinstance(response, Response) else None,
        )
        if isinstance(response, Response):
            response.headers["x-request-id"] = context.request_id
            request.state.request_id = context.request_id  # for a refusal's response
        return context

    def parse_json(self, data: str | bytes) -> Any:
        try:
            parsed = super().parse_json(data)
        except UnicodeDecodeError as exc:
            raise GraphQLHttpError(400, "Unable to parse request body as JSON.") from exc
        if not isinstance(parsed, dict | list):  # Strawberry would fail on it (a 500)
            raise GraphQLHttpError(400, "The request body must be a JSON object.")
        return parsed

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        started = time.perf_counter()
        status, errors = 500, None
        try:
            result = await self._execute(request_adapter, context, root_value, request_data)
            status, errors = sub_response.status_code or 200, result.errors
            return result
        except HTTPException as exc:  # no operation to run: `http_error_response` answers
            code = http_error_code(exc)
            status, errors = exc.status_code, [GraphQLError(exc.reason, extensions={"code": code})]
            raise
        finally:
            self._finish(
                context, request_data.operation_name, request_data.query, started, errors, status
            )

    async def _execute(
        self,
        request_adapter: AsyncHTTPRequestAdapter,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's `execute_single`, except that only queries and mutations run, and
        only over POST, and that a request naming no operation gets a code."""
        post = request_adapter.method == "POST"
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=HTTP_OPERATION_TYPES if post else frozenset(),
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise GraphQLHttpError(400, SUBSCRIPTIONS_OVER_WEBSOCKET) from exc
            raise GraphQLHttpError(405, "Operations run only over POST.") from exc
        except CannotGetOperationTypeError as exc:
            reason = (
                "The document has no operation to run."
                if exc.operation_name is None
                else exc.as_http_error_reason()  # 'Unknown operation named "X".'
            )
            raise GraphQLHttpError(400, reason, "GRAPHQL_VALIDATION_FAILED") from exc
        except MissingQueryError as exc:
            raise GraphQLHttpError(400, "No GraphQL query found in the request.") from exc

    async def render_graphql_ide(self, request: Request) -> Response:
        return self.graphiql.response(request)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
