"""granian: end open event streams in each worker before granian drains its connections.

granian stops a worker by SIGTERM; the worker then stops accepting and waits for every
connection to finish before it runs anything of the app's (lifespan shutdown comes after),
so an open stream holds it forever, or until ``--workers-kill-timeout`` kills it mid-body.
No documented hook runs in the worker before that wait, but granian builds each worker's
event loop through its documented loop registry (``granian.loops.register``) and installs
its stop handler with that loop's ``add_signal_handler``. The loop registered here runs
`sse_toolkit.shutdown` first (every stream ends with a last ``retry:`` hint and a clean end
of body), then granian's own handler: it drains nothing and stops at once.

Use it through the runner (``python -m sse_toolkit run module:app --server granian``), or
pass ``loop=LOOP`` (``LOOP_UVLOOP`` for uvloop) and ``target_loader=target_loader`` to
``Granian(...)`` and its ``serve`` yourself, after importing this module. The shutdown's
options come from the environment (``SSE_TOOLKIT_GRACE``, ``SSE_TOOLKIT_RECONNECT_AFTER``,
``SSE_TOOLKIT_RECONNECT_WINDOW``) so that spawned workers see them too.

On a free-threaded Python granian runs workers as threads and stops them without a signal:
there this hook cannot run, and streams are cut at ``workers_kill_timeout``.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable
from typing import Any

from granian import Granian, loops
from granian.constants import Interfaces
from granian.http import HTTP1Settings

from ..lifecycle import ShutdownOptions

__all__ = ["LOOP", "LOOP_UVLOOP", "serve", "target_loader"]

LOOP = "sse-toolkit-asyncio"
LOOP_UVLOOP = "sse-toolkit-uvloop"
_EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ending_streams_first(
    loop: asyncio.AbstractEventLoop, stop: Callable[..., object]
) -> Callable[..., None]:
    """granian's stop handler ``stop``, run once every stream of the process has ended."""
    stopping = False

    def handler(*args: Any) -> None:
        nonlocal stopping
        if stopping:  # a second signal (Ctrl-C: the terminal's and the master's)
            return
        stopping = True

        async def end_streams_then_stop() -> None:
            try:
                await ShutdownOptions.from_environment().shutdown()
            finally:
                stop(*args)

        loop.create_task(end_streams_then_stop())

    return handler


class _EndStreamsFirst:
    """Mixed into an event loop: its SIGINT/SIGTERM handlers end the streams first."""

    def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        if sig in _EXIT_SIGNALS:
            callback = _ending_streams_first(self, callback)  # type: ignore[arg-type]
        super().add_signal_handler(sig, callback, *args)  # type: ignore[misc]


class _AsyncioLoop(_EndStreamsFirst, asyncio.SelectorEventLoop):  # type: ignore[misc]
    pass


@loops.register(LOOP)
def _asyncio_loop() -> asyncio.AbstractEventLoop:
    loop = _AsyncioLoop()
    asyncio.set_event_loop(loop)
    return loop


@loops.register(LOOP_UVLOOP, packages=["uvloop"])
def _uvloop_loop(uvloop: Any) -> asyncio.AbstractEventLoop:
    class _UVLoop(_EndStreamsFirst, uvloop.Loop):  # type: ignore[misc]
        pass

    loop = _UVLoop()
    asyncio.set_event_loop(loop)
    return loop


def target_loader(target: str) -> Any:
    """Import ``"module:attr"`` in a worker. Being in this module, it makes a spawned worker
    import it too, so the loops above are registered there before granian builds one."""
    module_name, _, attr = target.partition(":")
    app: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        app = getattr(app, part)
    return app


def serve(app: Any, opts: Any) -> None:
    """Serve the ``"module:attr"`` ``app`` with granian as `sse_toolkit.runner.RunOptions`
    ``opts`` say, until SIGINT or SIGTERM; each worker ends its streams, then stops."""
    if not isinstance(app, str):
        raise ValueError("granian imports the app in its workers: give it as 'module:attr'")
    opts.shutdown.to_environment()
    uvloop = opts.loop == "uvloop" or (opts.loop == "auto" and _has_uvloop())
    loop = LOOP_UVLOOP if uvloop else LOOP
    http1 = HTTP1Settings()
    if opts.head_timeout is not None:
        http1 = HTTP1Settings(header_read_timeout=max(int(opts.head_timeout * 1000), 1))
    Granian(
        app,
        address=opts.host,
        port=opts.port,
        interface=Interfaces.ASGI,
        workers=opts.workers,
        loop=loop,  # type: ignore[arg-type]
        backpressure=opts.max_connections,
        http1_settings=http1,
        log_level=opts.log_level,
        log_access=opts.access_log,
        url_path_prefix=opts.root_path or None,
        # A last resort: a worker whose streams did not end within the grace is killed.
        workers_kill_timeout=int(opts.grace) + 5,
    ).serve(target_loader=target_loader)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
