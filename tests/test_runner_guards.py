"""The runner guards the connections an app cannot (uvicorn, in its own process).

- A client that stops reading is dropped by the response after its send timeout (1 s
  here); the runner then resets its connection, so the server's file descriptor and kernel
  buffers are freed within 2x the send timeout, with nothing logged as an app error.
- A request head that does not arrive within ``--head-timeout`` (slowloris, or nothing at
  all) has its connection closed.
- Past ``--max-connections`` a request is answered 503.
- The soft limit on open files is raised to the hard limit at start.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path

import pytest

from .raw_streams import PYTHON, ServerProcess, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")

APP = "tests.shutdown_app:app"


def runner(port: int, *options: str) -> list[str]:
    return [PYTHON, "-m", "sse_toolkit", "run", APP, "--port", str(port), *options]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate: object, timeout: float, message: str) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(message)
        time.sleep(0.02)
    return time.monotonic() - started


def request(port: int, path: str, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closed (or reset) the connection within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.fixture
def server(tmp_path: Path) -> object:
    processes: list[ServerProcess] = []

    def start(*options: str) -> tuple[ServerProcess, int]:
        port = free_port()
        process = ServerProcess(runner(port, *options), tmp_path / f"{port}.log")
        processes.append(process)
        process.wait_listening(port)
        return process, port

    yield start
    for process in processes:
        process.stop()


def test_clients_that_stop_reading_are_reset_within_twice_the_send_timeout(server: object) -> None:
    process, port = server()  # type: ignore[operator]
    time.sleep(0.2)  # (let the server finish starting: its own fds are the baseline)
    baseline = open_fds(process.proc.pid)
    stalled = [request(port, "/flood", rcvbuf=4096) for _ in range(20)]
    try:
        wait_until(
            lambda: open_fds(process.proc.pid) >= baseline + 20, 10, "the streams did not open"
        )
        opened = time.monotonic()
        # The clients never read. The response drops each after its 1 s send timeout
        # (checked within 1.5 s); the runner must then free the socket at once.
        waited = wait_until(
            lambda: open_fds(process.proc.pid) <= baseline,
            4.0,
            f"sockets of stalled readers still open: {open_fds(process.proc.pid)} > {baseline}",
        )
        assert time.monotonic() - opened <= 2 * 1.0 + 0.5, waited
        for sock in stalled:
            assert closed_by_server(sock, 2.0)  # reset: no clean end, no hang
    finally:
        for sock in stalled:
            sock.close()
    log = process.log()
    assert "returned without completing response" not in log, log
    assert "Traceback" not in log, log


def test_a_slow_request_head_is_closed_after_the_head_timeout(server: object) -> None:
    _, port = server("--head-timeout", "1")  # type: ignore[operator]
    slow = socket.create_connection(("127.0.0.1", port))
    idle = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    try:
        head = b"GET /generator HTTP/1.1\r\nHost: x\r\n"
        closed = False
        for byte in head:  # one byte every 0.2 s: never a whole head
            try:
                slow.send(bytes([byte]))
            except OSError:
                closed = True
                break
            slow.settimeout(0.2)
            try:
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
        assert closed, "a head sent one byte at a time was held open"
        assert time.monotonic() - started < 3.0
        assert closed_by_server(idle, 2.0), "a connection that sent nothing was held open"
    finally:
        slow.close()
        idle.close()
    # A normal request still works, and its stream is not cut by the head timeout.
    sock = request(port, "/generator")
    try:
        sock.settimeout(3.0)
        data = b""
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200") and data.count(b"event: tick") >= 4, data
    finally:
        sock.close()


def test_past_max_connections_a_request_is_answered_503(server: object) -> None:
    process, port = server("--max-connections", "5")  # type: ignore[operator]
    streams = [request(port, "/generator") for _ in range(5)]
    try:
        for sock in streams:
            sock.settimeout(5)
            assert sock.recv(12) == b"HTTP/1.1 200"
        extra = request(port, "/generator")
        extra.settimeout(5)
        assert extra.recv(12) == b"HTTP/1.1 503"
        extra.close()
    finally:
        for sock in streams:
            sock.close()
    assert "Traceback" not in process.log()


def test_the_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("no finite hard limit above 256 to raise to")
    port = free_port()
    low = 256
    process = ServerProcess(runner(port), tmp_path / "server.log", rlimit_nofile=(low, hard))
    try:
        process.wait_listening(port)
        limits = Path(f"/proc/{process.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        process.stop()


def test_the_guard_adds_nothing_to_a_connection_s_attribute_dict() -> None:
    """The guarded protocol keeps its own state off the instance dict (a slot, the app on
    the class): one name more than uvicorn's own took every connection's dict past the
    30 names CPython shares between instances, 1.3 KB more per open connection."""
    import asyncio
    import sys

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from sse_toolkit.contrib.uvicorn import ConnectionGuard, Server

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        while (await receive())["type"] != "http.disconnect":  # type: ignore[operator]
            pass

    async def dict_sizes(guarded: bool) -> list[tuple[int, int]]:
        config = uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        server = Server(config, guard=ConnectionGuard()) if guarded else uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        writers = []
        try:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                writers.append(writer)
            import gc

            protocols = [o for o in gc.get_objects() if isinstance(o, HttpToolsProtocol)]
            return [(len(vars(p)), sys.getsizeof(vars(p))) for p in protocols]
        finally:
            server.should_exit = True
            for writer in writers:
                writer.close()
            await asyncio.wait_for(serving, 10)

    plain = asyncio.run(dict_sizes(guarded=False))
    guarded = asyncio.run(dict_sizes(guarded=True))
    assert len(guarded) == len(plain) == 3
    assert max(size for _, size in guarded) <= max(size for _, size in plain), (guarded, plain)
    assert max(count for count, _ in guarded) <= max(count for count, _ in plain)
