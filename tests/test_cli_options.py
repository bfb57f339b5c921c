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
import pytest
from httpx_sse import connect_sse

from sse_toolkit import cli
from sse_toolkit.hub import Hub as HubApp
from sse_toolkit.tokens import ACTIONS, verify_token

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
    assert "(default: every action with --secret)" in entries["--token-required-for ACTION"]
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
    assert "--channel '*' --action stats" in stats_token
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
    assert "--token-required-for needs --secret" in done.stderr
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
        assert set(verify_token(SECRET, minted).actions) == {"subscribe", "publish"}

        # The subscribe command as logged (curl -N -H "authorization: Bearer $TOKEN" URL).
        (subscribe_line,) = [line for line in log.splitlines() if "subscribe: curl -N" in line]
        subscribe = shlex.split(subscribe_line.partition("subscribe:")[2])
        assert subscribe[:3] == ["curl", "-N", "-H"] and subscribe[-1] == url
        header = subscribe[3].replace("$TOKEN", minted).split(": ", 1)
        with connect_sse(client, "GET", url, headers=dict([header])) as source:
            assert source.response.status_code == 200
            stats_token = token("stats", channel="*")
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
        (("--channel", "a", "--action", "stats"), "a stats token needs --channel '*'"),
        (("--action", "publish"), "the following arguments are required: --channel"),
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
    assert claims.channels == ("a.b:c~d-e_f", "*")
    assert claims.actions == ("subscribe", "stats")
    assert before + 119 <= claims.expires <= time.time() + 121
    assert claims.allows("anything", "stats")


def test_a_minted_token_defaults_to_subscribe_for_an_hour() -> None:
    before = time.time()
    done = mint("--secret", SECRET, "--channel", "news")
    assert done.returncode == 0, done.stderr
    claims = verify_token(SECRET, done.stdout.strip())
    assert (claims.channels, claims.actions) == (("news",), ("subscribe",))
    assert math.isclose(claims.expires - before, 3600, abs_tol=5)
