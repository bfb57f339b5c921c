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
import math
import sys
from collections.abc import Sequence

from .app import SSEApp
from .hub import SSE_PREFIX, Hub, HubSettings
from .manager import ChannelManager
from .policy import channel_name_error
from .runner import add_run_arguments, run, run_command
from .tokens import ACTIONS, create_token

__all__ = ["main"]

log = logging.getLogger("sse_toolkit.hub")

DEFAULT_STREAMS_PER_CLIENT = 1000
DEFAULT_CHANNELS_PER_CLIENT = 256
_ACTION_CHOICES = ("subscribe", "publish", "stats")
assert frozenset(_ACTION_CHOICES) == ACTIONS


def version() -> str:
    """The installed distribution's version (the package's ``__version__`` if not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sse-toolkit")
    except PackageNotFoundError:
        from . import __version__

        return __version__


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where it says one already, for
    flags (off unless given) and for required options; ``None`` and ``""`` show as none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default is argparse.SUPPRESS
            or action.nargs == 0
            or action.required
            or not action.option_strings
        ):
            return text
        if action.default is None or action.default == "" or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    return _build_parsers()[0]


def _build_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command's parser and its ``token`` sub-command's (which reports its own errors)."""
    parser = argparse.ArgumentParser(
        prog="sse-toolkit",
        description=(
            "Server-Sent Events hub: an SSEApp at /sse and a dashboard at /. With no"
            " sub-command, the options below serve the hub (as `serve` does)."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser(
        "serve",
        help="run the hub (the default command)",
        description="Run the hub: an SSEApp at /sse and a dashboard at /.",
        formatter_class=_HelpFormatter,
    )
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
        formatter_class=_HelpFormatter,
    )
    add_run_arguments(run)

    token = commands.add_parser(
        "token",
        help="mint a signed token for a hub run with --secret",
        description=(
            "Print a token signed with SECRET granting ACTIONs on CHANNELs for TTL seconds."
            " Send it as `Authorization: Bearer TOKEN`, the sse_token cookie or ?token=TOKEN."
        ),
        formatter_class=_HelpFormatter,
    )
    token.add_argument("--secret", required=True, help="the hub's --secret")
    token.add_argument(
        "--channel",
        action="append",
        required=True,
        type=_token_channel,
        help="a channel the token grants (repeatable; * for all; a stats token needs *)",
    )
    token.add_argument(
        "--action",
        action="append",
        choices=_ACTION_CHOICES,
        help="an action the token grants (repeatable) (default: subscribe)",
    )
    token.add_argument(
        "--ttl", type=_ttl, default=3600.0, help="seconds the token is valid (default: 3600)"
    )
    return parser, token


def _token_channel(value: str) -> str:
    """A channel name as the app accepts it, or ``*`` (every channel)."""
    if value == "*":
        return value
    error = channel_name_error(value)
    if error is not None:
        raise argparse.ArgumentTypeError(f"{error.message}, not {value!r}")
    return value


def _ttl(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, not {value!r}")
    return seconds


def _add_serve_options(parser: argparse.ArgumentParser, *, suppress_defaults: bool = False) -> None:
    # Each help text says its default itself: the sub-command's defaults are suppressed,
    # and its help must read like the top-level one.
    def add(*flags: str, default: object, help: str, shown: object = None, **kw: object) -> None:
        if kw.get("action") != "store_true":
            help = f"{help} (default: {default if shown is None else shown})"
        value = argparse.SUPPRESS if suppress_defaults else default
        parser.add_argument(*flags, default=value, help=help, **kw)  # type: ignore[arg-type]

    add("--host", default="127.0.0.1", help="address to listen on")
    add("--port", type=int, default=8000, help="port to listen on")
    add(
        "--allow-publish",
        action="store_true",
        default=False,
        help="enable publishing: POST /sse/{channel} with a JSON body (off by default)",
    )
    add(
        "--secret",
        default=None,
        shown="none: no tokens",
        help=(
            "require tokens signed with this secret (see the token command) for every"
            " action, subscribing included, unless --token-required-for narrows it"
        ),
    )
    add(
        "--token-required-for",
        action="append",
        choices=_ACTION_CHOICES,
        metavar="ACTION",
        default=None,
        shown="every action with --secret",
        help=(
            "with --secret, an action that needs a token: subscribe, publish or stats"
            " (repeatable; the others are open)"
        ),
    )
    add(
        "--stats",
        action="store_true",
        default=False,
        help="serve GET /sse/_stats: subscribers, published and dropped per channel (off by"
        " default)",
    )
    add(
        "--demo",
        action="store_true",
        default=False,
        help="a local playground: the hub publishes sample events, and --allow-publish and"
        " --stats are on (off by default)",
    )
    add(
        "--cors-origin",
        action="append",
        default=[],
        shown="none",
        help="an origin (scheme://host[:port], or *) whose pages may read streams (repeatable)",
    )
    add("--heartbeat", type=float, default=15.0, help="seconds of silence before a heartbeat")
    add(
        "--max-streams-per-client",
        type=int,
        default=DEFAULT_STREAMS_PER_CLIENT,
        help="open streams per client address (0: no bound)",
    )
    add(
        "--max-channels-per-client",
        type=int,
        default=DEFAULT_CHANNELS_PER_CLIENT,
        help="distinct channels the open streams of one client address may name (0: no bound)",
    )
    add(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level",
    )
    add(
        "--redis-url",
        default=None,
        shown="none: channels in this process",
        help="share channels through Redis (redis://, rediss://; needs sse-toolkit[redis])",
    )
    add("--redis-prefix", default="sse:", help="key prefix in Redis")


def main(argv: Sequence[str] | None = None) -> int:
    parser, token_parser = _build_parsers()
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "token":
        return _token(token_parser, args)
    if args.token_required_for and args.secret is None:
        parser.error(
            "--token-required-for needs --secret: without a secret no token is ever checked"
        )
    return serve(args)


def _token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    actions = list(dict.fromkeys(args.action or ["subscribe"]))
    channels = list(dict.fromkeys(args.channel))
    if not args.secret.strip():
        parser.error("argument --secret: must not be empty")
    if "stats" in actions and "*" not in channels:
        parser.error(
            "argument --action: a stats token needs --channel '*' (stats cover every channel)"
        )
    try:
        token = create_token(args.secret, channels=channels, actions=actions, ttl=args.ttl)
    except ValueError as exc:
        parser.error(str(exc))
    print(token)
    return 0


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
    allow_publish = args.allow_publish or args.demo
    stats = args.stats or args.demo
    try:
        sse = SSEApp(
            manager,
            allow_publish=allow_publish,
            secret=args.secret,
            # None: every action needs a token (with a secret), as in SSEApp.
            token_required_for=args.token_required_for,
            stats=stats,
            cors_origins=args.cors_origin,
            heartbeat_interval=args.heartbeat,
            max_subscribers_per_client=args.max_streams_per_client or None,
            max_channels_per_client=args.max_channels_per_client or None,
        )
    except (ValueError, TypeError) as exc:  # a mistake in the options: say which, no traceback
        print(f"sse-toolkit: {exc}", file=sys.stderr)
        return 2
    needs_token = sse.auth.required_for if args.secret is not None else frozenset()
    settings = HubSettings(
        allow_publish=allow_publish,
        token_required_for=needs_token,
        stats=stats,
        demo=args.demo,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{args.port}"
    _log_start(args, base, needs_token, allow_publish=allow_publish, stats=stats)
    # Everything imported and built so far lives as long as the hub: keep it out of the
    # garbage collector's full passes, which otherwise stall streams for tens of ms.
    gc.freeze()
    # The runner ends every stream cleanly on SIGINT/SIGTERM, then uvicorn stops (and the
    # app's lifespan closes the manager); exit status 0, no traceback.
    run(Hub(sse, settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _log_start(
    args: argparse.Namespace,
    base: str,
    needs_token: frozenset[str],
    *,
    allow_publish: bool,
    stats: bool,
) -> None:
    """What a newcomer needs first: where the dashboard is, then commands that work as
    printed (in a shell, once ``TOKEN`` holds a token when the hub asks for one)."""
    log.info("dashboard: %s/ (open it in a browser)", base)
    log.info("sse-toolkit hub on %s (streams at %s%s/{channel})", base, base, SSE_PREFIX)
    if args.redis_url:
        log.info(
            "channels shared through Redis at %s (prefix %r)",
            _redacted(args.redis_url),
            args.redis_prefix,
        )
    if args.demo:
        log.info("demo: the hub publishes sample events; publishing and stats are on")
    bearer = ' -H "authorization: Bearer $TOKEN"'
    subscribe_auth = bearer if "subscribe" in needs_token else ""
    log.info("subscribe: curl -N%s %s%s/demo", subscribe_auth, base, SSE_PREFIX)
    if allow_publish:
        publish_auth = bearer if "publish" in needs_token else ""
        body = """-d '{"data": "hi"}'"""
        json_type = "-H 'content-type: application/json'"
        log.info(
            "publish:   curl -X POST %s%s %s %s%s/demo",
            json_type,
            publish_auth,
            body,
            base,
            SSE_PREFIX,
        )
    else:
        log.info("publishing over HTTP is off (--allow-publish turns it on)")
    mint = "python -m sse_toolkit token --secret ..."
    actions = [a for a in ("subscribe", "publish") if a in needs_token]
    if not allow_publish and "publish" in actions:
        actions.remove("publish")
    if actions:
        grants = " ".join(f"--action {action}" for action in actions)
        log.info("token:     TOKEN=$(%s --channel demo %s)", mint, grants)
    if stats:
        stats_auth = bearer.replace("$TOKEN", "$STATS_TOKEN") if "stats" in needs_token else ""
        log.info("stats:     curl%s %s%s/_stats", stats_auth, base, SSE_PREFIX)
        if "stats" in needs_token:
            log.info("stats token: STATS_TOKEN=$(%s --channel '*' --action stats)", mint)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{location}"
