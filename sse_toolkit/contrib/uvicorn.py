"""uvicorn: a ``Server`` that ends open event streams first, and guards its connections.

uvicorn shuts down in this order: stop accepting, wait for every response in flight to
finish (forever, or up to ``timeout_graceful_shutdown`` and then cancel them), and only then
send the app the lifespan shutdown. An event stream never finishes by itself, so plain
uvicorn hangs or cuts every stream. On SIGINT/SIGTERM this ``Server`` first calls
`sse_toolkit.shutdown`, which ends every stream of the process cleanly (a last ``retry:``
hint, a clean end of body), and uvicorn's own shutdown goes on at once. Nothing is patched:
it is a subclass, used where you choose to (`sse_toolkit.run` does)::

    from sse_toolkit.contrib.uvicorn import run
    run(app, host="127.0.0.1", port=8000)

It also guards the connections an ASGI app cannot reach (`ConnectionGuard`): a response
that returns without completing its body (an `EventStreamResponse` dropping a client that
stopped reading) has its connection aborted at once, so the socket's file descriptor and
kernel buffers are freed instead of waiting for a peer that never reads; a connection whose
request head does not arrive within ``head_timeout`` is closed (slowloris); a connection
closed with bytes still unsent after ``linger`` seconds is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._concurrency import CLOSE_TIMEOUT
from .._types import Receive, Scope, Send
from ..lifecycle import DEFAULT_SHUTDOWN, ShutdownOptions, open_streams
from ..manager import ChannelManager

__all__ = ["ConnectionGuard", "Server", "run"]

log = logging.getLogger("sse_toolkit")

_LINGER_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, frees at once


@dataclass(frozen=True)
class ConnectionGuard:
    """What the server does to connections that an ASGI app cannot protect itself from.

    - ``head_timeout``: seconds a connection may take to send a request head (from its
      start, or from the end of its previous response); then it is closed. None: no bound.
    - ``linger``: seconds a closed connection may keep bytes its peer does not read; then
      it is aborted (reset). A response that returns unfinished is aborted at once.
    """

    head_timeout: float | None = 10.0
    linger: float = 5.0


def abort_transport(transport: asyncio.Transport) -> None:
    """Close a connection now, with a reset: its unsent bytes and kernel buffers go at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
    transport.abort()


