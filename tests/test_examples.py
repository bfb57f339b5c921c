"""Every file in examples/ runs as written against a real server (uvicorn over loopback,
or the runner in its own process), read by real clients; the docs include these files
(``--8<--``), and the README's blocks are copies of them (tests/test_readme.py).

Each test names the files it covers (``@covers``); a file no test covers fails
`test_every_example_is_covered`, so a new example cannot go untested.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import anyio
import httpx
import jwt as pyjwt
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from sse_toolkit import create_token, sse_manager

from .conftest import redis_url
from .raw_streams import PYTHON, ServerProcess, free_port, stop_one_stream
from .servers import serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
WAIT = 10.0
SECTION = re.compile(r"^\s*# --8<-- \[(start|end):([\w-]+)\]\s*$")

F = TypeVar("F", bound=Callable[..., Any])
COVERED: dict[str, list[str]] = {}


def covers(*names: str) -> Callable[[F], F]:
    """Record that the decorated test runs ``examples/<name>`` for each name."""

    def record(test: F) -> F:
        for name in names:
            assert (EXAMPLES / name).is_file(), name
            COVERED.setdefault(name, []).append(test.__name__)
        return test

    return record


# -- reading example files ------------------------------------------------------------------


def example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_file() and p.suffix != ".pyc")


def sections(path: Path) -> dict[str, str]:
    """The snippet sections of a file (``# --8<-- [start:name]`` ... ``[end:name]``)."""
    found: dict[str, list[str]] = {}
    open_: list[str] = []
    for line in path.read_text().splitlines():
        marker = SECTION.match(line)
        if marker:
            kind, name = marker.groups()
            if kind == "start":
                assert name not in found, f"{path.name}: section {name!r} twice"
                found[name] = []
                open_.append(name)
            else:
                assert name in open_, f"{path.name}: end of {name!r} before its start"
                open_.remove(name)
            continue
        for name in open_:
            found[name].append(line)
    assert not open_, f"{path.name}: sections never ended: {open_}"
    return {name: "\n".join(lines) for name, lines in found.items()}


def without_markers(path: Path) -> str:
    """The file as a whole-file ``--8<--`` include shows it (section markers dropped)."""
    return "\n".join(line for line in path.read_text().splitlines() if not SECTION.match(line))


def load(name: str, **env: str) -> ModuleType:
    """Import ``examples/<name>`` afresh (its own module object and module-level state)."""
    path = EXAMPLES / name
    module_name = f"examples_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # FastAPI and pydantic resolve names through it
    spec.loader.exec_module(module)
    return module


# -- talking to a server --------------------------------------------------------------------


def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def subscribers(name: str, manager: Any = sse_manager) -> int:
    stats = manager.channel_stats(name)
    return 0 if stats is None else int(stats.subscribers)


def events(source: Any, count: int) -> list[ServerSentEvent]:
    """The next ``count`` events with data (heartbeats and retry-only frames skipped)."""
    got: list[ServerSentEvent] = []
    for event in source.iter_sse():
        if event.data or event.event != "message":
            got.append(event)
        if len(got) == count:
            return got
    raise AssertionError(f"the stream ended after {got}")


def channel_name() -> str:
    return f"ch-{uuid.uuid4().hex[:8]}"


# -- coverage and snippets ------------------------------------------------------------------


def test_every_example_is_covered() -> None:
    """`COVERED` is filled at import time, by the `covers` decorators."""
    missing = [name for name in example_files() if name not in COVERED]
    assert missing == [], f"examples no test runs: {missing}"


SNIPPET = re.compile(r'--8<--\s+"([^"]+)"')


def snippet_references() -> list[tuple[str, str]]:
    refs = []
    for page in sorted(DOCS.glob("*.md")):
        for match in SNIPPET.finditer(page.read_text()):
            refs.append((page.name, match.group(1)))
    return refs


def test_docs_include_snippets_that_exist() -> None:
    refs = snippet_references()
    assert refs, "the docs include no example"
    for page, ref in refs:
        file, _, section = ref.partition(":")
        candidates = [ROOT / file, DOCS / file]
        path = next((p for p in candidates if p.is_file()), None)
        assert path is not None, f"{page}: {ref!r} names no file"
        if section:
            assert section in sections(path), f"{page}: {ref!r}: no section {section!r}"


def test_every_python_example_is_shown_in_the_docs() -> None:
    shown = {ref.partition(":")[0] for _, ref in snippet_references()}
    not_shown = [f"examples/{n}" for n in example_files() if f"examples/{n}" not in shown]
    assert not_shown == [], f"examples the docs never include: {not_shown}"


# -- quick start and mounts -----------------------------------------------------------------


@covers("quickstart_starlette.py")
def test_quickstart_publishes_to_a_subscriber_and_replays_after_a_reconnect() -> None:
    example = load("quickstart_starlette.py")
    channel = example.notifications
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}/events") as source:
            until(lambda: channel.subscriber_count == 1, "the subscriber")
            sent = http.post(f"{url}/send").json()
            (event,) = events(source, 1)
        assert (event.event, event.data, event.id) == ("notice", "Hello, world!", sent["id"])
        missed = http.post(f"{url}/send").json()  # while nobody listens
        headers = {"last-event-id": event.id}
        with connect_sse(http, "GET", f"{url}/events", headers=headers) as source:
            (replayed,) = events(source, 1)
        assert replayed.id == missed["id"]


