"""The runner's command line at its edges: every server idle, bad options, a port in use,
workers that cannot start, and gunicorn's quick stop after its graceful one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .raw_streams import PYTHON, ROOT, ServerProcess, free_port, open_streams, wait_ended
from .test_shutdown_servers import APP, command

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def run_command(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "sse_toolkit", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    "server",
    ["uvicorn", "hypercorn-asyncio", "hypercorn-trio", "granian", "uvicorn-2-workers"],
)
def test_an_idle_server_stops_at_once(server: str, tmp_path: Path) -> None:
    """No connection at all (nothing wakes the loop but the signal): exit 0 within 2 s."""
    port = free_port()
    process = ServerProcess(command(server, port), tmp_path / "log")
    try:
        process.wait_listening(port)
        time.sleep(0.5)  # (workers up)
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        code = process.wait(15)
        elapsed = time.monotonic() - started
        log = process.log()
    finally:
        process.stop()
    assert code == 0, log
    assert elapsed < 2.0, f"{elapsed:.2f}s: {log[-1500:]}"
    assert "Traceback" not in log, log


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--grace", "inf"),
        ("--grace", "-1"),
        ("--reconnect-window", "inf"),
        ("--reconnect-after", "nan"),
        ("--workers", "0"),
        ("--max-connections", "0"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(option: str, value: str) -> None:
    result = run_command(APP, option, value, "--port", str(free_port()))
    assert result.returncode == 2, result
    name = option.removeprefix("--").replace("-", "_")
    assert name in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_a_port_in_use_is_one_line_not_a_traceback(server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(APP, "--server", server, "--port", str(port))
    assert result.returncode == 1, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_workers_that_cannot_start_make_the_supervisor_give_up(tmp_path: Path) -> None:
    """Not a respawn loop: after a few fast failures, exit 1."""
    port = free_port()
    args = [PYTHON, "-m", "sse_toolkit", "run", "tests.crashing_app:app", "--port", str(port)]
    process = ServerProcess([*args, "--workers", "2"], tmp_path / "log")
    try:
        code = process.wait(60)
        log = process.log()
    finally:
        process.stop()
    assert code == 1, log[-2000:]
    assert "keep exiting as they start" in log
    assert log.count("cannot start") < 20, "respawned without bound"


def test_gunicorn_quick_stop_after_a_graceful_one_still_ends_cleanly(tmp_path: Path) -> None:
    """SIGTERM (graceful: 5 s grace), a client that stopped reading holds it; then SIGINT
    (gunicorn's quick stop: 2 s before it kills workers): the worker cuts the stalled
    stream sooner and exits by itself, the others end cleanly."""
    port = free_port()
    process = ServerProcess(command("gunicorn", port), tmp_path / "log")

    async def scenario() -> tuple[list[object], int, float]:
        streams = await open_streams("127.0.0.1", port, ["/generator"] * 3)
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(1.0)  # the flood fills the buffers: its sends stall
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        process.signal(signal.SIGINT)
        await wait_ended(streams, 10)
        code = await asyncio.to_thread(process.wait, 15)
        stalled.close()
        return streams, code, time.monotonic() - started  # type: ignore[return-value]

    try:
        process.wait_listening(port)
        streams, code, elapsed = asyncio.run(scenario())
        log = process.log()
    finally:
        process.stop()
    for stream in streams:
        assert stream.complete and stream.retry_at_end is not None, stream  # type: ignore[attr-defined]
    assert code == 0, log
    assert elapsed < 3.0, f"{elapsed:.2f}s"
    assert "SIGKILL" not in log and "Perhaps out of memory" not in log, log


def test_connections_to_the_runners_socket_have_nagle_off() -> None:
    """The runner's listening socket says TCP, so asyncio sets TCP_NODELAY on each accepted
    connection: without it, every response after the first on a kept-alive connection
    waited for the client's delayed ACK (~40 ms)."""
    from sse_toolkit.runner import _bind

    listener = _bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    nodelay: list[int] = []

    async def scenario() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            async with asyncio.timeout(10):
                while not nodelay:
                    await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(scenario())
    assert listener.proto == socket.IPPROTO_TCP
    assert nodelay and nodelay[0] != 0
