"""Issue 10, the command line: --version, every option's help and default, one meaning of a
secret in the hub and in SSEApp (--token-required-for), the token command's checks, --demo,
and the 405 that says how to publish."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from httpx_sse import connect_sse

from sse_toolkit import cli
from sse_toolkit.hub import Hub as HubApp
from sse_toolkit.tokens import ACTIONS, TokenVerifier, verify_token

from .servers import free_port
from .test_cli import JSON, SECRET, WAIT, Hub, bearer, mint, run_hub, token, wait_until

FLAG_DEFAULT_NOISE = ("(default: None)", "(default: False)", "(default: True)", "(default: [])")


def sse_toolkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sse_toolkit", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT) as client:
        yield client


# -- --version -----------------------------------------------------------------------------


def test_version_prints_the_installed_version_and_exits_0() -> None:
    done = sse_toolkit("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sse-toolkit {dist_version('sse-toolkit')}\n"
    assert cli.version() == dist_version("sse-toolkit")


def test_the_console_script_prints_the_version_too() -> None:
    script = shutil.which("sse-toolkit", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the sse-toolkit console script is not installed beside this Python")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sse-toolkit {dist_version('sse-toolkit')}\n"


# -- --help: every option with its help and its default ------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _help_entries(text: str) -> dict[str, str]:
    """Each option of a --help text and its help, continuation lines joined."""
    entries: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^  (-[^ ]*(?: [^ -][^ ]*)?(?:, -[^ ]*(?: [^ -][^ ]*)?)*)(.*)$", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2).strip()
        elif current is not None and line.startswith("      "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {" ".join(key.split()): value for key, value in entries.items()}


@pytest.mark.parametrize("command", [None, "serve", "token", "run"])
def test_help_lists_every_option_with_help_and_its_default(command: str | None) -> None:
    parser = cli.build_parser()
    shown = parser if command is None else _subparsers(parser)[command]
    args = ["--help"] if command is None else [command, "--help"]
    done = sse_toolkit(*args, env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: sse-toolkit{'' if command is None else ' ' + command}")
    entries = _help_entries(done.stdout)
    for action in shown._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        option = action.option_strings[-1]
        (entry,) = [text for key, text in entries.items() if key.split()[0] == option]
        assert action.help and entry, option
        assert not any(noise in entry for noise in FLAG_DEFAULT_NOISE), (option, entry)
        if action.nargs == 0 or action.required:
            continue  # a flag is off unless given; a required option has no default
        assert "default" in entry, (option, entry)


@pytest.mark.parametrize("command", [None, "serve"])
def test_the_hub_help_shows_host_port_and_the_meaning_of_a_secret(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    entries = _help_entries(sse_toolkit(*args, env={**os.environ, "COLUMNS": "100"}).stdout)
    assert entries["--host HOST"].endswith("(default: 127.0.0.1)")
    assert entries["--port PORT"].endswith("(default: 8000)")
    assert "every action, subscribing included" in entries["--secret SECRET"]
    assert "(default: every action with tokens on)" in entries["--token-required-for ACTION"]
    for flag in ("--jwt-key PATH", "--jwks-url URL", "--jwt-algorithm ALG", "--jwt-audience AUD"):
        assert "default" in entries[flag], flag
    assert "PEM public key or certificate" in entries["--jwt-key PATH"]
    assert "or a JWKS JSON file" in entries["--jwt-key PATH"]
    assert "--allow-publish and --stats are on" in entries["--demo"]
    if command is None:
        assert "--version" in entries


def test_every_hub_option_is_also_an_option_of_serve() -> None:
    parser = cli.build_parser()
    top = {o for a in parser._actions for o in a.option_strings}
    serve = {o for a in _subparsers(parser)["serve"]._actions for o in a.option_strings}
    assert top - {"--version"} == serve


# -- the hub's settings, in process (the server itself is not started) ---------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run ``cli.main`` up to the point where it would serve: what it would serve, instead."""
    served: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        served.update(app=app, **kwargs)

    monkeypatch.setattr(cli, "run", fake_run)
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)
    return served


def _hub(served: dict[str, Any]) -> HubApp:
    app = served["app"]
    assert isinstance(app, HubApp)
    return app


