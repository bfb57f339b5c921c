"""The hub's dashboard (``/``) and demo publishers.

In-process tests check what the Hub serves (headers, config, assets, errors) and its
lifespan (the demo's task group) on asyncio and trio. The ``browser`` tests drive Debian's
Chromium with Playwright against a real hub (``python -m sse_toolkit``) over loopback; each
saves a screenshot in ``test-artifacts/screenshots/``. With ``SSE_TOOLKIT_DOCS_SCREENSHOTS=1``
they also write the documentation's screenshots in ``docs/img/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from sse_toolkit import ChannelManager, SSEApp
from sse_toolkit.demo import DEMO_CHANNELS, run_demo
from sse_toolkit.hub import CONTENT_SECURITY_POLICY, Hub, HubSettings
from sse_toolkit.tokens import create_token

from .servers import free_port
from .sse_servers import HubProcess, hub_process

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_IMG = ROOT / "docs" / "img"
DOCS_SCREENSHOTS = os.environ.get("SSE_TOOLKIT_DOCS_SCREENSHOTS") == "1"
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 15_000  # Playwright's bounded waits
START_TIMEOUT = 15.0
SECRET = "dashboard-secret-long-enough-for-hs256"
JSON = {"content-type": "application/json"}
VIEWPORT = {"width": 1200, "height": 800}


# -- in process: what the Hub serves -------------------------------------------------------


def hub_app(**settings: Any) -> Hub:
    hub_settings = HubSettings(**settings)
    secret = SECRET if hub_settings.token_required_for else None
    sse = SSEApp(
        ChannelManager(),
        allow_publish=hub_settings.allow_publish,
        stats=hub_settings.stats,
        secret=secret,
        token_required_for=hub_settings.token_required_for if secret else None,
    )
    return Hub(sse, hub_settings)


async def fetch(app: Hub, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.anyio
async def test_page_has_a_strict_csp_and_no_inline_script() -> None:
    response = await fetch(hub_app(), "GET", "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"]
    page = response.text
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    assert scripts == [""], "only external scripts"
    assert '<script src="_hub/dashboard.js" defer>' in page
    assert "style=" not in page and "<style" not in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere


@pytest.mark.anyio
async def test_head_and_conditional_get() -> None:
    app = hub_app()
    full = await fetch(app, "GET", "/")
    head = await fetch(app, "HEAD", "/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    again = await fetch(app, "GET", "/", headers={"if-none-match": full.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        (['"x", {etag}'], 304),  # a list (RFC 9110 13.1.2)
        (['"x",{etag} , "y"'], 304),
        (["W/{etag}"], 304),  # weak comparison
        (['W/"x", W/{etag}'], 304),
        (["*"], 304),
        (['"x"', "{etag}"], 304),  # two field lines: one list
        (['"x"'], 200),
        (['"x", W/"y"'], 200),
        (["{etag}x"], 200),
    ],
)
async def test_if_none_match_lists_and_star(if_none_match: list[str], status: int) -> None:
    app = hub_app()
    etag = (await fetch(app, "GET", "/_hub/dashboard.js")).headers["etag"]
    headers = [("if-none-match", value.format(etag=etag)) for value in if_none_match]
    response = await fetch(app, "GET", "/_hub/dashboard.js", headers=headers)
    assert response.status_code == status
    assert response.headers["etag"] == etag
    if status == 304:
        assert response.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/_hub/dashboard.js", "text/javascript; charset=utf-8"),
        ("/_hub/dashboard.css", "text/css; charset=utf-8"),
    ],
)
async def test_static_assets(path: str, content_type: str) -> None:
    response = await fetch(hub_app(), "GET", path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    assert len(response.content) > 1000
    if path.endswith(".js"):
        assert "innerHTML" not in response.text and "insertAdjacentHTML" not in response.text
        assert "eval(" not in response.text


@pytest.mark.anyio
async def test_config_matches_the_settings() -> None:
    response = await fetch(hub_app(), "GET", "/_hub/config.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "sse_prefix": "/sse",
        "allow_publish": False,
        "token_required_for": [],
        "stats": False,
        "demo": False,
        "token_cookie": "sse_token",
        "demo_channels": [],
    }
    app = hub_app(
        allow_publish=True,
        token_required_for=frozenset({"stats", "publish"}),
        stats=True,
        demo=True,
    )
    config = (await fetch(app, "GET", "/_hub/config.json")).json()
    assert config["allow_publish"] is True and config["stats"] is True and config["demo"] is True
    assert config["token_required_for"] == ["publish", "stats"]
    assert config["demo_channels"] == [
        {"channel": "clock", "event": "tick"},
        {"channel": "jobs", "event": "progress"},
        {"channel": "metrics", "event": "metric"},
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/index.html", 404),
        ("GET", "/_hub/nope.js", 404),
        ("GET", "/_hub/", 404),
        ("POST", "/", 405),
        ("DELETE", "/", 405),
        ("POST", "/_hub/dashboard.js", 405),
        ("PUT", "/_hub/config.json", 405),
    ],
)
async def test_unknown_paths_and_methods(method: str, path: str, status: int) -> None:
    response = await fetch(hub_app(), method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    # Compact, as the SSEApp's own errors are (one helper: _http.send_json).
    message = "not found" if status == 404 else "method not allowed"
    assert response.content == b'{"error":"%s"}' % message.encode()
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"
    sse_error = await fetch(hub_app(), "GET", "/sse/_nope")
    assert sse_error.status_code == 404 and sse_error.content.startswith(b'{"error":"')


@pytest.mark.anyio
async def test_the_token_cookie_is_in_the_config_and_the_sse_app_reads_it() -> None:
    sse = SSEApp(ChannelManager(), secret=SECRET, token_cookie="hub_token")
    app = Hub(
        sse, HubSettings(token_required_for=frozenset({"subscribe"}), token_cookie="hub_token")
    )
    config = (await fetch(app, "GET", "/_hub/config.json")).json()
    assert config["token_cookie"] == "hub_token"
    # A token for another channel, in that cookie: read (403, not "a token is required").
    other = create_token(SECRET, channels=["other"], actions=["subscribe"], ttl=60)
    refused = await fetch(app, "GET", "/sse/vault", headers={"cookie": f"hub_token={other}"})
    assert refused.status_code == 403, refused.text
    missing = await fetch(app, "GET", "/sse/vault", headers={"cookie": f"sse_token={other}"})
    assert missing.status_code == 401


@pytest.mark.anyio
async def test_sse_routes_still_reach_the_sse_app() -> None:
    response = await fetch(hub_app(stats=True), "GET", "/sse/_stats")
    assert response.status_code == 200 and response.json()["channels"] == 0
    bad = await fetch(hub_app(), "GET", "/sse/?channel=%3Cscript%3E")
    assert bad.status_code == 400


# -- in process: the demo and the lifespan (asyncio and trio) -------------------------------


@pytest.mark.anyio
async def test_demo_publishers_publish_their_events() -> None:
    manager = ChannelManager()
    listeners = {}
    for name in DEMO_CHANNELS:
        channel = await manager.get_or_create(name)
        listeners[name] = channel.listen()
    seen: dict[str, Any] = {}
    with anyio.fail_after(2):  # the first events come at once
        async with anyio.create_task_group() as group:
            group.start_soon(run_demo, manager)
            for name, listener in listeners.items():
                event = await listener.__anext__()
                seen[name] = (event.event, event.data)
            group.cancel_scope.cancel()
    await manager.close()
    assert seen["clock"][0] == "tick" and "T" in seen["clock"][1]["time"]
    assert seen["jobs"] == ("progress", {"job": 1, "percent": 0})
    assert seen["metrics"][0] == "metric" and seen["metrics"][1]["name"] == "cpu"
    assert 0 <= seen["metrics"][1]["value"] <= 100


class Lifespan:
    """Drive an app's ASGI lifespan: startup, then shutdown."""

    def __init__(self, app: Hub) -> None:
        self.app = app
        self.to_app, self.app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
        self.app_outbox, self.from_app = anyio.create_memory_object_stream[dict[str, Any]](4)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await self.app(scope, self.app_inbox.receive, self.app_outbox.send)

    async def ask(self, kind: str) -> str:
        await self.to_app.send({"type": f"lifespan.{kind}"})
        return str((await self.from_app.receive())["type"])