def mounted_pubsub(url: str, prefix: str, headers: dict[str, str] | None = None) -> None:
    """Subscribe at ``{url}{prefix}/{channel}``, publish there, read it back."""
    name = channel_name()
    with httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}{prefix}/{name}") as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            until(lambda: subscribers(name) == 1, "the subscriber")
            body = {"data": {"n": 1}, "event": "tick"}
            sent = http.post(f"{url}{prefix}/{name}", json=body, headers=headers or {})
            assert sent.status_code == 202, sent.text
            (event,) = events(source, 1)
        assert (event.event, event.json(), event.id) == ("tick", {"n": 1}, sent.json()["id"])


@covers("mount_starlette.py")
def test_starlette_mount_subscribes_freely_and_publishes_with_a_token() -> None:
    example = load("mount_starlette.py")
    secret = example.sse.auth.secret
    with serve(example.app, lifespan="on") as url, httpx.Client(timeout=WAIT) as http:
        refused = http.post(f"{url}/sse/news", json={"data": "hi"})
        assert refused.status_code == 401, refused.text
        name = channel_name()
        token = create_token(secret, channels=[name], actions=["publish"])
        with connect_sse(http, "GET", f"{url}/sse/{name}") as source:
            until(lambda: subscribers(name) == 1, "the subscriber")
            auth = {"authorization": f"Bearer {token}"}
            sent = http.post(f"{url}/sse/{name}", json={"data": "hi"}, headers=auth)
            assert sent.status_code == 202, sent.text
            (event,) = events(source, 1)
        assert (event.data, event.id) == ("hi", sent.json()["id"])
    assert len(sse_manager) == 0  # the lifespan's shutdown closed the manager


@covers("mount_lilya.py", "mount_litestar.py")
@pytest.mark.parametrize("name", ["mount_lilya.py", "mount_litestar.py"])
def test_framework_mount(name: str) -> None:
    example = load(name)
    with serve(example.app, lifespan="on") as url:
        mounted_pubsub(url, "/sse")
    assert len(sse_manager) == 0


@covers("django_asgi.py")
def test_django_dispatcher() -> None:
    from .django_site import asgi_application

    asgi_application()  # configures this test project's settings, as mysite.settings would
    example = load("django_asgi.py")
    with serve(example.application, lifespan="on") as url, httpx.Client(timeout=WAIT) as http:
        mounted_pubsub(url, "/sse")
        hello = http.get(f"{url}/hello")  # outside the prefix: Django's own view
        assert hello.json() == {"hello": "from django"}
    assert len(sse_manager) == 0