def test_a_secret_alone_guards_every_action_as_sse_app_does(started: dict[str, Any]) -> None:
    assert cli.main(["--secret", SECRET, "--allow-publish", "--stats"]) == 0
    hub = _hub(started)
    assert hub.sse.auth.required_for == ACTIONS
    assert hub.settings.token_required_for == ACTIONS


def test_token_required_for_narrows_the_actions(started: dict[str, Any]) -> None:
    args = ["--secret", SECRET, "serve", "--token-required-for", "publish"]
    assert cli.main([*args, "--token-required-for", "stats"]) == 0
    hub = _hub(started)
    assert hub.sse.auth.required_for == {"publish", "stats"}
    assert hub.settings.token_required_for == {"publish", "stats"}


def test_without_a_secret_no_action_needs_a_token(started: dict[str, Any]) -> None:
    assert cli.main([]) == 0
    hub = _hub(started)
    assert hub.sse.auth.secret is None
    assert hub.settings.token_required_for == frozenset()
    assert not hub.sse.allow_publish and not hub.sse.stats
    assert (started["host"], started["port"]) == ("127.0.0.1", 8000)


@pytest.mark.parametrize("before_serve", [False, True])
def test_demo_turns_on_publishing_and_stats(started: dict[str, Any], before_serve: bool) -> None:
    assert cli.main(["--demo", "serve"] if before_serve else ["serve", "--demo"]) == 0
    hub = _hub(started)
    assert hub.settings.demo and hub.settings.allow_publish and hub.settings.stats
    assert hub.sse.allow_publish and hub.sse.stats


def test_the_first_line_logged_is_the_dashboard(
    started: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sse_toolkit.hub")
    assert cli.main(["--port", "8123", "--demo"]) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "sse_toolkit.hub"]
    assert messages[0].startswith("dashboard: http://127.0.0.1:8123/ ")
    assert any(m.startswith("demo:") for m in messages)


def test_the_logs_name_the_token_each_command_needs(
    started: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sse_toolkit.hub")
    narrowed = ["--token-required-for", "stats"]
    assert cli.main(["--secret", SECRET, "--allow-publish", "--stats", *narrowed]) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "sse_toolkit.hub"]
    (subscribe,) = [m for m in messages if m.startswith("subscribe:")]
    (publish,) = [m for m in messages if m.startswith("publish:")]
    (stats,) = [m for m in messages if m.startswith("stats:")]
    assert "Bearer" not in subscribe and "Bearer" not in publish
    assert "Bearer $STATS_TOKEN" in stats
    assert not any(m.startswith("token:") for m in messages)  # no demo-channel token needed
    (stats_token,) = [m for m in messages if "STATS_TOKEN=$(" in m]
    assert stats_token.endswith("token --secret ... --action stats)")
    assert SECRET not in "\n".join(messages)


# -- --token-required-for: mistakes --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--token-required-for", "publish"),
        ("serve", "--token-required-for", "subscribe"),
    ],
)
def test_token_required_for_without_a_secret_exits_2_naming_the_option(
    args: tuple[str, ...],
) -> None:
    done = sse_toolkit("--port", str(free_port()), *args)
    assert done.returncode == 2, done
    assert "argument --token-required-for: needs --secret, --jwt-key or --jwks-url" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_required_for_refuses_an_unknown_action() -> None:
    done = sse_toolkit("--secret", SECRET, "--token-required-for", "delete")
    assert done.returncode == 2, done
    assert "argument --token-required-for: invalid choice: 'delete'" in done.stderr


# -- a real hub: what a secret means -------------------------------------------------------