async def published(manager: ChannelManager) -> dict[str, int]:
    per_channel = manager.stats()["per_channel"]
    return {name: per_channel[name]["published"] for name in per_channel}


@pytest.mark.anyio
async def test_lifespan_runs_the_demo_and_stops_it_at_shutdown() -> None:
    app = hub_app(demo=True, allow_publish=True, stats=True)
    manager = app.sse.manager
    lifespan = Lifespan(app)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(lifespan.run)
            assert await lifespan.ask("startup") == "lifespan.startup.complete"
            while set(await published(manager)) != set(DEMO_CHANNELS):
                await anyio.sleep(0.01)
            assert await lifespan.ask("shutdown") == "lifespan.shutdown.complete"
        # The lifespan call returned (the task group's scope is over); nothing publishes now.
        after = await published(manager)
        await anyio.sleep(0.6)
        assert await published(manager) == after


@pytest.mark.anyio
async def test_lifespan_without_demo_is_the_sse_apps() -> None:
    app = hub_app()
    lifespan = Lifespan(app)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(lifespan.run)
            assert await lifespan.ask("startup") == "lifespan.startup.complete"
            assert await lifespan.ask("shutdown") == "lifespan.shutdown.complete"
    assert app.sse.manager.stats()["channels"] == 0


# -- a real hub, in a process of its own ---------------------------------------------------


