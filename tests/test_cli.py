"""The hub command run as a real process, talked to over TCP with real clients."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from sse_toolkit.tokens import verify_token

from .servers import free_port

START_TIMEOUT = 10.0
WAIT = 5.0
SECRET = "hub-secret-of-at-least-32-bytes-0123"  # (shorter ones are warned about)
JSON = {"content-type": "application/json"}


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], bool], message: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` if it still runs: terminate, then kill; always reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)


@contextmanager
def run_hub(log_dir: Path, *args: str, port_args: bool = True) -> Iterator[Hub]:
    """Run ``python -m sse_toolkit [--port P] *args`` until it accepts connections."""
    port = free_port()
    argv = [sys.executable, "-m", "sse_toolkit"]
    argv += ["--port", str(port), *args] if port_args else [a.format(port=port) for a in args]
    log_path = log_dir / f"hub-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    hub = Hub(proc, port, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(port):
            try:
                code = proc.wait(0.05)  # a bounded wait that notices an early exit
            except subprocess.TimeoutExpired:
                pass
            else:
                raise AssertionError(f"the hub exited with {code}:\n{hub.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not accept connections:\n{hub.log()}")
        yield hub
    finally:
        stop(proc)


def mint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sse_toolkit", "token", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def token(action: str, channel: str = "demo", secret: str = SECRET) -> str:
    grants = (
        ("--action", action) if action == "stats" else ("--channel", channel, "--action", action)
    )
    done = mint("--secret", secret, *grants, "--ttl", "60")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def wait_subscribers(client: httpx.Client, hub: Hub, n: int, **kwargs: Any) -> None:
    def enough() -> bool:
        response = client.get(f"{hub.url}/sse/_stats", **kwargs)
        assert response.status_code == 200, response.text
        channel = response.json()["per_channel"].get("demo")
        return channel is not None and channel["subscribers"] >= n

    wait_until(enough, f"{n} subscriber(s) did not arrive")


@pytest.fixture(scope="module")
def publish_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with run_hub(tmp_path_factory.mktemp("hub"), "--allow-publish", "--stats") as hub:
        yield hub


@pytest.fixture(scope="module")
def plain_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with run_hub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=WAIT) as client:
        yield client


# -- startup logs --------------------------------------------------------------------------


def _log_line(log: str, marker: str) -> str:
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) == 1, (marker, log)
    return lines[0]


def test_startup_log_says_where_and_how_to_subscribe_and_publish(
    publish_hub: Hub, client: httpx.Client
) -> None:
    log = publish_hub.log()
    assert f"hub on {publish_hub.url}" in log
    assert f"{publish_hub.url}/sse/{{channel}}" in log

    # The logged commands work as printed: replay them with httpx.
    subscribe = shlex.split(_log_line(log, "curl -N").partition("subscribe:")[2])
    assert subscribe == ["curl", "-N", f"{publish_hub.url}/sse/demo"]
    with client.stream("GET", subscribe[2]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")

    publish = shlex.split(_log_line(log, "curl -X POST").partition("publish:")[2])
    assert publish[:3] == ["curl", "-X", "POST"]
    assert publish[-1] == f"{publish_hub.url}/sse/demo"
    headers = dict(
        value.split(": ", 1) for flag, value in itertools.pairwise(publish) if flag == "-H"
    )
    body = publish[publish.index("-d") + 1]
    response = client.post(publish[-1], content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["channel"] == "demo"


def test_startup_log_without_publishing(plain_hub: Hub) -> None:
    log = plain_hub.log()
    assert f"hub on {plain_hub.url}" in log
    assert f"curl -N {plain_hub.url}/sse/demo" in _log_line(log, "subscribe:")
    assert "curl -X POST" not in log
    assert "--allow-publish turns it on" in log


def test_startup_log_with_a_secret_says_how_to_mint_a_token(tmp_path: Path) -> None:
    with run_hub(tmp_path, "--allow-publish", "--secret", SECRET) as hub:
        log = hub.log()
    # A secret guards every action by default: subscribing too.
    assert "authorization: Bearer $TOKEN" in _log_line(log, "curl -X POST")
    assert "authorization: Bearer $TOKEN" in _log_line(log, "curl -N")
    mint_line = _log_line(log, " TOKEN=$(")
    assert "python -m sse_toolkit token" in mint_line
    assert "--action subscribe --action publish" in mint_line
    assert SECRET not in log  # the secret itself is never logged


# -- publish and subscribe -----------------------------------------------------------------


def test_published_event_reaches_a_subscriber_with_its_id(
    publish_hub: Hub, client: httpx.Client
) -> None:
    with connect_sse(client, "GET", f"{publish_hub.url}/sse/demo") as source:
        assert source.response.status_code == 200
        wait_subscribers(client, publish_hub, 1)
        response = client.post(f"{publish_hub.url}/sse/demo", json={"data": "hi"}, headers=JSON)
        assert response.status_code == 202, response.text
        stored_id = response.json()["id"]
        assert isinstance(stored_id, str) and stored_id
        event = next(sse for sse in source.iter_sse() if sse.data)
    assert (event.event, event.data, event.id) == ("message", "hi", stored_id)


def test_publishing_is_off_without_allow_publish(plain_hub: Hub, client: httpx.Client) -> None:
    response = client.post(f"{plain_hub.url}/sse/demo", json={"data": "hi"}, headers=JSON)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    error = response.json()["error"]
    assert "allow_publish" in error and "--allow-publish" in error  # says how to turn it on
    assert client.get(f"{plain_hub.url}/sse/_stats").status_code == 404  # no --stats


# -- tokens --------------------------------------------------------------------------------


def test_token_required_for_publish_and_stats_leaves_subscribing_open(
    tmp_path: Path, client: httpx.Client
) -> None:
    narrowed = ("--token-required-for", "publish", "--token-required-for", "stats")
    with run_hub(tmp_path, "--allow-publish", "--stats", "--secret", SECRET, *narrowed) as hub:
        url = f"{hub.url}/sse/demo"
        response = client.post(url, json={"data": "hi"}, headers=JSON)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        forged = token("publish", secret="not-the-secret")
        response = client.post(url, json={"data": "hi"}, headers={**JSON, **bearer(forged)})
        assert response.status_code == 401
        response = client.post(
            url, json={"data": "hi"}, headers={**JSON, **bearer(token("subscribe"))}
        )
        assert response.status_code == 403
        assert client.get(f"{hub.url}/sse/_stats").status_code == 401

        with connect_sse(client, "GET", url) as source:  # no token needed to subscribe
            assert source.response.status_code == 200
            wait_subscribers(client, hub, 1, headers=bearer(token("stats")))
            publish_token = token("publish")
            response = client.post(
                url, json={"data": "hi"}, headers={**JSON, **bearer(publish_token)}
            )
            assert response.status_code == 202, response.text
            stored_id = response.json()["id"]
            event = next(sse for sse in source.iter_sse() if sse.data)
        assert (event.data, event.id) == ("hi", stored_id)


def test_serve_options_before_the_serve_subcommand_are_kept(
    tmp_path: Path, client: httpx.Client
) -> None:
    # `--secret S serve --allow-publish` once dropped the secret (the sub-command's defaults
    # overwrote it) and served publishing with no token at all.
    args = ("--secret", SECRET, "serve", "--port", "{port}", "--allow-publish")
    with run_hub(tmp_path, *args, port_args=False) as hub:
        response = client.post(f"{hub.url}/sse/demo", json={"data": "hi"}, headers=JSON)
    assert response.status_code == 401


def test_token_subcommand_prints_a_token_for_the_hub() -> None:
    before = time.time()
    claims = verify_token(SECRET, token("publish"))
    assert (claims.publish, claims.subscribe, claims.stats) == (("demo",), (), False)
    assert before + 58 <= claims.expires <= time.time() + 61


def test_token_subcommand_rejects_an_unknown_action() -> None:
    done = mint("--secret", SECRET, "--channel", "demo", "--action", "delete")
    assert done.returncode == 2
    assert "invalid choice: 'delete'" in done.stderr
    assert done.stderr.startswith("usage: sse-toolkit token")  # its own usage
    assert done.stdout == ""


# -- graceful shutdown ---------------------------------------------------------------------


@dataclass
class Reader:
    """Reads one stream to its end in a thread, recording events and how it ended."""

    url: str
    events: list[str] = field(default_factory=list)
    first_event: threading.Event = field(default_factory=threading.Event)
    finished_cleanly: bool = False
    error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10.0) as client:
                with connect_sse(client, "GET", self.url) as source:
                    for sse in source.iter_sse():
                        if sse.data:
                            self.events.append(sse.data)
                            self.first_event.set()
                    # iter_sse ends only at a complete end of body: a stream cut short
                    # raises httpx.RemoteProtocolError (incomplete chunked read) instead.
            self.finished_cleanly = True
        except BaseException as exc:
            self.error = exc


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_exit_signal_ends_open_streams_cleanly_and_exits_0(
    tmp_path: Path, client: httpx.Client, signum: signal.Signals
) -> None:
    with run_hub(tmp_path, "--allow-publish", "--stats") as hub:
        readers = [Reader(f"{hub.url}/sse/demo") for _ in range(3)]
        threads = [threading.Thread(target=r.run, daemon=True) for r in readers]
        for thread in threads:
            thread.start()
        try:
            wait_subscribers(client, hub, 3)
            response = client.post(f"{hub.url}/sse/demo", json={"data": "before"}, headers=JSON)
            assert response.status_code == 202, response.text
            for reader in readers:
                assert reader.first_event.wait(WAIT), "a stream did not get the event"
            assert all(thread.is_alive() for thread in threads)  # all three still open

            started = time.monotonic()
            hub.proc.send_signal(signum)
            code = hub.proc.wait(WAIT)
            elapsed = time.monotonic() - started
        finally:
            for thread in threads:
                thread.join(WAIT)
        log = hub.log()
    assert not any(thread.is_alive() for thread in threads), "a stream did not end"
    for reader in readers:
        assert reader.error is None, repr(reader.error)
        assert reader.finished_cleanly
        assert reader.events == ["before"]
    assert code == 0, log
    assert elapsed < 4.0, f"shutdown waited {elapsed:.1f}s: streams were not ended"
    assert "open event stream" in log
    assert "Traceback" not in log, log


# -- other routes --------------------------------------------------------------------------


def test_index_page_and_unknown_paths(plain_hub: Hub, client: httpx.Client) -> None:
    response = client.get(f"{plain_hub.url}/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # The page itself (the dashboard) is tested in tests/test_dashboard.py.
    assert "<title>sse-toolkit hub</title>" in response.text

    for path in ("/nope", "/sse/_nope", "/sse/a/b"):
        response = client.get(f"{plain_hub.url}{path}")
        assert response.status_code == 404, path
        assert response.json() == {"error": "not found"}


# -- issue 8: every scope and path gets a defined answer -----------------------------------


def websocket_upgrade(port: int, path: str) -> bytes:
    """A raw WebSocket handshake; returns the server's status line."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request.encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.partition(b"\r\n")[0]


