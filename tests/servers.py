"""Real ASGI servers on loopback for the tests: uvicorn, and hypercorn on asyncio or trio.

Each server runs its own event loop in a thread of the test process; tests talk to it over
TCP with real clients, exactly as a browser would.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SERVERS = ["uvicorn", "hypercorn-asyncio", "hypercorn-trio"]
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    app: Any, server: str = "uvicorn", *, lifespan: str = "off", port: int = 0
) -> Iterator[str]:
    """Serve ``app`` for the duration of the block; yield its base URL.

    Servers in this process share its stream registry: a test that shut one down leaves it
    closing (new streams end at once) until it is reopened, as each server here does.
    """
    from sse_toolkit import lifecycle

    lifecycle.reopen()
    if server in ("uvicorn", "uvicorn-sse"):
        with _uvicorn(app, lifespan, sse_server=server == "uvicorn-sse", port=port) as url:
            yield url
    elif server.startswith("hypercorn-"):
        worker, _, sse = server.removeprefix("hypercorn-").partition("-")
        with _hypercorn(app, worker, lifespan, sse_trigger=sse == "sse") as url:
            yield url
    else:
        raise ValueError(f"unknown server {server!r}")


@contextmanager
def _uvicorn(app: Any, lifespan: str, *, sse_server: bool = False, port: int = 0) -> Iterator[str]:
    """uvicorn; with ``sse_server``, sse_toolkit's Server, stopped as a signal would."""
    import signal

    import uvicorn

    from sse_toolkit.contrib.uvicorn import Server

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=2
    )
    managers = getattr(app, "sse_managers", ())
    server = Server(config, managers=managers) if sse_server else uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        if sse_server:
            server.handle_exit(signal.SIGTERM, None)
        else:
            server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


@contextmanager
def _hypercorn(app: Any, worker: str, lifespan: str, *, sse_trigger: bool = False) -> Iterator[str]:
    """hypercorn; with ``sse_trigger``, shut down through sse_toolkit's trigger."""
    from hypercorn.config import Config

    from sse_toolkit.contrib.hypercorn import shutdown_trigger

    managers = getattr(app, "sse_managers", ())

    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 2
    started = threading.Event()
    stop = threading.Event()
    failure: list[BaseException] = []

    if lifespan == "off":
        # hypercorn has no switch for it; an app that rejects lifespan is tolerated.
        app = _no_lifespan(app)

    def run() -> None:
        try:
            if worker == "trio":
                import trio
                from hypercorn.trio import serve as trio_serve

                async def main() -> None:
                    async def trigger() -> None:
                        while not stop.is_set():
                            await trio.sleep(0.02)

                    stopping = (
                        shutdown_trigger(trigger, managers=managers) if sse_trigger else trigger
                    )
                    async with trio.open_nursery() as nursery:
                        await nursery.start(
                            lambda task_status: trio_serve(
                                app, config, shutdown_trigger=stopping, task_status=task_status
                            )
                        )
                        started.set()

                trio.run(main)
            else:
                import asyncio

                from hypercorn.asyncio import serve as asyncio_serve

                async def amain() -> None:
                    async def trigger() -> None:
                        while not stop.is_set():
                            await asyncio.sleep(0.02)

                    stopping = (
                        shutdown_trigger(trigger, managers=managers) if sse_trigger else trigger
                    )
                    task = asyncio.ensure_future(
                        asyncio_serve(app, config, shutdown_trigger=stopping)
                    )
                    while not _port_open(port):
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.01)
                    started.set()
                    await task

                asyncio.run(amain())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(START_TIMEOUT), "hypercorn did not start"
        if failure:
            raise failure[0]
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "hypercorn did not shut down"


def _no_lifespan(app: Any) -> Any:
    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await app(scope, receive, send)

    return wrapper


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_until(predicate: Any, message: str, timeout: float = START_TIMEOUT) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError(message)