@covers("mount_fastapi.py")
def test_fastapi_mount_and_its_own_streaming_endpoint() -> None:
    example = load("mount_fastapi.py")
    with serve(example.app, lifespan="on") as url, httpx.Client(timeout=WAIT) as http:
        mounted_pubsub(url, "/sse")
        room = channel_name()
        with connect_sse(http, "GET", f"{url}/rooms/{room}") as source:
            until(lambda: subscribers(room) == 1, "the subscriber")
            first = http.post(f"{url}/rooms/{room}", params={"text": "hello"}).json()
            (event,) = events(source, 1)
        assert (event.event, event.data, event.id) == ("said", "hello", first["id"])
        second = http.post(f"{url}/rooms/{room}", params={"text": "again"}).json()
        headers = {"last-event-id": first["id"]}
        with connect_sse(http, "GET", f"{url}/rooms/{room}", headers=headers) as source:
            (replayed,) = events(source, 1)
        assert (replayed.data, replayed.id) == ("again", second["id"])
    assert len(sse_manager) == 0


# -- channels, the response, the sub-app's options ------------------------------------------


@covers("channels_replay.py")
def test_channels_replay_after_a_reconnect_and_tell_what_was_lost() -> None:
    example = load("channels_replay.py")
    rooms = example.rooms
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}/rooms/lobby") as source:
            assert source.response.headers["x-sse-heartbeat"] == "15.0"
            until(lambda: subscribers("lobby", rooms) == 1, "the subscriber")
            first = http.post(f"{url}/rooms/lobby", params={"text": "one"}).json()
            (event,) = events(source, 1)
        assert (event.event, event.data, event.id) == ("said", "one", first["id"])
        for n in range(150):  # more than the capacity (100) while the client is away
            http.post(f"{url}/rooms/lobby", params={"text": f"n{n}"})
        headers = {"last-event-id": first["id"]}
        with connect_sse(http, "GET", f"{url}/rooms/lobby", headers=headers) as source:
            lagged, oldest = events(source, 2)
        assert lagged.event == "sse.lagged"
        assert lagged.json() == {"channel": "lobby", "missed": 50}
        assert oldest.data == "n50"  # the oldest of the 100 retained
        with connect_sse(http, "GET", f"{url}/rooms/lobby?last_event_id=nope") as source:
            (reset,) = events(source, 1)
        assert reset.event == "sse.reset"


@covers("response_generator.py")
def test_response_over_async_and_sync_generators(capfd: pytest.CaptureFixture[str]) -> None:
    example = load("response_generator.py")
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        body = http.get(f"{url}/progress").text
        assert body.startswith("retry: 2000\n\n")
        with connect_sse(http, "GET", f"{url}/progress") as source:
            got = list(source.iter_sse())
        progress = [(e.event, e.json(), e.id) for e in got if e.event == "progress"]
        assert progress == [("progress", {"step": n, "of": 3}, str(n)) for n in (1, 2, 3)]
        assert (got[-1].event, got[-1].data) == ("done", "finished")
        with connect_sse(http, "GET", f"{url}/lines") as source:
            assert [e.data for e in source.iter_sse() if e.data] == ["line 0", "line 1", "line 2"]
        until(lambda: "closed" in capfd.readouterr().out, "the sync generator's finally")


