"""`run`: serve any ASGI app so that its event streams end cleanly when it stops.

``python -m sse_toolkit run module:app`` (or ``sse_toolkit.run(app)``) in place of
``uvicorn module:app``. On SIGINT or SIGTERM it first calls `sse_toolkit.shutdown` in every
worker, so every open stream ends with a last ``retry:`` hint and a clean end of body, then
lets the server stop as it normally does; the process exits with status 0 and no traceback.

- ``server``: ``uvicorn`` (the default), ``hypercorn`` or ``granian``.
- ``workers``: processes sharing one listening socket (the app must then be an import
  string, ``"module:attr"``); the parent forwards SIGINT/SIGTERM to each and waits. Streams
  in different processes share channels only through a backend (Redis).
- Connection guards (uvicorn; see `sse_toolkit.contrib.uvicorn.ConnectionGuard`): a client
  dropped for not reading has its connection reset at once, a request head must arrive
  within ``head_timeout``, and past ``max_connections`` open connections a request is
  answered 503. The soft limit on open files is raised to the hard limit at start.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ._concurrency import CLOSE_TIMEOUT
from ._validate import check_delay
from .lifecycle import (
    DEFAULT_GRACE,
    DEFAULT_RECONNECT_AFTER,
    DEFAULT_RECONNECT_WINDOW,
    ShutdownOptions,
)

__all__ = ["SERVERS", "RunOptions", "add_run_arguments", "raise_fd_limit", "run", "run_command"]

log = logging.getLogger("sse_toolkit.run")

SERVERS = ("uvicorn", "hypercorn", "granian")
LOOPS = {
    "uvicorn": ("auto", "asyncio", "uvloop"),
    "hypercorn": ("auto", "asyncio", "uvloop", "trio"),
    "granian": ("auto", "asyncio", "uvloop"),
}
_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FD_RESERVE = 256  # files kept free for everything but connections (logs, Redis, ...)
_HYPERCORN_AFTER_GRACE = 2.0
_FAST_FAILURES = 5  # a worker that dies this many times in a row soon after its start
_FAST = 10.0  # (seconds) makes the supervisor give up


@dataclass(frozen=True)
class RunOptions:
    """How `run` serves an app (each option is also a ``run`` command-line flag)."""

    server: str = "uvicorn"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    loop: str = "auto"
    http: str = "auto"  # uvicorn's HTTP/1.1 parser: auto, h11 or httptools
    grace: float = DEFAULT_GRACE
    reconnect_after: float = DEFAULT_RECONNECT_AFTER
    reconnect_window: float = DEFAULT_RECONNECT_WINDOW
    head_timeout: float | None = 10.0
    linger: float = 5.0
    max_connections: int | None = None  # None: the open-file limit less a reserve
    log_level: str = "info"
    access_log: bool = True
    root_path: str = ""

    @property
    def shutdown(self) -> ShutdownOptions:
        return ShutdownOptions(self.grace, self.reconnect_after, self.reconnect_window)

    def check(self) -> RunOptions:
        """Raise ValueError naming the option at fault; the options with defaults filled."""
        if self.server not in SERVERS:
            raise ValueError(f"server must be one of {', '.join(SERVERS)}, not {self.server!r}")
        if self.loop not in LOOPS[self.server]:
            loops = ", ".join(LOOPS[self.server])
            raise ValueError(f"loop must be one of {loops} with {self.server}, not {self.loop!r}")
        if self.http not in ("auto", "h11", "httptools"):
            raise ValueError(f"http must be auto, h11 or httptools, not {self.http!r}")
        for name in ("port", "workers"):
            value = getattr(self, name)
            if type(value) is not int or value < (0 if name == "port" else 1) or value > 65535:
                raise ValueError(f"{name} must be a whole number in range, not {value!r}")
        for name in ("grace", "reconnect_after", "reconnect_window", "linger", "head_timeout"):
            value = getattr(self, name)
            if value is not None or name != "head_timeout":
                check_delay(name, value)
        if self.max_connections is not None and (
            type(self.max_connections) is not int or self.max_connections < 1
        ):
            raise ValueError(f"max_connections must be an int >= 1, not {self.max_connections!r}")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"log_level must be a logging level name, not {self.log_level!r}")
        return self


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an ASGI callable, or ``"module:attr"``) until SIGINT or SIGTERM, then
    end its event streams cleanly and stop. ``options`` are `RunOptions`' fields."""
    opts = RunOptions(**options).check()
    if opts.workers > 1 and not isinstance(app, str):
        raise ValueError("workers > 1 needs the app as an import string, 'module:attr'")
    limit = raise_fd_limit()
    if opts.max_connections is None and limit is not None:
        opts = replace(opts, max_connections=max(limit - _FD_RESERVE, 64))
    _configure_logging(opts.log_level)
    with _exit_signals_only_request_exit():
        if opts.server == "granian":
            _bind(opts.host, opts.port).close()  # (a port in use: one line, not granian's)
            _serve_granian(app, opts)  # granian binds and runs its workers itself
            return
        sock = _bind(opts.host, opts.port)
        try:
            if opts.workers == 1:
                _serve(app, opts, [sock])
            elif _Supervisor(app, opts, [sock]).run():
                raise SystemExit(1)
        finally:
            sock.close()


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return port


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` command's arguments (one per `RunOptions` field)."""
    d = RunOptions()
    parser.add_argument("app", help="the ASGI app to serve, as module:attr")
    parser.add_argument("--server", choices=SERVERS, default=d.server, help="the ASGI server")
    parser.add_argument("--host", default=d.host, help="address to listen on")
    parser.add_argument("--port", type=port_number, default=d.port, help="port to listen on")
    parser.add_argument(
        "--workers", type=int, default=d.workers, help="processes (more than 1 needs Redis)"
    )
    parser.add_argument(
        "--loop",
        choices=sorted({loop for loops in LOOPS.values() for loop in loops}),
        default=d.loop,
        help="event loop (trio: hypercorn only)",
    )
    parser.add_argument(
        "--http", choices=("auto", "h11", "httptools"), default=d.http, help="uvicorn's parser"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=d.grace,
        help="seconds the streams' last bytes may take at a stop before they are cut",
    )
    parser.add_argument(
        "--reconnect-after",
        type=float,
        default=d.reconnect_after,
        help="the shortest retry hint (seconds) a stream gets at a stop",
    )
    parser.add_argument(
        "--reconnect-window",
        type=float,
        default=d.reconnect_window,
        help="retry hints are spread at random over this many seconds above it",
    )
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=d.head_timeout,
        help="seconds a request head may take (0: no bound; uvicorn)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=d.linger,
        help="seconds a closed connection may keep unread bytes before a reset (uvicorn)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="past this many connections, answer 503 (default: the open-file limit less"
        f" {_FD_RESERVE}; uvicorn)",
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default=d.log_level,
        help="log level",
    )
    parser.add_argument(
        "--no-access-log", dest="access_log", action="store_false", help="no access log"
    )
    parser.add_argument("--root-path", default=d.root_path, help="ASGI root_path (behind a proxy)")


def run_command(args: argparse.Namespace) -> int:
    """``python -m sse_toolkit run``: exit status 0 after a clean stop, 2 for bad options."""
    options = {name: getattr(args, name) for name in RunOptions.__dataclass_fields__}
    if options["head_timeout"] == 0:
        options["head_timeout"] = None
    try:
        opts = RunOptions(**options).check()
        load_app(args.app)  # a missing module or name is reported now, not in each worker
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"sse-toolkit run: {exc}", file=sys.stderr)
        return 2
    run(args.app, **vars(opts))
    return 0


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard limit; return it (None: unknown)."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return None if soft == resource.RLIM_INFINITY else int(soft)


def load_app(app: Any) -> Any:
    """``app``, or the object a ``"module:attr"`` string names."""
    if not isinstance(app, str):
        return app
    module_name, _, attr = app.partition(":")
    if not module_name or not attr:
        raise ValueError(f"the app must be given as 'module:attr', not {app!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as uvicorn does: the app is in the current folder
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    return target


# -- one process ---------------------------------------------------------------------------


def _serve(app: Any, opts: RunOptions, sockets: list[socket.socket]) -> None:
    if opts.server == "uvicorn":
        _serve_uvicorn(app, opts, sockets)
    else:
        _serve_hypercorn(app, opts, sockets)


def _serve_uvicorn(app: Any, opts: RunOptions, sockets: list[socket.socket]) -> None:
    import uvicorn

    from .contrib.uvicorn import ConnectionGuard, Server

    config = uvicorn.Config(
        load_app(app),
        loop=opts.loop,
        http=opts.http,
        log_level=opts.log_level,
        access_log=opts.access_log,
        root_path=opts.root_path,
        # (uvicorn counts the connection asking too: N + 1 serves N)
        limit_concurrency=None if opts.max_connections is None else opts.max_connections + 1,
    )
    guard = ConnectionGuard(head_timeout=opts.head_timeout, linger=opts.linger)
    server = Server(config, shutdown=opts.shutdown, guard=guard)
    _serving(server.handle_exit)  # (a signal before uvicorn runs: it stops as it starts)
    server.run(sockets=sockets)


def _serve_hypercorn(app: Any, opts: RunOptions, sockets: list[socket.socket]) -> None:
    from hypercorn.config import Config

    from .contrib.hypercorn import serve

    config = Config()
    # (hypercorn closes the sockets it is given: it gets its own copies)
    config.bind = [f"fd://{os.dup(sock.fileno())}" for sock in sockets]
    # (after the trigger, which has waited the grace: what is left are sources closing)
    config.graceful_timeout = _HYPERCORN_AFTER_GRACE
    config.loglevel = opts.log_level.upper()
    config.accesslog = "-" if opts.access_log else None
    for name in ("hypercorn.error", "hypercorn.access"):  # (its own handlers write them)
        logging.getLogger(name).propagate = False
    config.root_path = opts.root_path
    app = load_app(app)
    _serving()
    serve(app, config, loop=opts.loop, shutdown=opts.shutdown)


def _serve_granian(app: Any, opts: RunOptions) -> None:
    from .contrib.granian import serve

    serve(app, opts)


# -- several processes ---------------------------------------------------------------------


def _worker(app: Any, opts: RunOptions, sockets: list[socket.socket]) -> None:
    """A worker process's main: serve until SIGTERM (from the parent) or SIGINT."""
    _configure_logging(opts.log_level)
    with _exit_signals_only_request_exit():
        _serve(app, opts, sockets)


class _Supervisor:
    """Runs ``workers`` processes on shared sockets; on SIGINT/SIGTERM, stops them in order.

    A worker that dies on its own is replaced, unless workers keep dying soon after they
    start (an app that cannot start): then the supervisor stops, with status 1. On a stop
    signal each worker gets SIGTERM (it ends its streams, then its server stops), and the
    parent waits for all of them at once for the grace plus the time sources may take to
    close, then kills what is left (status 1: something did not stop cleanly).
    """

    def __init__(self, app: Any, opts: RunOptions, sockets: list[socket.socket]) -> None:
        import multiprocessing  # (only a supervisor needs it)

        self.app = app
        self.opts = opts
        self.sockets = sockets
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[Any] = []
        self.started_at: dict[int, float] = {}  # by pid
        self.fast_failures = 0
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        """Serve until a stop signal; the exit status (0: every worker stopped cleanly)."""
        from multiprocessing.connection import wait

        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno())

        def stop(signum: int, frame: object) -> None:
            self.stopping = True

        handlers = {signum: signal.signal(signum, stop) for signum in _EXIT_SIGNALS}
        try:
            self.workers = [self._start() for _ in range(self.opts.workers)]
            log.info("started %d worker processes", len(self.workers))
            while not self.stopping:
                sentinels = [worker.sentinel for worker in self.workers]
                wait([*sentinels, wake_read])
                with contextlib.suppress(BlockingIOError):
                    wake_read.recv(64)
                if not self.stopping:
                    self._replace_dead()
            self._stop_all()
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            wake_read.close()
            wake_write.close()
        return 1 if self.failed else 0

    def _start(self) -> Any:
        process = self.context.Process(
            target=_worker, args=(self.app, self.opts, self.sockets), daemon=False
        )
        process.start()
        self.started_at[process.pid or 0] = time.monotonic()
        return process

    def _replace_dead(self) -> None:
        for index, worker in enumerate(self.workers):
            if worker.is_alive():
                continue
            lived = time.monotonic() - self.started_at.pop(worker.pid, 0.0)
            self.fast_failures = self.fast_failures + 1 if lived < _FAST else 0
            if self.fast_failures >= _FAST_FAILURES:
                log.error("workers keep exiting as they start (%s): stopping", worker.exitcode)
                self.failed = self.stopping = True
                return
            log.warning("worker %s exited (%s): starting another", worker.pid, worker.exitcode)
            self.workers[index] = self._start()

    def _stop_all(self) -> None:
        log.info("stopping %d worker processes", len(self.workers))
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        # The streams' grace, sources closing, then the server's own stop: for all at once.
        deadline = time.monotonic() + self.opts.grace + CLOSE_TIMEOUT + 5.0
        for worker in self.workers:
            worker.join(max(deadline - time.monotonic(), 0.0))
            if worker.is_alive():
                log.error("worker %s did not stop in time: killed", worker.pid)
                self.failed = True
                worker.kill()
                worker.join()


# -- process helpers -----------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # accepted sockets whose proto says TCP, and they copy the listening socket's. With 0,
    # every response after the first on a kept-alive connection waited ~40 ms for an ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"sse-toolkit: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _exit_signals_only_request_exit() -> Iterator[None]:
    """While serving, SIGINT/SIGTERM only ever ask for a clean stop.

    Servers install their own handlers while they run, and some (uvicorn) re-raise the
    signal afterwards with the handlers they found: Python's own would turn a clean stop
    into a ``KeyboardInterrupt`` traceback or an exit by SIGTERM. Outside the server's
    handlers, a stop signal exits at once (status 0) before anything is served, and is
    ignored after (the server has stopped cleanly: what is left is to return).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _stop_before_serving) for signum in _EXIT_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serving(handler: Callable[[int, Any], object] = lambda signum, frame: None) -> None:
    """From now on stop signals go to ``handler`` (the server's own, which takes over when
    it runs); by default they are ignored (the server installs its handlers at once)."""
    if threading.current_thread() is threading.main_thread():
        for signum in _EXIT_SIGNALS:
            signal.signal(signum, handler)


def _stop_before_serving(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing is served yet: nothing to end cleanly


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s: %(message)s")
