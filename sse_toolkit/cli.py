"""The hub command: ``python -m sse_toolkit`` (or ``sse-toolkit``).

``serve`` (the default) runs an `SSEApp` at ``/sse`` with uvicorn, leaving ``/`` for the
demo page. ``token`` mints a JWT (`sse_toolkit.tokens.create_token`) for a hub started
with ``--secret`` (HS256/384/512) or ``--jwt-key`` (the public half of ``--private-key``).

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
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .app import SSEApp
from .hub import SSE_PREFIX, Hub, HubSettings
from .manager import ChannelManager
from .policy import Auth, channel_name_error
from .runner import add_run_arguments, port_number, run, run_command
from .tokens import (
    ACTIONS,
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    TokenVerifier,
    create_token,
)

__all__ = ["main"]

log = logging.getLogger("sse_toolkit.hub")

DEFAULT_STREAMS_PER_CLIENT = 1000
DEFAULT_CHANNELS_PER_CLIENT = 256
_ACTION_CHOICES = ("subscribe", "publish", "stats")
assert frozenset(_ACTION_CHOICES) == ACTIONS
_ALGORITHMS = (*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS)
RECOMMENDED_SECRET_BYTES = 32  # RFC 7518, 3.2: an HS256 key as long as the hash
_KEY_FLAGS = ("--secret", "--jwt-key", "--jwks-url")


class _OptionError(Exception):
    """A mistake in one option: ``argument FLAG: MESSAGE``, exit status 2, no traceback."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")


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
        help="mint a JWT for a hub run with --secret or --jwt-key",
        description=(
            "Print a JWT granting ACTIONs on CHANNELs for TTL seconds, signed with the"
            " hub's --secret (HS256/384/512) or with the private key whose public half the"
            " hub reads with --jwt-key. Send it as `Authorization: Bearer TOKEN`, the"
            " sse_token cookie or ?token=TOKEN. Any JWT library mints the same tokens:"
            " see the docs' 'Authenticating clients'."
        ),
        formatter_class=_HelpFormatter,
    )
    key = token.add_mutually_exclusive_group(required=True)
    key.add_argument("--secret", help="the hub's --secret (HS256/384/512)")
    key.add_argument(
        "--private-key",
        metavar="PATH",
        help="a PEM private key (PKCS#8 or traditional, unencrypted) whose public key the"
        " hub reads with --jwt-key (needs sse-toolkit[crypto])",
    )
    token.add_argument(
        "--algorithm",
        choices=_ALGORITHMS,
        metavar="ALG",
        default=None,
        help="the JWS algorithm: HS256, HS384, HS512 with --secret; RS256 ... PS512,"
        " ES256/384/512 or EdDSA with --private-key (default: HS256 with --secret;"
        " with --private-key, by the key's type: RS256, ES256/384/512 by curve, EdDSA)",
    )
    token.add_argument(
        "--key-id",
        metavar="KID",
        help="the kid header: which key of the hub's JWKS checks the token",
    )
    token.add_argument(
        "--channel",
        action="append",
        type=_token_channel,
        help="a channel pattern the token grants: a name, * for every channel or prefix.*"
        " for the channels named prefix.something (repeatable; needed to subscribe or"
        " publish, not for stats)",
    )
    token.add_argument(
        "--action",
        action="append",
        choices=_ACTION_CHOICES,
        help="an action the token grants (repeatable; stats covers every channel)"
        " (default: subscribe)",
    )
    token.add_argument(
        "--ttl", type=_ttl, default=3600.0, help="seconds the token is valid (default: 3600)"
    )
    token.add_argument("--subject", metavar="SUB", help="the sub claim: the client's identity")
    token.add_argument(
        "--audience", metavar="AUD", help="the aud claim, for a hub run with --jwt-audience"
    )
    token.add_argument(
        "--issuer", metavar="ISS", help="the iss claim, for a hub run with --jwt-issuer"
    )
    return parser, token