@covers("subapp_options.py")
def test_subapp_options_tokens_authorize_cors_stats() -> None:
    example = load("subapp_options.py")
    with serve(example.app, lifespan="on") as url, httpx.Client(timeout=WAIT) as http:
        # Subscribing is open (required_for names publish and stats only).
        with connect_sse(http, "GET", f"{url}/news") as source:
            until(lambda: subscribers("news") == 1, "the subscriber")
            assert http.post(f"{url}/news", json={"data": "x"}).status_code == 401
            auth = {"authorization": f"Bearer {example.token}"}
            sent = http.post(f"{url}/news", json={"data": "x"}, headers=auth)
            assert sent.status_code == 202, sent.text
            (event,) = events(source, 1)
            assert event.data == "x"
        # The token covers "news" only; authorize refuses internal.* except stats.
        assert http.post(f"{url}/other", json={"data": 1}, headers=auth).status_code == 403
        assert http.get(f"{url}/internal.audit").status_code == 403
        assert http.get(f"{url}/_stats").status_code == 401
        stats_token = create_token(example.SECRET, channels=["*"], actions=["stats"])
        stats = http.get(f"{url}/_stats", headers={"authorization": f"Bearer {stats_token}"})
        assert stats.status_code == 200, stats.text
        # CORS: the allowed origin's pages may read; others get no CORS header.
        preflight = http.options(
            f"{url}/news",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = http.options(
            f"{url}/news",
            headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
        )
        assert "access-control-allow-origin" not in other.headers
        # Limits: a body over 16 KiB.
        big = {"data": "x" * 20_000}
        assert http.post(f"{url}/news", json=big, headers=auth).status_code == 413


# -- tokens: minted in Python and in JavaScript ----------------------------------------------


def mjs_runner(tmp_path: Path) -> Path:
    """A folder where ``node`` finds jose for examples/mint_token.mjs (tests/node's)."""
    node_modules = ROOT / "tests" / "node" / "node_modules"
    if shutil.which("node") is None or not (node_modules / "jose").is_dir():
        message = "node or tests/node/node_modules missing: npm ci --prefix tests/node"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    (tmp_path / "node_modules").symlink_to(node_modules)
    shutil.copy(EXAMPLES / "mint_token.mjs", tmp_path / "mint_token.mjs")
    return tmp_path / "mint_token.mjs"


def assert_token_works(url: str, token: str, room: str) -> None:
    """The token subscribes to ``room`` (as EventSource does: ?token=) and to news.x, and
    publishes to ``room``; nothing on another room."""
    auth = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=WAIT) as http:
        assert http.get(f"{url}/{room}").status_code == 401  # no token
        with connect_sse(http, "GET", f"{url}/{room}?token={token}") as source:
            until(lambda: subscribers(room) == 1, "the subscriber")
            sent = http.post(f"{url}/{room}", json={"data": "hi"}, headers=auth)
            assert sent.status_code == 202, sent.text
            (event,) = events(source, 1)
        assert (event.data, event.id) == ("hi", sent.json()["id"])
        with http.stream("GET", f"{url}/news.x", headers=auth) as response:
            assert response.status_code == 200
        assert http.get(f"{url}/other", headers=auth).status_code == 403


@covers("mint_token.py", "mint_token.mjs")
def test_tokens_minted_with_pyjwt_create_token_and_jose_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a secret from the test's config, well over 32 bytes long"
    monkeypatch.setenv("SSE_SECRET", secret)
    example = load("mint_token.py")
    assert secret == example.SECRET
    script = mjs_runner(tmp_path)
    with serve(example.app, lifespan="on") as url:
        for mint in (example.mint_with_pyjwt, example.mint_with_create_token):
            room = channel_name()
            assert_token_works(url, mint("alice", room), room)
        room = channel_name()
        done = subprocess.run(
            ["node", str(script), "bob", room],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "SSE_SECRET": secret},
        )
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        payload = pyjwt.decode(token, secret, algorithms=["HS256"])
        assert payload["sub"] == "bob" and payload["exp"] - payload["iat"] == 3600
        assert json.dumps(payload["sse"]) == json.dumps(
            {"subscribe": [room, "news.*"], "publish": [room]}
        )
        assert_token_works(url, token, room)
        # A token signed with another secret is refused with the reason.
        forged = pyjwt.encode(pyjwt.decode(token, options={"verify_signature": False}), "x" * 40)
        refused = httpx.get(f"{url}/{room}?token={forged}", timeout=WAIT)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == (
            'Bearer error="invalid_token", error_description="bad token signature"'
        )