class _GuardedProtocol:
    """Mixed into uvicorn's HTTP protocol classes (h11, httptools): see `ConnectionGuard`.

    It relies on what both protocols have: ``app``, ``transport``, ``loop``, ``cycle``
    (``response_complete``, ``disconnected``), ``connection_made``, ``connection_lost`` and
    ``on_response_complete``.
    """

    # Nothing of ours in a connection's attribute dict: one name more than uvicorn's own
    # takes it past the 30 names CPython shares between a class's instances, and every
    # open connection then pays for a dict of its own, 1.3 KB (benchmarks/bench_memory.py
    # server). So a slot for the head timer, and the app on the class (see `app`).
    __slots__ = ("_head_timer",)

    guard: ConnectionGuard = ConnectionGuard()
    _server_app: Any = None  # (the server's one app: each server has its own class)
    # (uvicorn's protocol attributes, for the type checker)
    transport: Any
    loop: asyncio.AbstractEventLoop
    cycle: Any

    @property
    def app(self) -> Any:
        """What uvicorn runs for each request: the app, guarded (`_run_app`)."""
        return self._run_app

    @app.setter
    def app(self, app: Any) -> None:
        # uvicorn gives every new connection the server's app: set once (assigning to a
        # class invalidates the interpreter's caches of its attributes)
        if type(self)._server_app is not app:
            type(self)._server_app = app

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._head_timer: asyncio.TimerHandle | None = None
        super().__init__(*args, **kwargs)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._await_head()  # (uvicorn's keep-alive timer is undone by any byte)

    def _await_head(self) -> None:
        timeout = self.guard.head_timeout
        if timeout is not None:
            self._head_arrived()
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served after all
        if not self.transport.is_closing():
            log.debug("closing a connection whose request head did not arrive in time")
            abort_transport(self.transport)

    async def _run_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._head_arrived()
        cycle = self.cycle
        await self._server_app(scope, receive, send)
        if cycle is None or cycle.disconnected:
            return
        if cycle.response_started and not cycle.response_complete:
            # The app gave up on the client (a send timeout: it stopped reading). Closing
            # would wait for a peer that never reads: reset the connection instead. (And
            # mark the cycle done, so that uvicorn does not log it as an app error.)
            cycle.disconnected = True
            abort_transport(self.transport)
        elif self.transport.get_write_buffer_size():
            self.loop.call_later(self.guard.linger, self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        transport = self.transport
        if transport.get_write_buffer_size() == 0:
            return
        if transport.is_closing():
            abort_transport(transport)
        else:  # still open (keep-alive): uvicorn closes it in time, then we look again
            self.loop.call_later(self.guard.linger, self._abort_if_stuck)


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[Any]:
    """``base`` (uvicorn's h11 or httptools protocol) with `ConnectionGuard` ``guard``."""
    return type(f"Guarded{base.__name__}", (_GuardedProtocol, base), {"guard": guard})


def _guardable(protocol: type[asyncio.Protocol]) -> bool:
    if issubclass(protocol, H11Protocol):
        return True
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # (httptools is not installed)
        return False
    return issubclass(protocol, HttpToolsProtocol)


class Server(uvicorn.Server):
    """``uvicorn.Server`` that ends every event stream of the process on SIGINT/SIGTERM
    (`sse_toolkit.shutdown` with ``shutdown``'s options) before uvicorn's own shutdown, and
    protects its connections with ``guard`` (None: uvicorn's own behaviour).

    ``managers`` are closed after the streams have ended (their apps' lifespan does it too).
    uvicorn's ``timeout_graceful_shutdown`` is raised to at least the grace plus the time
    a stream's source may take to close (`CLOSE_TIMEOUT`), plus 1 s: uvicorn must not
    cancel a stream that is ending cleanly. Asked again with a shorter grace (gunicorn's
    quick stop after its graceful one), the streams still open are cut sooner.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        shutdown: ShutdownOptions = DEFAULT_SHUTDOWN,
        guard: ConnectionGuard | None = ConnectionGuard(),
        managers: Iterable[ChannelManager] = (),
    ) -> None:
        super().__init__(config)
        self.shutdown_options = shutdown
        self.guard = guard
        self.managers = list(managers)
        grace = shutdown.grace
        needed = int(grace + CLOSE_TIMEOUT) + 1
        if config.timeout_graceful_shutdown is None or config.timeout_graceful_shutdown < needed:
            config.timeout_graceful_shutdown = needed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ending: list[asyncio.Task[None]] = []  # one per (shorter) grace asked for
        self._ending_grace = math.inf

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        open_streams.reopen()  # this process serves (again): streams may run
        config = self.config
        if not config.loaded:
            config.load()
        protocol = config.http_protocol_class
        if self.guard is not None:
            if _guardable(protocol):
                config.http_protocol_class = guarded_protocol(protocol, self.guard)
            else:
                log.warning("connections are not guarded: %s is not h11 or httptools", protocol)
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Called from a signal handler (or any thread): hop onto the loop to end streams.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._end_streams)
        super().handle_exit(sig, frame)

    def _end_streams(self) -> None:
        options = self.shutdown_options
        if options.grace < self._ending_grace:  # (a shutdown with a longer grace runs on)
            assert self._loop is not None
            self._ending_grace = options.grace
            self._ending.append(self._loop.create_task(self._shutdown_streams(options)))

    async def _shutdown_streams(self, options: ShutdownOptions) -> None:
        await options.shutdown()
        for manager in self.managers:
            await manager.close()


def run(
    app: Any,
    *,
    shutdown: ShutdownOptions = DEFAULT_SHUTDOWN,
    guard: ConnectionGuard | None = ConnectionGuard(),
    managers: Iterable[ChannelManager] = (),
    **options: Any,
) -> None:
    """``uvicorn.run`` with this ``Server`` (one process): ``options`` are ``uvicorn.Config``'s.

    For workers, signals and exit statuses handled as a command line would, use
    `sse_toolkit.run`.
    """
    Server(uvicorn.Config(app, **options), shutdown=shutdown, guard=guard, managers=managers).run()
