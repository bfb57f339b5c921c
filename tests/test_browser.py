"""A real browser's EventSource against the toolkit: headless Chromium over loopback.

The page records what its EventSource receives in ``document.title``; the test reads the
title through Chromium's DevTools HTTP endpoint (``/json/list``), so no driver is needed.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from sse_toolkit import ChannelManager, EventStreamResponse, SSEApp

from .servers import free_port, serve

WAIT = 30.0
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Chromium is not installed (apt-get install chromium); CI installs it",
)

PAGE = """<!doctype html><meta charset="utf-8"><title>starting</title>
<script>
const want = %(want)d, seen = [];
const source = new EventSource(%(url)s, {withCredentials: %(credentials)s});
source.addEventListener("tick", (e) => {
  seen.push(e.lastEventId + "|" + e.data);
  document.title = seen.length >= want ? "done:" + JSON.stringify(seen) : "seen:" + seen.length;
  if (seen.length >= want) source.close();
});
source.onerror = () => { if (source.readyState === 2) document.title = "failed"; };
source.onopen = () => { if (!seen.length) document.title = "open"; };
</script>"""


@contextmanager
def chromium(url: str) -> Iterator[int]:
    """Headless Chromium showing ``url``; yields its DevTools port."""
    assert CHROMIUM is not None, "Chromium is required in CI"
    port = free_port()
    # Chromium's helper processes may still write to the profile as the browser exits.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers (zygote, crashpad) end with it
        )
        try:
            yield port
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def page_title(port: int, url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as reply:
            pages = json.load(reply)
    except OSError:
        return None  # DevTools not up yet
    for page in pages:
        if page.get("url", "").startswith(url):
            return html.unescape(str(page.get("title", "")))  # DevTools escapes it
    return None


def wait_title(port: int, url: str, predicate: Any) -> str:
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    title = None
    while time.monotonic() < deadline:
        title = page_title(port, url)
        if title is not None and predicate(title):
            return title
        pause.wait(0.05)
    raise AssertionError(f"timed out; the page's title is {title!r}")


def test_eventsource_reconnects_with_last_event_id_and_misses_nothing() -> None:
    """Streams end every 0.3 s; the browser reconnects (retry 50 ms) with Last-Event-ID,
    and the channel replays what was published in between: no gap, no duplicate."""
    manager = ChannelManager()
    reconnects: list[str] = []
    total = 30

    async def events(request: Request) -> EventStreamResponse:
        channel = await manager.get_or_create("room")
        last_id = request.headers.get("last-event-id")
        if last_id:
            reconnects.append(last_id)
        return EventStreamResponse(
            channel.listen(last_event_id=last_id), retry=50, max_duration=0.3
        )

    async def page(request: Request) -> HTMLResponse:
        args = {"want": total, "url": json.dumps("/events"), "credentials": "false"}
        return HTMLResponse(PAGE % args)

    sse = SSEApp(manager, allow_publish=True)
    app = Starlette(routes=[Route("/", page), Route("/events", events), Mount("/sse", app=sse)])
    with serve(app) as base, httpx.Client(timeout=WAIT) as client, chromium(base + "/") as port:
        wait_title(port, base, lambda title: title == "open")
        published = []
        pause = threading.Event()
        for i in range(total):
            reply = client.post(f"{base}/sse/room", json={"data": f"n{i}", "event": "tick"})
            assert reply.status_code == 202
            published.append(f"{reply.json()['id']}|n{i}")
            pause.wait(0.04)  # pace the publishes across several stream lifetimes
        title = wait_title(port, base, lambda title: title.startswith(("done:", "failed")))
    assert title.startswith("done:"), title
    assert json.loads(title.removeprefix("done:")) == published
    assert len(reconnects) >= 2  # it really did reconnect, and resumed each time


@pytest.mark.parametrize("allowed", [True, False])
def test_cross_origin_eventsource_with_credentials(allowed: bool) -> None:
    """The page on one origin, the streams on another: CORS decides."""
    manager = ChannelManager()
    sse_port, page_port = free_port(), free_port()
    stream_origin = f"http://127.0.0.1:{sse_port}"  # another port: another origin
    origins = [f"http://127.0.0.1:{page_port}"] if allowed else ["https://elsewhere.example"]
    sse = SSEApp(manager, allow_publish=True, cors_origins=origins, cors_allow_credentials=True)

    async def page(request: Request) -> HTMLResponse:
        url = json.dumps(f"{stream_origin}/room")
        return HTMLResponse(PAGE % {"want": 1, "url": url, "credentials": "true"})

    page_app = Starlette(routes=[Route("/", page)])
    with (
        serve(sse, port=sse_port) as _,
        serve(page_app, port=page_port) as page_base,
        chromium(page_base + "/") as port,
        httpx.Client(timeout=WAIT) as client,
    ):
        if allowed:
            wait_title(port, page_base, lambda title: title == "open")
            reply = client.post(f"{stream_origin}/room", json={"data": "x", "event": "tick"})
            title = wait_title(port, page_base, lambda title: title.startswith("done:"))
            assert json.loads(title.removeprefix("done:")) == [f"{reply.json()['id']}|x"]
        else:
            # The browser refuses the response: EventSource gives up (readyState CLOSED).
            assert wait_title(port, page_base, lambda title: title == "failed") == "failed"