@covers("mint_token.py")
def test_verifiers_for_a_public_key_file_and_a_jwks_url(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    example = load("mint_token.py")
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "jwt-public.pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = example.public_key_verifier(str(tmp_path / "jwt-public.pem"))
    token = create_token(
        pem, channels=["room"], algorithm="ES256", audience="sse", issuer="https://auth.example"
    )
    assert verifier.verify(token).allows("room", "subscribe")
    jwks = example.jwks_url_verifier("https://auth.example/.well-known/jwks.json")
    assert jwks.algorithms == {"RS256", "ES256"}


@covers("clock.py")
def test_clock_page_and_stream() -> None:
    example = load("clock.py")
    with serve(example.app, lifespan="on") as url, httpx.Client(timeout=WAIT) as http:
        page = http.get(f"{url}/")
        assert 'new EventSource("/clock")' in page.text
        with connect_sse(http, "GET", f"{url}/clock") as source:
            (tick,) = events(source, 1)
        assert tick.event == "tick" and tick.id == "1"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", tick.json()["time"])


# -- migrating ------------------------------------------------------------------------------


@covers("migrate_lilya.py")
def test_lilya_example_with_our_imports() -> None:
    example = load("migrate_lilya.py")
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}/events") as source:
            until(lambda: example.notifications.subscriber_count == 1, "the subscriber")
            assert http.get(f"{url}/send").json() == {"sent": True}
            (event,) = events(source, 1)
        assert (event.event, event.data) == ("notice", "Hello, world!")


@covers("migrate_sse_starlette.py")
def test_sse_starlette_migration() -> None:
    example = load("migrate_sse_starlette.py")
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}/numbers") as source:
            assert source.response.headers["x-sse-heartbeat"] in ("20", "20.0")
            got = [(e.event, e.data, e.id) for e in source.iter_sse() if e.data]
        assert got == [("number", f'{{"n":{n}}}', str(n)) for n in (1, 2, 3)]


@covers("migrate_fastapi.py")
def test_fastapi_migration() -> None:
    example = load("migrate_fastapi.py")
    with serve(example.app) as url, httpx.Client(timeout=WAIT) as http:
        with connect_sse(http, "GET", f"{url}/items") as source:
            got = [(e.event, e.data) for e in source.iter_sse() if e.data]
        assert got == [("item", f'{{"n":{n}}}') for n in (1, 2, 3)] + [("end", "done")]
        try:
            with connect_sse(http, "GET", f"{url}/news") as source:
                until(lambda: subscribers("news") == 1, "the subscriber")
                news = anyio.run(sse_manager.get, "news")
                sent = news.broadcast_from_thread("extra")
                (event,) = events(source, 1)
            assert (event.data, event.id) == ("extra", sent.id)
        finally:
            anyio.run(sse_manager.remove, "news")  # no lifespan here: forget the channel


# -- Redis, the client, the runner, nginx ---------------------------------------------------


