"""The README's quick start runs as written, and stops cleanly as the README says."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from .raw_streams import PYTHON, ServerProcess, free_port, open_streams, wait_ended
from .servers import serve

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = 10.0


def python_block(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_quick_start_channels_example() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_block("Quick start: channels in your app"), "README", "exec"), namespace)
    channel = namespace["notifications"]
    with serve(namespace["app"]) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/events") as source:
            deadline = time.monotonic() + WAIT
            while channel.subscriber_count < 1:
                assert time.monotonic() < deadline
                threading.Event().wait(0.01)
            sent = client.post(f"{url}/send").json()
            event = next(e for e in source.iter_sse() if e.data)
        assert (event.event, event.data, event.id) == ("notice", "Hello, world!", sent["id"])


def test_quick_start_served_by_the_runner_stops_cleanly(tmp_path: Path) -> None:
    """``python -m sse_toolkit run app:app``, then Ctrl+C: the stream ends cleanly with a
    retry hint after the event it got, and the process exits 0 with no traceback."""
    (tmp_path / "app.py").write_text(python_block("Quick start: channels in your app"))
    port = free_port()
    command = [PYTHON, "-m", "sse_toolkit", "run", "app:app", "--port", str(port)]
    process = ServerProcess(command, tmp_path / "server.log", cwd=tmp_path)

    async def scenario() -> tuple[Any, int]:
        (stream,) = await open_streams("127.0.0.1", port, ["/events"])
        async with httpx.AsyncClient(timeout=WAIT) as client:
            for _ in range(int(WAIT / 0.02)):  # until the subscription is live
                await client.post(f"http://127.0.0.1:{port}/send")
                if stream.events:
                    break
                await asyncio.sleep(0.02)
        process.signal(signal.SIGINT)
        await wait_ended([stream], WAIT)
        return stream, await asyncio.to_thread(process.wait, WAIT)

    try:
        process.wait_listening(port)
        stream, code = asyncio.run(scenario())
        log = process.log()
    finally:
        process.stop()
    assert stream.complete and stream.error is None, stream.error
    assert stream.events[0] == "Hello, world!"
    assert stream.retry_at_end is not None
    assert code == 0, log
    assert "Traceback" not in log, log