def test_with_a_secret_subscribing_needs_a_token_and_the_logged_commands_work(
    tmp_path: Path, client: httpx.Client
) -> None:
    with run_hub(tmp_path, "--allow-publish", "--stats", "--secret", SECRET) as hub:
        url = f"{hub.url}/sse/demo"
        response = client.get(url)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get(f"{hub.url}/sse/_stats").status_code == 401
        response = client.post(url, json={"data": "hi"}, headers=JSON)
        assert response.status_code == 401
        # A publish-only token does not let one subscribe.
        with client.stream("GET", url, headers=bearer(token("publish"))) as response:
            assert response.status_code == 403

        # The token command the log prints, with the real secret, mints a working token.
        log = hub.log()
        (mint_line,) = [line for line in log.splitlines() if " TOKEN=$(" in line]
        command = mint_line.partition("TOKEN=$(")[2].rstrip(")")
        argv = shlex.split(command.replace("--secret ...", f"--secret {SECRET}"))
        assert argv[:4] == ["python", "-m", "sse_toolkit", "token"]
        done = mint(*argv[4:])
        assert done.returncode == 0, done.stderr
        minted = done.stdout.strip()
        claims = verify_token(SECRET, minted)
        assert (claims.subscribe, claims.publish) == (("demo",), ("demo",))

        # The subscribe command as logged (curl -N -H "authorization: Bearer $TOKEN" URL).
        (subscribe_line,) = [line for line in log.splitlines() if "subscribe: curl -N" in line]
        subscribe = shlex.split(subscribe_line.partition("subscribe:")[2])
        assert subscribe[:3] == ["curl", "-N", "-H"] and subscribe[-1] == url
        header = subscribe[3].replace("$TOKEN", minted).split(": ", 1)
        with connect_sse(client, "GET", url, headers=dict([header])) as source:
            assert source.response.status_code == 200
            stats_token = token("stats")
            wait_until(
                lambda: _subscribers(client, hub, stats_token) >= 1, "the subscriber is missing"
            )
            response = client.post(url, json={"data": "hi"}, headers={**JSON, **bearer(minted)})
            assert response.status_code == 202, response.text
            event = next(sse for sse in source.iter_sse() if sse.data)
        assert event.data == "hi"
        # EventSource sends no headers: ?token= works as well.
        with client.stream("GET", f"{url}?token={minted}") as response:
            assert response.status_code == 200


def _subscribers(client: httpx.Client, hub: Hub, stats_token: str) -> int:
    response = client.get(f"{hub.url}/sse/_stats", headers=bearer(stats_token))
    assert response.status_code == 200, response.text
    channel = response.json()["per_channel"].get("demo")
    return 0 if channel is None else int(channel["subscribers"])


def test_with_token_required_for_publish_subscribing_is_open(
    tmp_path: Path, client: httpx.Client
) -> None:
    args = ("--allow-publish", "--stats", "--secret", SECRET, "--token-required-for", "publish")
    with run_hub(tmp_path, *args) as hub:
        url = f"{hub.url}/sse/demo"
        with client.stream("GET", url) as response:
            assert response.status_code == 200
        assert client.get(f"{hub.url}/sse/_stats").status_code == 200  # stats: open too
        assert client.post(url, json={"data": "hi"}, headers=JSON).status_code == 401
        response = client.post(
            url, json={"data": "hi"}, headers={**JSON, **bearer(token("publish"))}
        )
        assert response.status_code == 202, response.text
        log = hub.log()
    (subscribe_line,) = [line for line in log.splitlines() if "subscribe: curl -N" in line]
    assert "Bearer" not in subscribe_line
    (mint_line,) = [line for line in log.splitlines() if " TOKEN=$(" in line]
    assert mint_line.endswith("--channel demo --action publish)")


# -- a real hub: publishing off, and --demo ------------------------------------------------


def test_a_post_with_publishing_off_is_405_with_a_json_error_naming_allow_publish(
    tmp_path: Path, client: httpx.Client
) -> None:
    with run_hub(tmp_path) as hub:
        response = client.post(f"{hub.url}/sse/demo", json={"data": "hi"}, headers=JSON)
        put = client.put(f"{hub.url}/sse/demo", json={"data": "hi"}, headers=JSON)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": "publishing is off: SSEApp(allow_publish=True) or the hub's --allow-publish"
        " turns it on"
    }
    assert put.status_code == 405 and put.json() == {"error": "method not allowed"}


def test_demo_serves_publishing_and_stats_and_logs_the_dashboard_first(
    tmp_path: Path, client: httpx.Client
) -> None:
    with run_hub(tmp_path, "--demo") as hub:
        response = client.post(f"{hub.url}/sse/mine", json={"data": "hi"}, headers=JSON)
        assert response.status_code == 202, response.text
        stats = client.get(f"{hub.url}/sse/_stats")
        assert stats.status_code == 200, stats.text
        assert "mine" in stats.json()["per_channel"]
        log = hub.log()
    assert log.splitlines()[0] == f"INFO: dashboard: {hub.url}/ (open it in a browser)", log
    assert "publishing over HTTP is off" not in log
    assert "Traceback" not in log, log