def test_websocket_upgrades_are_refused_with_403_on_every_path(plain_hub: Hub) -> None:
    for path in ("/", "/sse/demo", "/sse", "/nope"):
        status_line = websocket_upgrade(plain_hub.port, path)
        assert status_line.split()[1:2] == [b"403"], (path, status_line)
    wait_until(lambda: _accepts(plain_hub.port), "the hub stopped accepting")
    log = plain_hub.log()
    assert "Traceback" not in log and "ASGI callable returned" not in log, log


def test_index_page_methods(plain_hub: Hub, client: httpx.Client) -> None:
    response = client.post(f"{plain_hub.url}/", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json() == {"error": "method not allowed"}
    head = client.head(f"{plain_hub.url}/")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        (("--secret", ""), "--secret"),
        (("--heartbeat", "0"), "heartbeat_interval"),
        (("--max-channels-per-client", "-1"), "max_channels_per_client"),
        (("--max-channels-per-client", "8"), "max_channels_per_client"),  # < 16 per stream
    ],
)
def test_configuration_mistakes_exit_2_naming_the_parameter(
    args: tuple[str, ...], parameter: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sse_toolkit", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done
    assert parameter in done.stderr
    assert "Traceback" not in done.stderr


def test_websocket_clients_get_403_and_the_log_no_traceback(plain_hub: Hub) -> None:
    # A real WebSocket client; uvicorn speaks WebSocket through the `websockets` package
    # (test extra): without it, uvicorn would treat the upgrade as plain HTTP.
    import websockets
    from websockets.sync.client import connect

    for path in ("/", "/sse/x", "/sse/"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{plain_hub.port}{path}", open_timeout=WAIT)
        assert refused.value.response.status_code == 403, path
    assert client_status(plain_hub, "/sse/x") == 200  # still serving
    log = plain_hub.log()
    assert "Traceback" not in log and "ASGI callable returned" not in log, log


def client_status(hub: Hub, path: str, source: str = "127.0.0.1") -> int:
    with raw_stream(hub.port, path, source=source) as (status, _, _):
        return status


@contextmanager
def raw_stream(
    port: int, path: str, headers: bytes = b"", *, source: str = "127.0.0.1"
) -> Iterator[tuple[int, bytes, socket.socket]]:
    """A GET sent as raw bytes (headers: the client's exact bytes); yields the status, what
    was received so far (the head, maybe more) and the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n".encode() + headers + b"\r\n")
        head = recv_until(sock, lambda data: b"\r\n\r\n" in data)
        yield int(head.split(b" ")[1]), head, sock


def recv_until(sock: socket.socket, done: Callable[[bytes], bool], data: bytes = b"") -> bytes:
    deadline = time.monotonic() + WAIT
    while not done(data):
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_one_client_cannot_hold_more_than_max_channels_per_client(plain_hub: Hub) -> None:
    # The review's attack: merged streams of 16 new channels each, until refused (the
    # default, 256 channels = 16 such streams). Another client still subscribes to a new one.
    port = plain_hub.port
    with contextlib.ExitStack() as streams:
        for i in range(16):
            query = "&".join(f"channel=exh{i}-{j}" for j in range(16))
            status, _, _ = streams.enter_context(raw_stream(port, f"/sse/?{query}"))
            assert status == 200, i
        query = "&".join(f"channel=exh-more-{j}" for j in range(16))
        with raw_stream(port, f"/sse/?{query}") as (status, head, sock):
            reply = recv_until(sock, lambda data: data.endswith(b'"}'), head)
        assert status == 429
        assert b"retry-after: 5" in reply.lower()
        assert b"max_channels_per_client" in reply
        assert client_status(plain_hub, "/sse/alice-room", source="127.0.0.2") == 200
    # Every stream's channels were given back when it ended.
    wait_until(lambda: client_status(plain_hub, f"/sse/?{query}") == 200, "channels not freed")


def test_a_non_ascii_id_is_replayed_from_the_utf8_last_event_id(
    publish_hub: Hub, client: httpx.Client
) -> None:
    # As EventSource does: the id line's UTF-8 bytes come back raw in Last-Event-ID.
    with raw_stream(publish_hub.port, "/sse/utf8") as (status, head, sock):
        assert status == 200
        wait_subscribers_on(client, publish_hub, "utf8")
        for i in (1, 2):
            body = {"data": f"e{i}", "id": f"café-☕-{i}"}
            response = client.post(f"{publish_hub.url}/sse/utf8", json=body)
            assert response.status_code == 202, response.text
        stream = recv_until(sock, lambda data: b"data: e2" in data, head)
    (first_id,) = [line[4:] for line in stream.split(b"\n") if line.startswith(b"id: ")][:1]
    assert first_id == "café-☕-1".encode()
    resume = b"last-event-id: " + first_id + b"\r\n"
    with raw_stream(publish_hub.port, "/sse/utf8", resume) as (status, head, sock):
        replay = recv_until(sock, lambda data: b"data: e2" in data or b"sse.reset" in data, head)
    assert status == 200
    assert b"sse.reset" not in replay and b"data: e1" not in replay
    assert "id: café-☕-2".encode() in replay
    # Bytes that are not UTF-8 are an unknown id: a reset, not an error.
    not_utf8 = b"last-event-id: caf\xe9-\xff\r\n"
    with raw_stream(publish_hub.port, "/sse/utf8", not_utf8) as (status, head, sock):
        reset = recv_until(sock, lambda d: b"sse.reset" in d and b'"}\n\n' in d, head)
    assert status == 200
    notice = reset.partition(b"event: sse.reset\n")[2].partition(b"\n\n")[0]
    (data,) = [line[6:] for line in notice.split(b"\n") if line.startswith(b"data: ")]
    assert json.loads(data)["last_event_id"] == "caf\ufffd-\ufffd"
    assert "Traceback" not in publish_hub.log()


def wait_subscribers_on(client: httpx.Client, hub: Hub, name: str) -> None:
    def subscribed() -> bool:
        channel = client.get(f"{hub.url}/sse/_stats").json()["per_channel"].get(name)
        return channel is not None and channel["subscribers"] >= 1

    wait_until(subscribed, f"no subscriber on {name}")