def _token_channel(value: str) -> str:
    """A channel name as the app accepts it, ``*`` (every channel) or ``prefix.*``."""
    if value == "*":
        return value
    name = value[:-2] if value.endswith(".*") else value
    error = channel_name_error(name)
    if error is not None:
        raise argparse.ArgumentTypeError(
            f"{error.message} (or a pattern: * or prefix.*), not {value!r}"
        )
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
    add("--port", type=port_number, default=8000, help="port to listen on")
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
            "require JWTs signed with this shared secret (HS256/384/512; 32 bytes or more"
            " recommended; see the token command) for every action, subscribing included,"
            " unless --token-required-for narrows it"
        ),
    )
    add(
        "--jwt-key",
        metavar="PATH",
        default=None,
        shown="none",
        help=(
            "require JWTs signed with the private half of this key: a PEM public key or"
            " certificate (RS*, PS*, ES*, EdDSA) or a JWKS JSON file (keys picked by kid;"
            " needs sse-toolkit[crypto]); with --secret, either key will do"
        ),
    )
    add(
        "--jwks-url",
        metavar="URL",
        default=None,
        shown="none",
        help=(
            "require JWTs signed with a key of the JWKS at this http(s) URL: fetched in a"
            " worker thread, cached 5 minutes, fetched again for an unknown kid (key"
            " rotation)"
        ),
    )
    add(
        "--jwt-algorithm",
        action="append",
        choices=_ALGORITHMS,
        metavar="ALG",
        default=None,
        shown="every one the keys allow",
        help=(
            "an accepted JWS algorithm (repeatable): HS256, HS384, HS512 (with --secret),"
            " RS256 ... PS512, ES256, ES384, ES512, EdDSA (with a public key); none is"
            " never accepted"
        ),
    )
    add(
        "--jwt-audience",
        action="append",
        metavar="AUD",
        default=None,
        shown="none: a token naming an audience is refused",
        help="an audience the tokens' aud claim must name (repeatable: any of them)",
    )
    add(
        "--jwt-issuer",
        metavar="ISS",
        default=None,
        shown="none: not checked",
        help="the issuer the tokens' iss claim must be",
    )
    add(
        "--token-cookie",
        metavar="NAME",
        default="sse_token",
        help="the cookie a token may come in (besides Authorization: Bearer and ?token=)",
    )
    add(
        "--token-required-for",
        action="append",
        choices=_ACTION_CHOICES,
        metavar="ACTION",
        default=None,
        shown="every action with tokens on",
        help=(
            "with --secret, --jwt-key or --jwks-url, an action that needs a token:"
            " subscribe, publish or stats (repeatable; the others are open)"
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
        "--presence",
        action="store_true",
        default=False,
        help="serve GET /sse/_presence/{channel}: subscribers and their token subjects,"
        " and with ?stream=1 their sse.join/sse.leave events (off by default)",
    )
    add(
        "--presence-ttl",
        type=_ttl,
        metavar="SECONDS",
        default=None,
        shown="30",
        help="with --presence and --redis-url, how long a process's presence entries live"
        " without a refresh: a crashed hub's subscribers are gone from the counts within it",
    )
    add(
        "--metrics",
        action="store_true",
        default=False,
        help="serve GET /sse/_metrics: Prometheus metrics, guarded like --stats (needs"
        " sse-toolkit[metrics]; off by default)",
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
    return serve(args, parser)


# -- the token command ---------------------------------------------------------------------


def _token(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    actions = list(dict.fromkeys(args.action or ["subscribe"]))
    channels = list(dict.fromkeys(args.channel or []))
    if not channels and {"subscribe", "publish"} & set(actions):
        parser.error("argument --channel: required to subscribe or publish (a name, * or prefix.*)")
    key: str | bytes
    if args.private_key is not None:
        key, algorithm = _private_key(parser, args.private_key, args.algorithm)
    else:
        if not args.secret.strip():
            parser.error("argument --secret: must not be empty")
        algorithm = args.algorithm or "HS256"
        if algorithm not in HMAC_ALGORITHMS:
            parser.error(
                f"argument --algorithm: {algorithm} signs with a private key (--private-key);"
                " a secret signs HS256, HS384 or HS512"
            )
        key = args.secret
        _warn_short_secret(args.secret, "sse-toolkit token: warning: ")
    try:
        with warnings.catch_warnings():
            # (PyJWT's InsecureKeyLengthWarning: said once above, in our words)
            warnings.simplefilter("ignore")
            token = create_token(
                key,
                channels=channels,
                actions=actions,
                ttl=args.ttl,
                subject=args.subject,
                audience=args.audience,
                issuer=args.issuer,
                algorithm=algorithm,
                key_id=args.key_id,
            )
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(token)
    return 0


def _private_key(
    parser: argparse.ArgumentParser, path: str, algorithm: str | None
) -> tuple[bytes, str]:
    """The PEM bytes of ``--private-key`` and the algorithm to sign with (checked)."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        parser.error(f"argument --private-key: cannot read {path!r}: {exc.strerror or exc}")
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # pragma: no cover - the extra is missing
        parser.error(
            "argument --private-key: needs cryptography: pip install 'sse-toolkit[crypto]'"
        )
    try:
        private = serialization.load_pem_private_key(pem, password=None)
        allowed = _key_algorithms(private.public_key())
    except (ValueError, TypeError) as exc:
        parser.error(f"argument --private-key: {path!r} is not a usable PEM private key: {exc}")
    if algorithm is None:
        return pem, allowed[0]
    if algorithm not in allowed:
        parser.error(
            f"argument --algorithm: {algorithm} cannot sign with the key in {path!r}"
            f" (it signs {', '.join(allowed)})"
        )
    return pem, algorithm


def _key_algorithms(public_key: Any) -> tuple[str, ...]:
    """The algorithms a key pair signs, the usual one first; ValueError if none."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return tuple(a for a in ASYMMETRIC_ALGORITHMS if a[:2] in ("RS", "PS"))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if public_key.curve.name not in by_curve:
            raise ValueError(f"unsupported elliptic curve {public_key.curve.name!r}")
        return (by_curve[public_key.curve.name],)
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ("EdDSA",)
    raise ValueError(f"a {type(public_key).__name__} does not sign JWTs")


def _warn_short_secret(secret: str, prefix: str = "") -> bool:
    """Say so when a secret is shorter than recommended; whether it is."""
    size = len(secret.encode())
    if size >= RECOMMENDED_SECRET_BYTES:
        return False
    message = (
        f"the secret is {size} bytes: {RECOMMENDED_SECRET_BYTES} or more recommended"
        " (a random one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
    if prefix:
        print(prefix + message, file=sys.stderr)
    else:
        log.warning("--secret: %s", message)
    return True


# -- serving -------------------------------------------------------------------------------


def token_verifier(args: argparse.Namespace) -> TokenVerifier | None:
    """One `TokenVerifier` with every key the options give (None: no tokens); an
    `_OptionError` naming the option at fault."""
    secret = args.secret
    if secret is None and args.jwt_key is None and args.jwks_url is None:
        for flag, value in (
            ("--token-required-for", args.token_required_for),
            ("--jwt-algorithm", args.jwt_algorithm),
            ("--jwt-audience", args.jwt_audience),
            ("--jwt-issuer", args.jwt_issuer),
        ):
            if value:
                raise _OptionError(
                    flag,
                    f"needs {', '.join(_KEY_FLAGS[:-1])} or {_KEY_FLAGS[-1]}:"
                    " without a key no token is ever checked",
                )
        return None
    if secret is not None and not secret.strip():
        raise _OptionError("--secret", "must not be empty (leave it out for no tokens)")
    if args.jwks_url is not None and not args.jwks_url.startswith(("http://", "https://")):
        raise _OptionError("--jwks-url", f"must be an http(s) URL, not {args.jwks_url!r}")
    text = None
    if args.jwt_key is not None:
        try:
            text = Path(args.jwt_key).read_text()
        except OSError as exc:
            message = f"cannot read {args.jwt_key!r}: {exc.strerror or exc}"
            raise _OptionError("--jwt-key", message) from None
        except UnicodeDecodeError:
            message = f"{args.jwt_key!r} is neither a PEM file nor a JWKS (not text)"
            raise _OptionError("--jwt-key", message) from None
        try:
            TokenVerifier.from_file(args.jwt_key)  # the file alone: a mistake names it
        except ImportError as exc:
            raise _OptionError("--jwt-key", str(exc)) from None
        except (ValueError, TypeError) as exc:
            message = f"{args.jwt_key!r} is not a usable PEM public key or JWKS: {exc}"
            raise _OptionError("--jwt-key", message) from None
    options: dict[str, Any] = {
        "secret": secret,
        "jwks_url": args.jwks_url,
        "algorithms": args.jwt_algorithm,
        "audience": args.jwt_audience,
        "issuer": args.jwt_issuer,
    }
    try:
        if text is None:
            return TokenVerifier(**options)
        if text.lstrip().startswith("{"):
            return TokenVerifier(jwks=text, **options)
        return TokenVerifier(public_key=text, **options)
    except (ValueError, TypeError) as exc:  # (the keys were checked: the algorithms)
        raise _OptionError("--jwt-algorithm", str(exc)) from None


def serve(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    try:
        verifier = token_verifier(args)
    except _OptionError as exc:
        if parser is not None:
            parser.error(str(exc))
        print(f"sse-toolkit: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        print("the hub needs uvicorn: pip install 'sse-toolkit[server]'", file=sys.stderr)
        return 2

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    if args.secret is not None and _warn_short_secret(args.secret):
        # (said once, here: not PyJWT's warning on every request's first check)
        warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")
    if args.presence_ttl is not None and not args.presence:
        message = "argument --presence-ttl: needs --presence"
        if parser is not None:
            parser.error(message)
        print(f"sse-toolkit: error: {message}", file=sys.stderr)
        return 2
    backend = None
    if args.redis_url:
        from .backends.redis import RedisBackend

        try:
            backend = RedisBackend(args.redis_url, prefix=args.redis_prefix)
        except (ImportError, ValueError) as exc:  # no redis-py, or not a Redis URL
            print(f"sse-toolkit: --redis-url: {exc}", file=sys.stderr)
            return 2
    manager = ChannelManager(backend=backend)
    allow_publish = args.allow_publish or args.demo
    stats = args.stats or args.demo
    try:
        sse = SSEApp(
            manager,
            allow_publish=allow_publish,
            # None: every action needs a token (with a key), as in SSEApp.
            auth=Auth(
                verifier,
                token_cookie=args.token_cookie,
                required_for=args.token_required_for,
            ),
            stats=stats,
            presence=args.presence,
            presence_ttl=args.presence_ttl,
            metrics=args.metrics,
            cors_origins=args.cors_origin,
            heartbeat_interval=args.heartbeat,
            max_subscribers_per_client=args.max_streams_per_client or None,
            max_channels_per_client=args.max_channels_per_client or None,
        )
    except (ValueError, TypeError) as exc:  # a mistake in the options: say which, no traceback
        print(f"sse-toolkit: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # --metrics without prometheus_client: the extra to install
        print(f"sse-toolkit: --metrics: {exc}", file=sys.stderr)
        return 2
    needs_token = sse.auth.required_for if verifier is not None else frozenset()
    settings = HubSettings(
        allow_publish=allow_publish,
        token_required_for=needs_token,
        stats=stats,
        demo=args.demo,
        token_cookie=args.token_cookie,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{args.port}"
    _log_start(args, base, needs_token, verifier, allow_publish=allow_publish, stats=stats)
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
    verifier: TokenVerifier | None = None,
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
    if verifier is not None:
        log.info("tokens: JWTs, %s", _describe_keys(args, verifier))
    mint = _mint_command(args)
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
            log.info("stats token: STATS_TOKEN=$(%s --action stats)", mint)
    if getattr(args, "presence", False):
        log.info("presence:  curl%s %s%s/_presence/demo", subscribe_auth, base, SSE_PREFIX)
    if getattr(args, "metrics", False):
        metrics_auth = bearer.replace("$TOKEN", "$STATS_TOKEN") if "stats" in needs_token else ""
        log.info("metrics:   curl%s %s%s/_metrics", metrics_auth, base, SSE_PREFIX)
        if "stats" in needs_token and not stats:
            log.info("stats token: STATS_TOKEN=$(%s --action stats)", mint)


def _describe_keys(args: argparse.Namespace, verifier: TokenVerifier) -> str:
    """Which keys check the tokens (never the secret itself)."""
    keys = []
    if args.secret is not None:
        keys.append("a shared secret (--secret)")
    if args.jwt_key is not None:
        keys.append(f"the key(s) in {args.jwt_key}")
    if args.jwks_url is not None:
        keys.append(f"the JWKS at {_redacted(args.jwks_url)}")
    text = f"signed with {' or '.join(keys)}; algorithms {', '.join(sorted(verifier.algorithms))}"
    if args.jwt_audience:
        text += f"; audience {' or '.join(args.jwt_audience)}"
    if args.jwt_issuer:
        text += f"; issuer {args.jwt_issuer}"
    return text


def _mint_command(args: argparse.Namespace) -> str:
    """The token command for this hub's tokens (the key elided: never logged)."""
    if args.secret is not None:
        mint = "python -m sse_toolkit token --secret ..."
    else:  # (a JWKS URL's issuer mints with its private key: the command can as well)
        mint = "python -m sse_toolkit token --private-key PRIVATE_KEY.pem"
    if args.jwt_audience:
        mint += f" --audience {shlex.quote(args.jwt_audience[0])}"
    if args.jwt_issuer:
        mint += f" --issuer {shlex.quote(args.jwt_issuer)}"
    return mint


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{location}"