# -- the token command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--channel", "_private"), "argument --channel: channel names use"),
        (("--channel", "a/b"), "argument --channel: channel names use"),
        (("--channel", "bad name"), "argument --channel: channel names use"),
        (("--channel", ""), "argument --channel: channel names use"),
        (("--channel", "x" * 129), "argument --channel: channel names are at most 128"),
        (("--channel", "a", "--action", "delete"), "argument --action: invalid choice"),
        (("--channel", "a", "--ttl", "0"), "argument --ttl: must be a finite number"),
        (("--channel", "a", "--ttl", "-5"), "argument --ttl: must be a finite number"),
        (("--channel", "a", "--ttl", "inf"), "argument --ttl: must be a finite number"),
        (("--channel", "a", "--ttl", "nan"), "argument --ttl: must be a finite number"),
        (("--channel", "a", "--ttl", "soon"), "argument --ttl: must be a finite number"),
        (("--channel", "_news.*", "--action", "publish"), "argument --channel: channel names"),
        (("--channel", "*.*"), "argument --channel: channel names use"),
        (("--channel", "news*"), "argument --channel: channel names use"),
        (("--action", "publish"), "argument --channel: required to subscribe or publish"),
        ((), "argument --channel: required to subscribe or publish"),
        (("--channel", "a", "--algorithm", "RS256"), "argument --algorithm: RS256 signs with"),
        (("--channel", "a", "--algorithm", "none"), "argument --algorithm: invalid choice"),
    ],
)
def test_token_mistakes_exit_2_with_the_token_usage(args: tuple[str, ...], message: str) -> None:
    done = mint("--secret", SECRET, *args)
    assert done.returncode == 2, done
    assert done.stderr.startswith("usage: sse-toolkit token"), done.stderr
    assert message in done.stderr, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("secret", ["", "  "])
def test_token_refuses_an_empty_secret(secret: str) -> None:
    done = mint("--secret", secret, "--channel", "a")
    assert done.returncode == 2, done
    assert done.stderr.startswith("usage: sse-toolkit token")
    assert "argument --secret: must not be empty" in done.stderr


def test_a_minted_token_verifies_with_its_channels_actions_and_expiry() -> None:
    before = time.time()
    done = mint(
        "--secret",
        SECRET,
        "--channel",
        "a.b:c~d-e_f",
        "--channel",
        "*",
        "--action",
        "subscribe",
        "--action",
        "stats",
        "--ttl",
        "120.5",
    )
    assert done.returncode == 0, done.stderr
    claims = verify_token(SECRET, done.stdout.strip())
    assert claims.subscribe == ("a.b:c~d-e_f", "*")
    assert (claims.publish, claims.stats) == ((), True)
    assert before + 120.5 <= claims.expires <= time.time() + 122  # (rounded up)
    assert claims.allows("anything", "stats")


def test_a_minted_token_defaults_to_subscribe_for_an_hour() -> None:
    before = time.time()
    done = mint("--secret", SECRET, "--channel", "news")
    assert done.returncode == 0, done.stderr
    claims = verify_token(SECRET, done.stdout.strip())
    assert (claims.subscribe, claims.publish, claims.stats) == (("news",), (), False)
    assert claims.subject is None
    assert math.isclose(claims.expires - before, 3600, abs_tol=5)


