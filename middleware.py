"""HTTP rules in front of /graphql: POST with a JSON body only (CSRF), bodies capped in size.

A browser can send a cross-site form POST (urlencoded, multipart, text/plain) without a
preflight; requiring a JSON content type means such a request never executes. GET never
executes an operation: it serves GraphiQL to browsers and answers 405 otherwise.

`ShortcutApp` takes the plain POST, the one these rules and CORS pass through unchanged,
straight to the view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.datastructures import Headers as RequestHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPES = frozenset({"application/json", "application/graphql-response+json"})


Headers = Sequence[tuple[bytes, bytes]]


def _error_body(message: str, code: str) -> bytes:
    return orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})


def _error(status: int, message: str, code: str, headers: Headers) -> tuple[Message, Message]:
    body = _error_body(message, code)
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class GraphQLHttpError(HTTPException):
    """A request refused before any operation runs (HTTP 4xx), with the error's code."""

    def __init__(self, status_code: int, reason: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(status_code, reason)
        self.code = code


def http_error_code(exc: HTTPException) -> str:
    """A refusal's code: its own for a `GraphQLHttpError`, else BAD_USER_INPUT."""
    return exc.code if isinstance(exc, GraphQLHttpError) else "BAD_USER_INPUT"


def http_error_response(exc: HTTPException, *, request_id: str | None) -> Response:
    """Strawberry's refusals (a text/plain reason there) as a GraphQL JSON error body, same
    status. Transport-level ones (body not JSON, no query, batch, method) are BAD_USER_INPUT,
    like the guard's; a `GraphQLHttpError` carries its own code."""
    code = http_error_code(exc)
    message = exc.reason if exc.reason.endswith(".") else exc.reason + "."
    headers = {"x-request-id": request_id} if request_id else {}
    if exc.status_code == 405:
        headers["allow"] = "GET, POST"
    body = _error_body(message, code)
    return Response(body, exc.status_code, headers, media_type="application/json")


class _TooLarge(Exception):
    pass


class GraphQLHttpGuard:
    def __init__(self, app: ASGIApp, *, path: str = "/graphql", max_body_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = dict(scope["headers"])
        if method == "GET":
            if "query" in parse_qs(scope.get("query_string", b"").decode("latin-1")):
                allow = [(b"allow", b"POST")]
                await self._reply(send, 405, "Operations run only over POST.", allow)
                return
            await self.app(scope, receive, send)
            return
        if method != "POST":
            await self.app(scope, receive, send)
            return
        content_type = (
            headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
        )
        if content_type not in JSON_TYPES:
            await self._reply(
                send, 415, "Send operations as POST with Content-Type: application/json."
            )
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._reply(send, 413, f"Request body exceeds {self.max_body_bytes} bytes.")
            return
        if content_type != "application/json":
            scope = dict(scope)
            scope["headers"] = [
                (k, b"application/json" if k == b"content-type" else v) for k, v in scope["headers"]
            ]
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._reply(send, 413, f"Request body exceeds {self.max_body_bytes} bytes.")

    async def _reply(self, send: Send, status: int, message: str, headers: Headers = ()) -> None:
        start, body = _error(status, message, "BAD_USER_INPUT", headers)
        await send(start)
        await send(body)


class StudioCORS(CORSMiddleware):
    """Starlette's CORS, except that a preflight from an origin that is not allowed gets
    no Access-Control-* header at all (Starlette still lists the allowed methods)."""

    def preflight_response(self, request_headers: RequestHeaders) -> Response:
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            return PlainTextResponse(
                "Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"}
            )
        return super().preflight_response(request_headers)


class ShortcutApp(Starlette):
    """Starlette, except that a POST to /graphql that its middleware would pass through
    unchanged goes straight to the GraphQL view: past ServerErrorMiddleware, the CORS
    middleware, `GraphQLHttpGuard`, ExceptionMiddleware and the router, about 6 % of a
    W3 request's CPU (bench/RESULTS.md, ninth session). That is a request with exactly
    `Content-Type: application/json`, a `Content-Length` within the cap and no
    `Transfer-Encoding` (the guard would pass it: its body cannot outgrow the length), and
    no `Origin` header when CORS is on (CORSMiddleware passes such a request through).
    Any other request takes the whole stack.

    What ServerErrorMiddleware does is kept: an exception before the response started is
    answered with its plain 500 ("Internal Server Error", no traceback), then raised on
    to the server, which logs it. The view raises no HTTP exception to the stack (it
    answers its refusals itself), so ExceptionMiddleware has nothing to do either."""

    def __init__(
        self,
        *,
        graphql: ASGIApp,
        max_body_bytes: int,
        cors: bool,
        path: str = "/graphql",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._graphql = graphql
        self._max_body = max_body_bytes
        self._cors = cors
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self._path
            or scope["method"] != "POST"
            or not self._plain(scope["headers"])
        ):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._graphql(scope, receive, tracked)
        except Exception:
            if not started:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
            raise

    def _plain(self, headers: Headers) -> bool:
        content_type = length = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding" or (name == b"origin" and self._cors):
                return False
        return (
            content_type == b"application/json"
            and length is not None
            and length.isdigit()
            and int(length) <= self._max_body
        )