def publish(hub: HubProcess, channel: str, body: dict[str, Any], token: str | None = None) -> str:
    headers = dict(JSON)
    if token:
        headers["authorization"] = f"Bearer {token}"
    response = httpx.post(f"{hub.url}/sse/{channel}", json=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# -- the browser ---------------------------------------------------------------------------

browser_needed = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
    reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium); CI needs it",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Console:
    """Script errors and console errors of a page; ``expected`` are network errors a test
    provokes on purpose (a 401 answer, a refused connection): the browser logs those too."""

    messages: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(re.search(p, m) for p in self.expected)]


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    tab = context.new_page()
    console = Console()
    tab.on("pageerror", lambda error: console.messages.append(f"pageerror: {error}"))
    tab.on(
        "console",
        lambda message: (
            console.messages.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    tab.console_log = console
    try:
        yield tab
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
        context.close()


def no_console_errors(tab: Any) -> None:
    problems = tab.console_log.unexpected()
    assert not problems, problems


def docs_screenshot(tab: Any, name: str) -> None:
    if DOCS_SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(DOCS_IMG / name))


def rows(tab: Any, selector: str = "") -> Any:
    return tab.locator(f"#events tr{selector}")


def state(tab: Any) -> Any:
    return tab.locator("#state")


def subscribe(tab: Any, channels: str, event_types: str = "") -> None:
    from playwright.sync_api import expect

    tab.fill("#channels", channels)
    tab.fill("#event-types", event_types)
    tab.click("#subscribe")
    expect(state(tab)).to_have_attribute("data-state", "open", timeout=WAIT_MS)


def howto_blocks(tab: Any) -> dict[str, str]:
    """The "From a terminal" panel: each label and the lines under it."""
    pairs = tab.evaluate(
        """() => [...document.querySelectorAll("#howto p")].map((p) => [
            p.textContent,
            p.nextElementSibling && p.nextElementSibling.tagName === "PRE"
                ? p.nextElementSibling.textContent : null,
        ])"""
    )
    return {label.split(" (")[0]: lines for label, lines in pairs if lines is not None}


def run_in_a_shell(
    lines: str, tmp_path: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the page's lines as a newcomer would paste them (bash; ``python`` is this one;
    the placeholder ``--secret ...`` replaced by the hub's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    script = "set -e\n" + lines.replace("--secret ...", f"--secret {SECRET}")
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


@pytest.mark.browser
@browser_needed
def test_idle_page_matches_how_the_hub_was_started(page: Any, tmp_path: Path) -> None:
    """No publishing, no stats: the page offers neither, and its curl lines say so."""
    from playwright.sync_api import expect

    with hub_process(tmp_path) as hub:
        page.goto(hub.url + "/")
        expect(page.locator("#howto pre").first).to_contain_text("curl -N", timeout=WAIT_MS)
        expect(page.locator("#publish-panel")).to_be_hidden()
        expect(page.locator("#stats-panel")).to_be_hidden()
        expect(page.locator("#token-panel")).to_be_hidden()
        howto = page.locator("#howto").inner_text()
        assert f"curl -N {hub.url}/sse/demo" in howto
        assert "curl -X POST" not in howto and "token --secret" not in howto
        assert "Publishing over HTTP is off" in howto
        expect(state(page)).to_have_attribute("data-state", "idle")
        no_console_errors(page)

    with hub_process(tmp_path, "--allow-publish", "--stats") as hub:
        publish(hub, "news", {"data": "hello"})
        publish(hub, "weather", {"event": "forecast", "data": {"sky": "clear"}})
        page.goto(hub.url + "/")
        expect(page.locator("#known-channels .chip")).to_have_count(2, timeout=WAIT_MS)
        expect(page.locator("#stats-body tr")).to_have_count(2)
        howto = page.locator("#howto").inner_text()
        assert f"{hub.url}/sse/demo" in howto and "curl -X POST" in howto
        assert "token --secret" not in howto and "Bearer" not in howto
        page.click("#known-channels .chip[data-channel='news']")
        expect(page.locator("#channels")).to_have_value("news")
        docs_screenshot(page, "dashboard-idle.png")
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_named_and_json_events_from_two_channels_on_one_stream(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish", "--stats") as hub:
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(hub.url + "/")
        subscribe(page, "alpha beta", "update")
        streams = [url for url in requested if "/sse/?" in url]
        assert streams == [f"{hub.url}/sse/?channel=alpha&channel=beta"]  # one stream

        publish(hub, "alpha", {"data": "plain words"})
        publish(hub, "beta", {"event": "update", "data": {"n": 1, "nested": {"k": [1, 2]}}})
        long_text = "\n".join(f"line {i}" for i in range(40))
        publish(hub, "alpha", {"event": "update", "data": {"text": long_text}})
        publish(hub, "beta", {"event": "unlisted", "data": "not listened to"})
        publish(hub, "beta", {"data": "last"})
        expect(rows(page)).to_have_count(4, timeout=WAIT_MS)

        plain = rows(page, "[data-event='message'][data-channel='alpha']")
        expect(plain).to_have_count(1)
        expect(plain.locator("td.data")).to_have_text("plain words")
        update = rows(page, "[data-event='update'][data-channel='beta']")
        expect(update).to_have_count(1)
        text = update.locator("td.data pre").inner_text()
        assert json.loads(text) == {"n": 1, "nested": {"k": [1, 2]}}
        folded = rows(page, "[data-event='update'][data-channel='alpha']")
        expect(folded.locator("details")).to_have_count(1)
        expect(folded.locator("details pre")).to_be_hidden()
        folded.locator("summary").click()
        expect(folded.locator("details pre")).to_contain_text("line 39")
        expect(rows(page, "[data-channel='beta'][data-event='message']")).to_have_count(1)
        # Newest first; the id shown is the channel's position, the whole id on hover.
        first = rows(page).first
        expect(first).to_have_attribute("data-channel", "beta")
        composite = first.get_attribute("data-id")
        assert composite.startswith("alpha=") and "&beta=" in composite
        expect(page.locator("#last-id")).to_have_text(composite)
        expect(page.locator("#stats-body tr[data-channel='alpha'] td").nth(1)).to_have_text("1")
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_resubscribing_resumes_after_the_last_event_id(page: Any, tmp_path: Path) -> None:
    """Disconnect, miss events, subscribe again: ?last_event_id= replays each one once."""
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish") as hub:
        page.goto(hub.url + "/?channel=a&channel=b")
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        publish(hub, "a", {"data": "before"})
        expect(rows(page)).to_have_count(1, timeout=WAIT_MS)
        page.click("#disconnect")
        expect(state(page)).to_have_attribute("data-state", "closed")
        publish(hub, "b", {"data": "missed-1"})
        publish(hub, "a", {"data": "missed-2"})
        page.click("#subscribe")
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        expect(rows(page)).to_have_count(3, timeout=WAIT_MS)
        publish(hub, "b", {"data": "after"})
        expect(rows(page)).to_have_count(4, timeout=WAIT_MS)
        # Each channel replays in its own order (a merged stream has no order across
        # channels); every event once, with its channel.
        shown = [
            (row.get_attribute("data-channel"), row.locator("td.data").inner_text())
            for row in rows(page).all()
        ]
        assert shown[0] == ("b", "after") and shown[-1] == ("a", "before")
        assert sorted(shown) == [
            ("a", "before"),
            ("a", "missed-2"),
            ("b", "after"),
            ("b", "missed-1"),
        ]
        no_console_errors(page)


@pytest.mark.browser
@pytest.mark.redis
@browser_needed
def test_reconnects_after_a_restart_and_shows_missed_events_once(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from .conftest import redis_url

    prefix = f"sse-dashboard-{uuid.uuid4().hex}:"
    args = ("--allow-publish", "--redis-url", redis_url(), "--redis-prefix", prefix)
    port = free_port()
    page.console_log.expected += [r"ERR_CONNECTION_REFUSED", r"ERR_EMPTY_RESPONSE"]
    try:
        with hub_process(tmp_path, *args, port=port) as hub:
            page.goto(hub.url + "/")
            subscribe(page, "r1 r2", "step")
            publish(hub, "r1", {"event": "step", "data": {"n": 1}})
            publish(hub, "r2", {"event": "step", "data": {"n": 2}})
            expect(rows(page)).to_have_count(2, timeout=WAIT_MS)
            assert hub.terminate() == 0, hub.log()
            expect(state(page)).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
            expect(state(page)).to_contain_text("attempt")
            docs_screenshot(page, "dashboard-reconnecting.png")
        with hub_process(tmp_path, *args, port=port) as hub:
            # Published as soon as the hub is back, before the page (whose retry hint is
            # 0.5 to 5.5 s) is likely to have reconnected: replayed from Last-Event-ID.
            for n in (3, 4, 5):
                publish(hub, f"r{1 + n % 2}", {"event": "step", "data": {"n": n}})
            expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
            expect(rows(page)).to_have_count(5, timeout=WAIT_MS)
            # A last event: a duplicate replay would have come before it.
            publish(hub, "r1", {"event": "step", "data": {"n": 6}})
            expect(rows(page)).to_have_count(6, timeout=WAIT_MS)
            # Every event once, with its channel (a replay comes channel by channel).
            shown = [
                (row.get_attribute("data-channel"), json.loads(row.locator("td.data").inner_text()))
                for row in rows(page).all()
            ]
            assert shown[0] == ("r1", {"n": 6})
            assert sorted((channel, data["n"]) for channel, data in shown) == [
                ("r1", 1),
                ("r1", 4),
                ("r1", 6),
                ("r2", 2),
                ("r2", 3),
                ("r2", 5),
            ]
            no_console_errors(page)
    finally:
        import redis

        client = redis.Redis.from_url(redis_url())
        try:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.mark.browser
@browser_needed
def test_publish_form_shows_the_id_and_the_errors(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish", "--stats") as hub:
        page.goto(hub.url + "/")
        subscribe(page, "news")
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
        page.fill("#pub-channel", "news")
        page.fill("#pub-event", "headline")
        page.select_option("#pub-format", "json")
        page.fill("#pub-data", '{"title": "Dashboards", "rank": 1}')
        page.click("#publish")
        result = page.locator("#publish-result")
        expect(result).to_contain_text("Published on news with id", timeout=WAIT_MS)
        stored_id = result.inner_text().rsplit(" ", 1)[1]
        # The page listens to the event type it publishes, and shows the event.
        row = rows(page, "[data-event='headline']")
        expect(row).to_have_count(1, timeout=WAIT_MS)
        expect(row.locator("td.id")).to_have_text(stored_id)
        assert json.loads(row.locator("td.data").inner_text()) == {"title": "Dashboards", "rank": 1}
        docs_screenshot(page, "dashboard-publishing.png")

        # Not JSON: refused in the page, nothing sent.
        posts = len(sent)
        page.fill("#pub-data", "{oops")
        page.click("#publish")
        expect(result).to_contain_text("Not sent: the data is not JSON")
        expect(result).to_have_class(re.compile(r"\bbad\b"))
        assert len(sent) == posts

        # The hub's refusal, with its status.
        page.select_option("#pub-format", "text")
        page.fill("#pub-data", "x")
        page.fill("#pub-id", "i" * 1025)
        page.click("#publish")
        expect(result).to_contain_text("400: ", timeout=WAIT_MS)
        page.fill("#pub-id", "")
        page.fill("#pub-channel", "no/such")
        page.click("#publish")
        expect(result).to_contain_text("404: not found", timeout=WAIT_MS)
        page.console_log.expected.append(r"status of 40[04]")
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_with_a_secret_the_page_needs_a_token(page: Any, tmp_path: Path) -> None:
    """``--secret`` alone: every action needs a token; 401 until the page has one."""
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish", "--stats", "--secret", SECRET) as hub:
        page.goto(hub.url + "/")
        expect(page.locator("#token-panel")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#token-needs")).to_contain_text("publish")
        howto = page.locator("#howto").inner_text()
        assert "python -m sse_toolkit token --secret ... --channel demo" in howto
        assert "--action publish" in howto and '"authorization: Bearer $TOKEN"' in howto
        expect(page.locator("#stats-error")).to_contain_text("401: ", timeout=WAIT_MS)

        page.fill("#channels", "vault")
        page.click("#subscribe")
        expect(state(page)).to_have_attribute("data-state", "closed", timeout=WAIT_MS)
        expect(page.locator("#subscribe-error")).to_contain_text("401: ", timeout=WAIT_MS)
        page.fill("#pub-channel", "vault")
        page.fill("#pub-data", "secret words")
        page.click("#publish")
        result = page.locator("#publish-result")
        expect(result).to_contain_text("401: ", timeout=WAIT_MS)

        actions = ["subscribe", "publish", "stats"]
        page.fill("#token", create_token(SECRET, channels=["*"], actions=actions, ttl=300))
        subscribe(page, "vault")
        expect(page.locator("#subscribe-error")).to_be_hidden()
        page.click("#publish")
        expect(result).to_contain_text("Published on vault with id", timeout=WAIT_MS)
        expect(rows(page, "[data-channel='vault']")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#stats-error")).to_be_hidden(timeout=WAIT_MS)
        expect(page.locator("#stats-body tr[data-channel='vault']")).to_have_count(1)
        page.console_log.expected.append(r"status of 401")
        no_console_errors(page)


XSS_EVENT = "<script>alert(1)</script>"
XSS_DATA = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'


@pytest.mark.browser
@browser_needed
def test_markup_in_events_and_names_is_shown_as_text(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish", "--stats") as hub:
        page.goto(hub.url + "/")
        subscribe(page, "safe", XSS_EVENT)
        publish(hub, "safe", {"event": XSS_EVENT, "data": XSS_DATA})
        publish(hub, "safe", {"data": {"html": XSS_DATA}})
        expect(rows(page)).to_have_count(2, timeout=WAIT_MS)
        named = rows(page, "[data-channel='safe']").last
        expect(named.locator("td.event")).to_have_text(XSS_EVENT)
        expect(named.locator("td.data")).to_have_text(XSS_DATA)
        plain = rows(page).first
        assert json.loads(plain.locator("td.data").inner_text()) == {"html": XSS_DATA}

        # A channel name with markup: the hub refuses it, the page shows the message as text.
        page.fill("#channels", "<script>alert(2)</script>")
        page.click("#subscribe")
        expect(state(page)).to_have_attribute("data-state", "closed", timeout=WAIT_MS)
        error = page.locator("#subscribe-error")
        expect(error).to_contain_text("400: ", timeout=WAIT_MS)
        page.fill("#pub-channel", "<img src=x onerror=alert(3)>")
        page.fill("#pub-data", "x")
        page.click("#publish")
        expect(page.locator("#publish-result")).to_contain_text("400: ", timeout=WAIT_MS)

        assert page.evaluate("window.__xss") is None
        assert page.locator("#events img, #events script, #events b").count() == 0
        assert page.locator("body img, body b").count() == 0
        assert page.locator("script").count() == 1  # the dashboard's own
        page.console_log.expected.append(r"status of 400")
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_demo_events_appear_and_the_hub_stops_cleanly(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--demo", "--log-level", "info") as hub:
        started = time.monotonic()
        page.goto(hub.url + "/")
        expect(page.locator("#channels")).to_have_value("clock jobs metrics", timeout=WAIT_MS)
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        for channel, event in DEMO_CHANNELS.items():
            row = rows(page, f"[data-channel='{channel}'][data-event='{event}']")
            expect(row.first).to_be_visible(timeout=5_000)
        assert time.monotonic() - started < 10
        clock = rows(page, "[data-channel='clock']").first.locator("td.data").inner_text()
        assert "time" in json.loads(clock)
        expect(page.locator("#stats-body tr[data-channel='jobs']")).to_have_count(1)
        expect(page.locator("#publish-panel")).to_be_visible()
        if DOCS_SCREENSHOTS:  # a few seconds of the demo for the documentation
            expect(rows(page).nth(17)).to_be_attached(timeout=WAIT_MS)
        docs_screenshot(page, "dashboard-live.png")

        # The page's own Publish line publishes where the page listens, an event it shows.
        run = run_in_a_shell(howto_blocks(page)["Publish"], tmp_path)
        assert run.returncode == 0 and '"channel":"clock"' in run.stdout, run
        expect(rows(page, "[data-channel='clock'][data-event='message']")).to_have_count(
            1, timeout=WAIT_MS
        )

        assert hub.terminate() == 0, hub.log()
        log = hub.log()
        assert "Traceback" not in log and "ERROR" not in log, log
        expect(state(page)).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
        page.console_log.expected += [r"ERR_CONNECTION_REFUSED", r"ERR_EMPTY_RESPONSE"]
        no_console_errors(page)


def test_chromium_is_there_in_ci() -> None:
    if os.environ.get("CI") == "true":
        assert os.path.exists(CHROMIUM) or shutil.which("chromium"), "CI needs Chromium"


TOKEN_HINT = "This hub needs a token to subscribe: paste one, then Subscribe."


@pytest.mark.browser
@browser_needed
def test_the_terminal_lines_work_as_pasted(page: Any, tmp_path: Path) -> None:
    """Each block mints a token for its own action (the new CLI: stats needs no channel),
    sends it in double quotes, and the Publish line shows up in the page."""
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish", "--stats", "--secret", SECRET) as hub:
        page.goto(hub.url + "/")
        actions = ["subscribe", "publish", "stats"]
        page.fill("#token", create_token(SECRET, channels=["*"], actions=actions, ttl=300))
        subscribe(page, "news weather")
        blocks = howto_blocks(page)
        assert set(blocks) == {"Subscribe", "Several channels on one stream", "Publish", "Counters"}
        for label, mints in [
            ("Subscribe", "--channel news --channel other --action subscribe)"),
            ("Publish", "--channel news --action publish)"),
            ("Counters", "token --secret ... --action stats)"),
        ]:
            mint, curl = blocks[label].split("\n")
            assert mint.startswith("TOKEN=$(python -m sse_toolkit token --secret ...")
            assert mint.endswith(mints) and mint.count("--action") == 1, mint
            assert '-H "authorization: Bearer $TOKEN"' in curl and "'authorization" not in curl
        assert '"event"' not in blocks["Publish"]

        run = run_in_a_shell(blocks["Publish"], tmp_path)
        assert run.returncode == 0 and '"channel":"news"' in run.stdout, run
        row = rows(page, "[data-channel='news'][data-event='message']")
        expect(row).to_have_count(1, timeout=WAIT_MS)
        assert json.loads(row.locator("td.data").inner_text()) == {"hello": "world"}

        run = run_in_a_shell(blocks["Counters"], tmp_path)
        assert run.returncode == 0 and json.loads(run.stdout)["per_channel"]["news"], run
        stream = blocks["Subscribe"].replace("curl -N", "curl -N -sS -i --max-time 2")
        run = run_in_a_shell(stream, tmp_path)
        assert run.returncode == 28, run  # the stream was open until --max-time
        assert run.stdout.startswith("HTTP/1.1 200"), run
        assert "text/event-stream" in run.stdout
        page.console_log.expected.append(r"status of 401")  # counters, before the token
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_a_token_in_the_page_url_subscribes_through_the_cookie(page: Any, tmp_path: Path) -> None:
    """/?token= fills the field and leaves the address bar; the stream's URL carries no
    token (access logs): the token cookie does, and goes when the field is emptied."""
    from playwright.sync_api import expect

    args = ("--allow-publish", "--secret", SECRET, "--log-level", "info")
    with hub_process(tmp_path, *args) as hub:
        token = create_token(SECRET, channels=["vault"], actions=["subscribe"], ttl=300)
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{hub.url}/?channel=vault&token={token}#top")
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        assert page.evaluate("location.search + location.hash") == "?channel=vault#top"
        expect(page.locator("#token")).to_have_value(token)
        expect(page.locator("#token-missing")).to_be_hidden()
        streams = [url for url in requested if "/sse/" in url]
        assert streams == [f"{hub.url}/sse/?channel=vault"]
        cookies = page.context.cookies()
        assert [(c["name"], c["value"], c["path"], c["sameSite"]) for c in cookies] == [
            ("sse_token", token, "/sse", "Strict")
        ]
        publisher = create_token(SECRET, channels=["vault"], actions=["publish"], ttl=300)
        publish(hub, "vault", {"data": "through the cookie"}, token=publisher)
        expect(rows(page)).to_have_count(1, timeout=WAIT_MS)
        stream_lines = [line for line in hub.log().splitlines() if "/sse/?channel=vault" in line]
        assert stream_lines, hub.log()  # the access log is on, and has no token
        assert not [line for line in stream_lines if token in line]

        page.fill("#token", "")
        assert page.context.cookies() == []
        expect(page.locator("#token-missing")).to_have_text(TOKEN_HINT)
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_without_a_token_no_subscription_and_refused_counters_are_asked_once(
    page: Any, tmp_path: Path
) -> None:
    """--demo --secret: no subscription into a 401, a hint instead; counters refused
    (401, then 403 with a token without stats) are not polled again until the token
    changes."""
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--demo", "--secret", SECRET) as hub:
        streams: list[str] = []
        stats: list[str] = []
        page.on("request", lambda r: streams.append(r.url) if "/sse/?" in r.url else None)
        page.on("request", lambda r: stats.append(r.url) if "/_stats" in r.url else None)
        page.goto(hub.url + "/")
        expect(page.locator("#token-missing")).to_have_text(TOKEN_HINT, timeout=WAIT_MS)
        expect(page.locator("#channels")).to_have_value("clock jobs metrics")
        expect(state(page)).to_have_attribute("data-state", "closed")
        expect(page.locator("#stats-error")).to_contain_text("401: ", timeout=WAIT_MS)
        page.wait_for_timeout(3_500)  # more than two polling periods (1.5 s)
        assert streams == [] and len(stats) == 1

        only_subscribe = create_token(SECRET, channels=["*"], actions=["subscribe"], ttl=300)
        page.fill("#token", only_subscribe)
        expect(page.locator("#token-missing")).to_be_hidden()
        expect(page.locator("#stats-error")).to_contain_text("403: ", timeout=WAIT_MS)
        page.click("#subscribe")
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        expect(rows(page, "[data-channel='clock']").first).to_be_visible(timeout=WAIT_MS)
        page.wait_for_timeout(3_500)
        assert len(stats) == 2
        refused = [m for m in page.console_log.messages if re.search(r"status of 40[13]", m)]
        assert len(refused) == 2, refused

        actions = ["subscribe", "stats"]
        page.fill("#token", create_token(SECRET, channels=["*"], actions=actions, ttl=300))
        expect(page.locator("#stats-error")).to_be_hidden(timeout=WAIT_MS)
        expect(page.locator("#stats-body tr[data-channel='clock']")).to_have_count(1)
        page.console_log.expected.append(r"status of 40[13]")
        no_console_errors(page)


@pytest.mark.browser
@browser_needed
def test_a_long_replay_keeps_its_lagged_notice(page: Any, tmp_path: Path) -> None:
    """More than a channel's capacity (1024) missed: the replay (more than the page's 500
    rows) comes after an sse.lagged notice, which stays, its label on one line."""
    from playwright.sync_api import expect

    with hub_process(tmp_path, "--allow-publish") as hub:
        page.goto(hub.url + "/?channel=busy")
        expect(state(page)).to_have_attribute("data-state", "open", timeout=WAIT_MS)
        publish(hub, "busy", {"data": "before"})
        expect(rows(page)).to_have_count(1, timeout=WAIT_MS)
        page.click("#disconnect")
        expect(state(page)).to_have_attribute("data-state", "closed")
        with httpx.Client(base_url=hub.url, timeout=10) as client:
            for n in range(1100):
                response = client.post("/sse/busy", json={"data": f"missed {n}"})
                assert response.status_code == 202, response.text
        page.click("#subscribe")
        expect(rows(page).first.locator("td.data")).to_have_text("missed 1099", timeout=WAIT_MS)
        notice = rows(page, ".notice")
        expect(notice).to_have_count(1)
        expect(notice).to_have_attribute("data-event", "sse.lagged")
        expect(notice).to_have_attribute("data-channel", "busy")
        expect(rows(page, ":not(.notice)")).to_have_count(500)
        expect(page.locator("#event-count")).to_have_text(re.compile(r"^501 of 10\d\d$"))
        # The badge and "sse.lagged" side by side, the label not broken ("ss / e.lagged").
        label = page.evaluate(
            """() => {
                const cell = document.querySelector("#events tr.notice td.event");
                const text = [...cell.childNodes].find((node) => node.nodeType === 3);
                const range = document.createRange();
                range.selectNodeContents(text);
                const lines = range.getClientRects();
                const badge = cell.querySelector(".badge").getBoundingClientRect();
                return {
                    text: text.textContent,
                    lines: lines.length,
                    besides: badge.right <= lines[0].left + 1,
                    sameLine: badge.top < lines[0].bottom && lines[0].top < badge.bottom,
                };
            }"""
        )
        assert label == {"text": "sse.lagged", "lines": 1, "besides": True, "sameLine": True}
        no_console_errors(page)
