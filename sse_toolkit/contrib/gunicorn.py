"""gunicorn: a worker class that runs uvicorn and ends open event streams cleanly.

::

    gunicorn module:app --worker-class sse_toolkit.contrib.gunicorn.Worker --workers 4

gunicorn's master stops its workers with SIGTERM (a graceful stop: it waits
``--graceful-timeout``, 30 s by default) or, on SIGINT and SIGQUIT, with SIGQUIT (a quick
one: 2 s). Either way this worker first calls `sse_toolkit.shutdown`, so every stream ends
with a last ``retry:`` hint and a clean end of body (within ``SSE_TOOLKIT_GRACE`` seconds,
5 by default; 1 at a quick stop), then uvicorn stops as usual and the worker
exits with status 0. It also has the runner's connection guards
(`sse_toolkit.contrib.uvicorn.ConnectionGuard`).

Each worker is its own process: channels are shared between workers only through a backend
(`sse_toolkit.backends.redis.RedisBackend`); with the in-memory one, a publish reaches only
the subscribers of the worker that received it.

Built on gunicorn's public worker API (``gunicorn.workers.base.Worker``: ``init_signals``,
``run``, ``notify``, ``cfg``, ``sockets``, ``wsgi``) and uvicorn's ``Config``/``Server``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.workers.base import Worker as BaseWorker  # type: ignore[import-untyped]
from uvicorn.config import Config

from ..lifecycle import ShutdownOptions
from .uvicorn import ConnectionGuard, Server

__all__ = ["Worker"]

_QUICK_STOP_LIMIT = 2.0  # what gunicorn gives workers after SIGINT/SIGQUIT to its master


class Worker(BaseWorker):  # type: ignore[misc]
    """A gunicorn worker serving an ASGI app with uvicorn (``loop`` and ``http``: auto)."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": "auto"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, gunicorn_log in (
            ("uvicorn.error", self.log.error_log),
            ("uvicorn.access", self.log.access_log),
        ):
            logger = logging.getLogger(name)
            logger.handlers = gunicorn_log.handlers
            logger.setLevel(gunicorn_log.level)
            logger.propagate = False
        ours = logging.getLogger("sse_toolkit")
        ours.handlers = self.log.error_log.handlers
        ours.setLevel(self.log.error_log.level)
        ours.propagate = False
        self.shutdown_options = ShutdownOptions.from_environment()
        options: dict[str, Any] = {
            "app": None,
            "log_config": None,
            "timeout_keep_alive": self.cfg.keepalive,
            "timeout_notify": self.timeout,
            "callback_notify": self._notify,
            "limit_max_requests": self.max_requests,
            "forwarded_allow_ips": self.cfg.forwarded_allow_ips,
        }
        if self.cfg.is_ssl:
            ssl = self.cfg.ssl_options
            options.update(
                ssl_keyfile=ssl.get("keyfile"),
                ssl_certfile=ssl.get("certfile"),
                ssl_keyfile_password=ssl.get("password"),
                ssl_version=ssl.get("ssl_version"),
                ssl_cert_reqs=ssl.get("cert_reqs"),
                ssl_ca_certs=ssl.get("ca_certs"),
                ssl_ciphers=ssl.get("ciphers"),
            )
        if self.cfg.settings["backlog"].value:
            options["backlog"] = self.cfg.settings["backlog"].value
        options.update(self.CONFIG_KWARGS)
        self.config = Config(**options)

    def init_signals(self) -> None:
        # uvicorn handles SIGINT and SIGTERM while it serves (and re-raises them after a
        # clean stop, with the handlers it found): outside that, they ask for nothing, so the
        # re-raise does not turn a clean stop into death by signal. Others as gunicorn's.
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(signum, _ignore)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def run(self) -> None:
        _run(self._serve(), self.config.get_loop_factory())

    async def _serve(self) -> None:
        self.config.app = self.wsgi  # (gunicorn's name for the loaded app)
        options = self.shutdown_options
        server = Server(self.config, shutdown=options, guard=ConnectionGuard())
        # SIGQUIT is gunicorn's quick stop: end the streams within its 2 s all the same.
        quick = replace(options, grace=min(options.grace, _QUICK_STOP_LIMIT / 2))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, self._quick_stop, server, quick)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    @staticmethod
    def _quick_stop(server: Server, quick: ShutdownOptions) -> None:
        server.shutdown_options = quick
        server.handle_exit(signal.SIGTERM, None)

    async def _notify(self) -> None:
        self.notify()  # gunicorn's heartbeat: the master kills a worker that stops it


def _run(main: Coroutine[Any, Any, None], loop_factory: Any) -> None:
    if loop_factory is None:
        asyncio.run(main)
        return
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _ignore(signum: int, frame: object) -> None:
    """A stop signal outside uvicorn's own handlers (see `Worker.init_signals`)."""
