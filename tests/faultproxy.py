"""A fault-injecting TCP proxy for tests (Toxiproxy-like, in-process).

    proxy = FaultProxy("127.0.0.1", 5432)   # or FaultProxy.for_database(url)
    port = await proxy.start()          # listens on 127.0.0.1:<port>
    url = proxy.database_url(url)       # the same database, reached through the proxy
    await proxy.set_latency(0.1)        # every chunk, both directions, 100 ms later
    await proxy.blackhole()             # keep connections, forward nothing either way
    await proxy.reset_all()             # RST every open connection, both sides
    await proxy.refuse()                # close the listener: connects get ECONNREFUSED
    await proxy.pass_through()          # undo latency, blackhole and refuse
    await proxy.stop()

The proxy runs its own event loop in a daemon thread. It keeps forwarding (and keeps
its timing honest) while the loop under test is busy or blocked, and it works whatever
loop, or process, the client runs in. The control methods are coroutines that return
once the proxy thread has applied the change.

Latency is added per chunk: each chunk read is written ``latency`` seconds after it
arrived, in order, so a request-response round trip gains at least twice the latency.
Data that arrives during a blackhole is discarded, not buffered: a connection that was
blackholed is not usable afterwards (as after a real partition that outlived TCP's
retransmissions). End-of-stream still propagates, so clients can close cleanly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy"]

T = TypeVar("T")
_CHUNK = 65536


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def reset(self) -> None:
        _abort_with_rst(self.client)
        _abort_with_rst(self.upstream)


class FaultProxy:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        upstream_unix: str | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_unix = upstream_unix  # a Unix socket path, used instead of host:port
        self.listen_host = listen_host
        self.port = 0
        self.latency = 0.0
        self.blackholed = False
        self.refusing = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Every accepted connection's transport, from the moment it is accepted: a handler
        # task cancelled before its first step never reaches its `finally`.
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @classmethod
    def for_database(cls, url: str) -> FaultProxy:
        """A proxy in front of the PostgreSQL server of a SQLAlchemy or libpq URL, over
        TCP or, for ``?host=/socket/dir`` URLs (the embedded server), its Unix socket."""
        parsed = make_url(url)
        port = parsed.port or 5432
        socket_dir = parsed.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            return cls("localhost", port, upstream_unix=f"{socket_dir}/.s.PGSQL.{port}")
        return cls(parsed.host or "127.0.0.1", port)

    def database_url(self, url: str) -> str:
        """``url`` with its server replaced by this (started) proxy."""
        parsed = make_url(url).difference_update_query(["host"])
        proxied = parsed.set(host=self.listen_host, port=self.port)
        return proxied.render_as_string(hide_password=False)

    @property
    def connections(self) -> int:
        return len(self._links)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> int:
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"faultproxy-{self.upstream_port}", daemon=True
        )
        self._thread.start()
        self.port = await asyncio.wrap_future(ready)
        return self.port

    async def stop(self) -> None:
        if self._thread is None:
            return
        await self._call(self._shutdown)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _run(self, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            loop.close()

    async def _main(self, ready: concurrent.futures.Future[int]) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._listen(0)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(self.port)
        await self._stopping.wait()
        for _ in range(3):  # connections accepted just before the close start their tasks
            await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Every accepted connection, including those whose task was cancelled before it ran.
        for transport in list(self._transports):
            if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                transport.abort()
        for _ in range(3):  # let aborted transports run connection_lost and close sockets
            await asyncio.sleep(0)

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        transports = self._transports

        class Tracked(asyncio.StreamReaderProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transports.add(transport)
                super().connection_made(transport)

        accept = self._accept
        self._server = await loop.create_server(
            lambda: Tracked(asyncio.StreamReader(), accept), self.listen_host, port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_server(self) -> None:
        """Close the listener, without leaking a connection it accepted a moment ago.

        asyncio accepts a connection in the listener's callback and makes its transport
        in a task a step later, which attaches it to the server; once the server is
        closed that fails (an AssertionError the loop swallows) and the accepted socket
        is left to the garbage collector, whose ResourceWarning then fails whatever test
        is running (seen as asyncpg's CancelRequest connection after a client-side
        timeout, just as the proxy stopped). So: stop accepting, let those tasks make
        their transports, then close."""
        server, self._server = self._server, None
        if server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        server.close()

    async def _shutdown(self) -> None:
        await self._close_server()
        for link in list(self._links):
            link.reset()
        assert self._stopping is not None
        self._stopping.set()

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` on the proxy's loop and wait for it without blocking ours."""
        assert self._loop is not None, "proxy not started"

        async def run() -> T:
            return await fn()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self._loop))

    # --- faults ---------------------------------------------------------------------

    async def pass_through(self) -> None:
        async def apply() -> None:
            self.latency = 0.0
            self.blackholed = False
            if self.refusing:
                await self._listen(self.port)
                self.refusing = False

        await self._call(apply)

    async def set_latency(self, seconds: float) -> None:
        async def apply() -> None:
            self.latency = seconds

        await self._call(apply)

    async def blackhole(self) -> None:
        async def apply() -> None:
            self.blackholed = True

        await self._call(apply)

    async def reset_all(self) -> int:
        """Abort every open connection with a TCP RST, on both sides; returns how many."""

        async def apply() -> int:
            links = list(self._links)
            for link in links:
                link.reset()
            return len(links)

        return await self._call(apply)

    async def refuse(self) -> None:
        """Close the listener: new connections get ECONNREFUSED, open ones carry on."""

        async def apply() -> None:
            await self._close_server()
            self.refusing = True

        await self._call(apply)

    # --- forwarding -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link: _Link | None = None
        try:
            try:
                if self.upstream_unix is not None:
                    up_reader, up_writer = await asyncio.open_unix_connection(self.upstream_unix)
                else:
                    up_reader, up_writer = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port
                    )
            except OSError:
                _abort_with_rst(writer)
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            # A failure in either direction resets both sides; EOF is passed on.
            await asyncio.gather(
                self._pipe(reader, up_writer, on_error=link.reset),
                self._pipe(up_reader, writer, on_error=link.reset),
            )
        finally:
            if link is not None:
                self._links.discard(link)
                link.upstream.transport.abort()
            writer.transport.abort()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_error: Callable[[], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self.blackholed:
                    writer.write(data)
                    await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        def failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                on_error()  # the reader may be idle: wake it by resetting both sides

        delivery = asyncio.create_task(deliver())
        delivery.add_done_callback(failed)
        try:
            while True:
                data = await reader.read(_CHUNK)
                if data and self.blackholed:
                    continue
                queue.put_nowait((loop.time() + self.latency, data))
                if not data:
                    break
            await delivery
        except OSError:
            on_error()
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await delivery
