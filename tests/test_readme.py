"""The README's quick start runs as written."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

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