def test_a_minted_token_carries_patterns_subject_audience_and_issuer() -> None:
    done = mint(
        "--secret",
        SECRET,
        "--channel",
        "news.*",
        "--channel",
        "room",
        "--action",
        "publish",
        "--subject",
        "alice",
        "--audience",
        "sse-hub",
        "--issuer",
        "https://auth.example",
        "--algorithm",
        "HS512",
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["sse"] == {"publish": ["news.*", "room"]}
    assert (payload["sub"], payload["aud"], payload["iss"]) == (
        "alice",
        "sse-hub",
        "https://auth.example",
    )
    verifier = TokenVerifier(secret=SECRET, audience="sse-hub", issuer="https://auth.example")
    claims = verifier.verify(token)
    assert claims.subject == "alice"
    assert claims.allows("news.x", "publish") and not claims.allows("news", "publish")


def test_a_stats_token_needs_no_channel() -> None:
    done = mint("--secret", SECRET, "--action", "stats")
    assert done.returncode == 0, done.stderr
    claims = verify_token(SECRET, done.stdout.strip())
    assert (claims.subscribe, claims.publish, claims.stats) == ((), (), True)


def test_a_short_secret_is_minted_with_a_warning() -> None:
    done = mint("--secret", "short", "--channel", "a")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("sse-toolkit token: warning: the secret is 5 bytes: 32")
    assert "InsecureKeyLengthWarning" not in done.stderr  # said once, in our words
    assert verify_token(TokenVerifier(secret="short"), done.stdout.strip()).subscribe == ("a",)


# -- JWT keys: --jwt-key, --jwks-url, --jwt-algorithm, --jwt-audience, --jwt-issuer ---------


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path_factory.mktemp("pem")
    private = ec.generate_private_key(ec.SECP256R1())
    files = {
        "private": private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "public": private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "garbage": b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        "binary": bytes(range(256)),
        "jwks-empty": b'{"keys": []}',
        "jwks-secret": b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_jwt_key_turns_tokens_on_with_the_key_s_algorithms(
    started: dict[str, Any], pem_files: dict[str, Path]
) -> None:
    args = ["--jwt-key", str(pem_files["public"]), "--allow-publish", "--jwt-issuer", "me"]
    assert cli.main(args) == 0
    hub = _hub(started)
    verifier = hub.sse.auth.verifier
    assert isinstance(verifier, TokenVerifier)
    assert verifier.algorithms == {"ES256"} and verifier.issuer == "me"
    assert hub.settings.token_required_for == ACTIONS
    assert hub.sse.auth.required_for == ACTIONS


def test_a_secret_and_a_jwt_key_make_one_verifier(
    started: dict[str, Any], pem_files: dict[str, Path]
) -> None:
    args = ["--secret", SECRET, "--jwt-key", str(pem_files["public"])]
    args += ["--jwt-algorithm", "HS256", "--jwt-algorithm", "ES256", "--jwt-audience", "hub"]
    assert cli.main([*args, "--token-required-for", "publish", "--token-cookie", "auth"]) == 0
    hub = _hub(started)
    verifier = hub.sse.auth.verifier
    assert isinstance(verifier, TokenVerifier)
    assert verifier.algorithms == {"HS256", "ES256"} and verifier.audience == ["hub"]
    assert hub.settings.token_required_for == {"publish"}
    assert hub.sse.auth.token_cookie == "auth"
    assert hub.settings.token_cookie == "auth"  # the page sets the cookie the app reads


def test_a_jwks_url_turns_tokens_on_without_fetching_at_start(started: dict[str, Any]) -> None:
    # (nothing listens there: the keys are fetched when a token needs them)
    assert cli.main(["--jwks-url", "http://127.0.0.1:9/jwks.json", "--stats"]) == 0
    hub = _hub(started)
    assert hub.settings.token_required_for == ACTIONS
    assert hub.sse.auth.verifier is not None


def test_the_logs_describe_the_keys_and_how_to_mint_with_a_private_key(
    started: dict[str, Any], caplog: pytest.LogCaptureFixture, pem_files: dict[str, Path]
) -> None:
    caplog.set_level(logging.INFO, logger="sse_toolkit.hub")
    args = ["--jwt-key", str(pem_files["public"]), "--jwt-audience", "hub", "--allow-publish"]
    assert cli.main(args) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "sse_toolkit.hub"]
    (keys,) = [m for m in messages if m.startswith("tokens: ")]
    assert f"the key(s) in {pem_files['public']}" in keys and "algorithms ES256" in keys
    (mint_line,) = [m for m in messages if m.startswith("token: ")]
    command = mint_line.partition("TOKEN=$(")[2].rstrip(")")
    assert command.startswith("python -m sse_toolkit token --private-key PRIVATE_KEY.pem")
    argv = shlex.split(command.replace("PRIVATE_KEY.pem", str(pem_files["private"])))
    done = mint(*argv[4:])
    assert done.returncode == 0, done.stderr
    claims = TokenVerifier.from_file(pem_files["public"], audience="hub").verify(
        done.stdout.strip()
    )
    assert (claims.subscribe, claims.publish) == (("demo",), ("demo",))


def test_a_short_secret_is_served_with_one_warning(
    started: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sse_toolkit.hub")
    assert cli.main(["--secret", "too-short"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [warned[0]] and warned[0].startswith("--secret: the secret is 9 bytes")
    assert "too-short" not in "\n".join(r.getMessage() for r in caplog.records)
    caplog.clear()
    assert cli.main(["--secret", SECRET]) == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--jwt-key", "{missing}"), "argument --jwt-key: cannot read"),
        (("--jwt-key", "{folder}"), "argument --jwt-key: cannot read"),
        (("--jwt-key", "{garbage}"), "is not a usable PEM public key or JWKS"),
        (("--jwt-key", "{binary}"), "is neither a PEM file nor a JWKS"),
        (("--jwt-key", "{jwks-empty}"), "is not a usable PEM public key or JWKS"),
        (("--jwt-key", "{jwks-secret}"), "is not a usable PEM public key or JWKS"),
        (("--secret", ""), "argument --secret: must not be empty"),
        (("--secret", " ", "--jwt-key", "{public}"), "argument --secret: must not be empty"),
        (("--jwks-url", "ftp://example.com/jwks"), "argument --jwks-url: must be an http(s) URL"),
        (("--jwt-key", "{public}", "--jwt-algorithm", "RS256"), "argument --jwt-algorithm:"),
        (("--jwt-key", "{public}", "--jwt-algorithm", "HS256"), "argument --jwt-algorithm:"),
        (("--secret", SECRET, "--jwt-algorithm", "none"), "argument --jwt-algorithm: invalid"),
        (("--jwt-audience", "hub"), "argument --jwt-audience: needs --secret, --jwt-key or"),
        (("--jwt-issuer", "me"), "argument --jwt-issuer: needs --secret, --jwt-key or"),
        (("--jwt-algorithm", "HS256"), "argument --jwt-algorithm: needs --secret"),
        (("--secret", SECRET, "--token-cookie", "a b"), "token_cookie must be a cookie name"),
    ],
)
def test_jwt_option_mistakes_exit_2_naming_the_option(
    args: tuple[str, ...], message: str, pem_files: dict[str, Path]
) -> None:
    paths = {name: str(path) for name, path in pem_files.items()}
    paths.update(
        missing=str(pem_files["public"]) + ".missing", folder=str(pem_files["public"].parent)
    )
    done = sse_toolkit("--port", str(free_port()), *(a.format(**paths) for a in args))
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--private-key", "{missing}"), "argument --private-key: cannot read"),
        (("--private-key", "{public}"), "is not a usable PEM private key"),
        (("--private-key", "{binary}"), "is not a usable PEM private key"),
        (("--private-key", "{private}", "--algorithm", "RS256"), "RS256 cannot sign with"),
        (("--private-key", "{private}", "--algorithm", "HS256"), "HS256 cannot sign with"),
        (("--private-key", "{private}", "--secret", SECRET), "not allowed with argument"),
    ],
)
def test_private_key_mistakes_exit_2_with_the_token_usage(
    args: tuple[str, ...], message: str, pem_files: dict[str, Path]
) -> None:
    paths = {name: str(path) for name, path in pem_files.items()}
    paths["missing"] = str(pem_files["public"]) + ".missing"
    done = mint(*(a.format(**paths) for a in args), "--channel", "a")
    assert done.returncode == 2, done
    assert done.stderr.startswith("usage: sse-toolkit token"), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_private_key_minting_picks_the_key_s_algorithm(pem_files: dict[str, Path]) -> None:
    args = ("--private-key", str(pem_files["private"]), "--key-id", "k1", "--channel", "a")
    done = mint(*args)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    assert TokenVerifier.from_file(pem_files["public"]).verify(token).subscribe == ("a",)


@pytest.mark.parametrize("command", [(), ("run", "examples.clock:app")])
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_bad_port_exits_2_naming_the_option(command: tuple[str, ...], port: str) -> None:
    result = sse_toolkit(*command, "--port", port)
    assert result.returncode == 2, result.stderr
    assert "argument --port: a port is a number from 0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "postgres://x"])
def test_a_redis_url_that_is_not_one_exits_2_naming_the_option(url: str) -> None:
    result = sse_toolkit("--redis-url", url)
    assert result.returncode == 2, result.stderr
    assert "--redis-url: url must be a redis://, rediss:// or unix:// URL" in result.stderr
    assert "Traceback" not in result.stderr
