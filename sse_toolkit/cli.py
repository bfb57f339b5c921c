"""The hub command: ``python -m sse_toolkit`` (or ``sse-toolkit``).

``serve`` (the default) runs an `SSEApp` at ``/sse`` with uvicorn, leaving ``/`` for the
demo page. ``token`` mints a signed token for a hub started with ``--secret``.

``run`` serves any ASGI app so that its streams end cleanly (see `sse_toolkit.runner`).

Shutting down with open streams: uvicorn waits for every response to finish before it
tells the app (lifespan shutdown), and an event stream never finishes by itself. So the
hub is served by `sse_toolkit.run`, which on SIGINT or SIGTERM first ends every stream
with a retry hint and a clean end of body, and then lets uvicorn shut down as usual.
Nothing is patched on import.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from .app import SSEApp
from .hub import SSE_PREFIX, Hub, HubSettings
from .manager import ChannelManager
from .runner import add_run_arguments, run, run_command
from .tokens import ACTIONS, create_token

__all__ = ["main"]

log = logging.getLogger("sse_toolkit.hub")

DEFAULT_STREAMS_PER_CLIENT = 1000
DEFAULT_CHANNELS_PER_CLIENT = 256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-toolkit", description="Server-Sent Events hub")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the hub (the default command)")
    # The sub-command's defaults are suppressed: otherwise they would overwrite options
    # given before it (``--secret S serve`` would serve without the secret).
    _add_serve_options(serve, suppress_defaults=True)
    _add_serve_options(parser)

    run = commands.add_parser(
        "run",
        help="serve any ASGI app so that its streams end cleanly on SIGINT/SIGTERM",
        description=(
            "Serve an ASGI app (module:attr) in place of `uvicorn module:attr`: on SIGINT or"
            " SIGTERM every open event stream ends with a retry hint and a clean end of"
            " body, then the server stops as usual (exit status 0)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_arguments(run)

    token = commands.add_parser("token", help="mint a signed token for a hub run with --secret")
    token.add_argument("--secret", required=True)
    token.add_argument("--channel", action="append", required=True, help="repeatable; * = all")
    token.add_argument(
        "--action", action="append", choices=sorted(ACTIONS), help="repeatable (subscribe)"
    )
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (3600)")
    return parser


def _add_serve_options(parser: argparse.ArgumentParser, *, suppress_defaults: bool = False) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress_defaults else value

    parser.add_argument("--host", default=default("127.0.0.1"))
    parser.add_argument("--port", type=int, default=default(8000))
    parser.add_argument(
        "--allow-publish",
        action="store_true",
        default=default(False),
        help="enable POST /sse/{ch}",
    )
    parser.add_argument(
        "--secret", default=default(None), help="require tokens signed with this secret to publish"
    )
    parser.add_argument(
        "--stats", action="store_true", default=default(False), help="serve GET /sse/_stats"
    )
    parser.add_argument("--cors-origin", action="append", default=default([]), help="repeatable")
    parser.add_argument("--heartbeat", type=float, default=default(15.0), help="seconds (15)")
    parser.add_argument(
        "--max-streams-per-client",
        type=int,
        default=default(DEFAULT_STREAMS_PER_CLIENT),
        help=f"open streams per client address ({DEFAULT_STREAMS_PER_CLIENT}; 0: no bound)",
    )
    parser.add_argument(
        "--max-channels-per-client",
        type=int,
        default=default(DEFAULT_CHANNELS_PER_CLIENT),
        help=(
            "distinct channels the open streams of one client address may name "
            f"({DEFAULT_CHANNELS_PER_CLIENT}; 0: no bound)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default=default("info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    parser.add_argument(
        "--redis-url",
        default=default(None),
        help="share channels through Redis (redis://, rediss://; needs sse-toolkit[redis])",
    )
    parser.add_argument("--redis-prefix", default=default("sse:"), help="key prefix (sse:)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "token":
        actions = args.action or ["subscribe"]
        try:
            token = create_token(args.secret, channels=args.channel, actions=actions, ttl=args.ttl)
        except ValueError as exc:
            build_parser().error(str(exc))
        print(token)
        return 0
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        print("the hub needs uvicorn: pip install 'sse-toolkit[server]'", file=sys.stderr)
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    backend = None
    if args.redis_url:
        from .backends.redis import RedisBackend

        backend = RedisBackend(args.redis_url, prefix=args.redis_prefix)
    manager = ChannelManager(backend=backend)
    try:
        sse = SSEApp(
            manager,
            allow_publish=args.allow_publish,
            secret=args.secret,
            token_required_for=("publish", "stats") if args.secret is not None else None,
            stats=args.stats,
            cors_origins=args.cors_origin,
            heartbeat_interval=args.heartbeat,
            max_subscribers_per_client=args.max_streams_per_client or None,
            max_channels_per_client=args.max_channels_per_client or None,
        )
    except (ValueError, TypeError) as exc:  # a mistake in the options: say which, no traceback
        print(f"sse-toolkit: {exc}", file=sys.stderr)
        return 2
    settings = HubSettings(
        allow_publish=args.allow_publish,
        token_required_for=sse.auth.required_for if args.secret is not None else frozenset(),
        stats=args.stats,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{args.port}"
    if backend is not None:
        log.info(
            "channels shared through Redis at %s (prefix %r)",
            _redacted(args.redis_url),
            args.redis_prefix,
        )
    log.info("sse-toolkit hub on %s (streams at %s%s/{channel})", base, base, SSE_PREFIX)
    log.info("subscribe: curl -N %s%s/demo", base, SSE_PREFIX)
    if args.allow_publish:
        auth = " -H 'authorization: Bearer TOKEN'" if args.secret else ""
        body = """-d '{"data": "hi"}'"""
        json_type = "-H 'content-type: application/json'"
        log.info(
            "publish:   curl -X POST %s%s %s %s%s/demo", json_type, auth, body, base, SSE_PREFIX
        )
        if args.secret:
            mint = "python -m sse_toolkit token --secret ... --channel demo --action publish"
            log.info("token:     TOKEN=$(%s)", mint)
    else:
        log.info("publishing over HTTP is off (--allow-publish turns it on)")
    # Everything imported and built so far lives as long as the hub: keep it out of the
    # garbage collector's full passes, which otherwise stall streams for tens of ms.
    gc.freeze()
    # The runner ends every stream cleanly on SIGINT/SIGTERM, then uvicorn stops (and the
    # app's lifespan closes the manager); exit status 0, no traceback.
    run(Hub(sse, settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{location}"