@pytest.mark.redis
@covers("redis_scaleout.py")
def test_redis_scaleout_across_two_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers, each with its own manager: a publish on one reaches the other's
    subscriber with the same id, and a reconnect to the first replays from it."""
    monkeypatch.setenv("REDIS_URL", redis_url())
    one, two = load("redis_scaleout.py"), load("redis_scaleout.py")
    name = channel_name()
    with serve(one.app, lifespan="on") as url_one, serve(two.app, lifespan="on") as url_two:
        with httpx.Client(timeout=WAIT) as http:
            with connect_sse(http, "GET", f"{url_two}/{name}") as source:
                until(lambda: subscribers(name, two.manager) == 1, "the subscriber")
                sent = http.post(f"{url_one}/{name}", json={"data": "across"})
                assert sent.status_code == 202, sent.text
                (event,) = events(source, 1)
            assert (event.data, event.id) == ("across", sent.json()["id"])
            later = http.post(f"{url_two}/{name}", json={"data": "later"}).json()
            headers = {"last-event-id": event.id}
            with connect_sse(http, "GET", f"{url_one}/{name}", headers=headers) as source:
                (replayed,) = events(source, 1)
            assert (replayed.data, replayed.id) == ("later", later["id"])


def hub_for_clients() -> Any:
    from sse_toolkit import ChannelManager, SSEApp

    manager = ChannelManager()
    return SSEApp(manager, allow_publish=True), manager


@covers("client_read.py")
def test_async_client_reads_what_is_published(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("client_read.py")
    app, manager = hub_for_clients()
    with serve(app) as url:

        async def scenario() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(example.main, f"{url}/news")
                async with httpx.AsyncClient(timeout=WAIT) as http:
                    with anyio.fail_after(WAIT):
                        while subscribers("news", manager) < 1:
                            await anyio.sleep(0.01)
                        for text in ("one", "two"):
                            await http.post(f"{url}/news", json={"data": text, "event": "x"})
                        while len(lines) < 2:
                            lines.extend(capsys.readouterr().out.splitlines())
                            await anyio.sleep(0.01)
                tg.cancel_scope.cancel()

        lines: list[str] = []
        anyio.run(scenario)
    assert [line.split(" ", 2)[::2] for line in lines] == [["x", "one"], ["x", "two"]]


@covers("client_sync.py")
def test_sync_client_follows_a_stream() -> None:
    example = load("client_sync.py")
    app, manager = hub_for_clients()
    with serve(app) as url:
        result: list[list[str]] = []
        reader = threading.Thread(
            target=lambda: result.append(example.follow(f"{url}/jobs", stop_after=2))
        )
        reader.start()
        until(lambda: subscribers("jobs", manager) == 1, "the subscriber")
        with httpx.Client(timeout=WAIT) as http:
            for text in ("a", "b"):
                assert http.post(f"{url}/jobs", json={"data": text}).status_code == 202
        reader.join(WAIT)
        assert not reader.is_alive()
    assert result == [["a", "b"]]


@covers("run_programmatic.py")
def test_the_runner_from_python_ends_streams_cleanly(tmp_path: Path) -> None:
    port = free_port()
    command = [PYTHON, str(EXAMPLES / "run_programmatic.py")]
    process = ServerProcess(command, tmp_path / "server.log", env={"PORT": str(port)})

    stopped = stop_one_stream(process, port, "/news", signal.SIGTERM)
    assert stopped.stream.status == 200 and stopped.stream.complete, stopped
    assert stopped.stream.retry_at_end is not None
    assert stopped.code == 0, stopped.log
    assert "Traceback" not in stopped.log, stopped.log


@covers("nginx.conf")
def test_nginx_config_has_what_streams_need() -> None:
    conf = (EXAMPLES / "nginx.conf").read_text()
    directives = {
        line.split("#")[0].strip().rstrip(";")
        for line in conf.splitlines()
        if line.split("#")[0].strip()
    }
    for needed in (
        "proxy_buffering off",
        "proxy_http_version 1.1",
        'proxy_set_header Connection ""',
    ):
        assert needed in directives, needed
    (timeout,) = [d for d in directives if d.startswith("proxy_read_timeout ")]
    seconds = int(timeout.split()[1].rstrip("s"))
    assert seconds > 15  # above the default heartbeat interval, or idle streams are cut


def test_example_sections_are_well_formed() -> None:
    for name in example_files():
        sections(EXAMPLES / name)  # raises on a section never ended, or ended unopened
