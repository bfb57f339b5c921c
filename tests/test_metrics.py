"""Issue 12, metrics: ``SSEApp(metrics=True)`` serves ``GET /_metrics``; every figure is
checked, parsed with prometheus_client's own text parser, against what the test did."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import jwt
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import sse_toolkit
from sse_toolkit import ChannelManager, EventStreamResponse, SSEApp, lifecycle
from sse_toolkit.metrics import CLOSE_REASONS, Metrics, route_of

from .asgi import WAIT, Client
from .servers import serve

pytestmark = pytest.mark.anyio

SECRET = "s3cret: a test secret of 64 bytes or more, long enough for HS512 too"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def call(app: Any, client: Client) -> Client:
    with anyio.fail_after(WAIT):
        await app(client.scope, client.receive, client.send)
    return client


async def scrape(app: SSEApp, headers: Any = ()) -> Samples:
    client = await call(app, Client(path="/_metrics", headers=headers))
    assert client.status == 200, client.body
    assert client.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(client.body.decode())


def publish_client(channel: str, payload: Any, headers: Any = None) -> Client:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Client(
        method="POST",
        path=f"/{channel}",
        body=body,
        headers=headers if headers is not None else [("content-type", "application/json")],
    )


def token(**claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


async def until(predicate: Any, what: str = "condition") -> None:
    with anyio.fail_after(WAIT):
        while not predicate():
            await anyio.sleep(0.005)


class Stream:
    """A subscriber running in a task group; disconnected on exit if still open."""

    def __init__(self, app: Any, client: Client) -> None:
        self.app, self.client = app, client
        self.done = False

    async def __aenter__(self) -> Stream:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        return self

    async def _run(self) -> None:
        await self.app(self.client.scope, self.client.receive, self.client.send)
        self.done = True

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect.set()
        await self._tg.__aexit__(None, None, None)


def closed(samples: Samples) -> dict[str, float]:
    return {
        reason: value(samples, "sse_streams_closed_total", reason=reason)
        for reason in CLOSE_REASONS
    }


# -- every close reason, publish, delivery, bytes ------------------------------------------


async def test_streams_events_bytes_and_close_reasons_are_counted_exactly() -> None:
    metrics = Metrics()
    manager = ChannelManager()
    lagging = ChannelManager(capacity=2, lag_policy="close")
    options: dict[str, Any] = {"heartbeat_interval": None, "metrics": metrics}
    app = SSEApp(manager, allow_publish=True, **options)
    lag_app = SSEApp(lagging, **options)
    stall_app = SSEApp(manager, send_timeout=0.2, **options)
    token_app = SSEApp(manager, secret=SECRET, **options)
    before = await scrape(app)
    assert value(before, "sse_streams_open") == 0
    assert set(closed(before).values()) == {0}
    assert value(before, "sse_backend_connected", backend="memory") == 1

    bodies: list[bytes] = []
    # client_left: two events, then the client goes.
    async with Stream(app, Client(path="/news")) as left:
        await until(lambda: manager.channel_stats("news") is not None)
        await until(lambda: manager.channel_stats("news").subscribers == 1)  # type: ignore[union-attr]
        for n in range(2):
            assert (await call(app, publish_client("news", {"data": n}))).status == 202
            await left.client.wait_for(lambda n=n: left.client.body.count(b"\n\n") == n + 1)
        during = await scrape(app)
        assert value(during, "sse_streams_open") == 1
        assert value(during, "sse_streams_opened_total") == 1
        assert value(during, "sse_events_published_total") == 2
        assert value(during, "sse_events_delivered_total") == 2
        assert value(during, "sse_bytes_sent_total") == len(left.client.body)
    bodies.append(left.client.body)

    # send_timeout: a client that stops reading is dropped.
    staller = Client(path="/news")
    staller.stall = True
    async with Stream(stall_app, staller) as stalled:
        await until(lambda: manager.channel_stats("news").subscribers == 1)  # type: ignore[union-attr]
        channel = await manager.get_or_create("news")
        await channel.broadcast({"data": "stuck"})
        await until(lambda: stalled.done)

    # token_expired: the stream ends when its token does.
    expiring = token(sse={"subscribe": ["news"]}, exp=int(time.time()) + 2)
    auth = [("authorization", f"Bearer {expiring}")]
    async with Stream(token_app, Client(path="/news", headers=auth)) as expired:
        await until(lambda: expired.done)
    assert expired.client.finished
    bodies.append(expired.client.body)

    # lag: under lag_policy="close", a listener that falls behind the ring is ended.
    async with Stream(lag_app, Client(path="/fast")) as lagged:
        await until(lambda: lagging.channel_stats("fast") is not None)
        await until(lambda: lagging.channel_stats("fast").subscribers == 1)  # type: ignore[union-attr]
        fast = await lagging.get_or_create("fast")
        for n in range(5):  # no checkpoint between them: the listener falls 3 behind
            fast.broadcast_nowait({"data": n})
        await until(lambda: lagged.done)
    bodies.append(lagged.client.body)

    # source_ended: the channel is removed (closed) under the stream.
    async with Stream(app, Client(path="/gone")) as ended:
        await until(lambda: manager.channel_stats("gone") is not None)
        await until(lambda: manager.channel_stats("gone").subscribers == 1)  # type: ignore[union-attr]
        await manager.remove("gone")
        await until(lambda: ended.done)
    bodies.append(ended.client.body)

    # shutdown: sse_toolkit.shutdown() ends it with a retry hint.
    try:
        async with Stream(app, Client(path="/news")) as shut:
            await until(lambda: manager.channel_stats("news").subscribers == 1)  # type: ignore[union-attr]
            report = await sse_toolkit.shutdown(grace=WAIT)
            assert report.ended == 1
            await until(lambda: shut.done)
        assert b"retry:" in shut.client.body
        bodies.append(shut.client.body)
    finally:
        lifecycle.reopen()

    after = await scrape(app)
    assert closed(after) == {
        "client_left": 1,
        "send_timeout": 1,
        "token_expired": 1,
        "shutdown": 1,
        "lag": 1,
        "source_ended": 1,
        "error": 0,
    }
    assert value(after, "sse_streams_opened_total") == 6
    assert value(after, "sse_streams_open") == 0
    # The stalled client took nothing; every other body is counted to the byte.
    assert value(after, "sse_bytes_sent_total") == sum(len(body) for body in bodies)
    # 2 + 1 on news (+ 5 on fast, another manager's: both are watched)
    assert value(after, "sse_events_published_total") == 3 + 5
    # Handed to streams: 2 to the first, 1 to the stalled one (taken, never written); the
    # lagging one was ended on its first read, having been handed nothing.
    assert lagged.client.body.count(b"data:") == 0
    assert value(after, "sse_events_delivered_total") == 2 + 1
    assert value(after, "sse_listener_lags_total") == 1
    assert value(after, "sse_events_skipped_total") == 3
    assert value(after, "sse_channels") == 2  # news, fast ("gone" was removed)


async def test_a_source_that_raises_and_a_broken_send_close_as_errors() -> None:
    metrics = Metrics()

    async def failing() -> AsyncIterator[str]:
        yield "one"
        raise RuntimeError("the source broke")

    client = Client(path="/")
    with pytest.raises(RuntimeError, match="the source broke"):
        await call(EventStreamResponse(failing(), observer=metrics.observer([])), client)

    class Broken(Client):
        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.body":
                raise RuntimeError("not a disconnect: a bug in the server")
            await super().send(message)

    await call(EventStreamResponse(["a"], observer=metrics.observer([])), Broken(path="/"))
    ok = Client(path="/")
    await call(EventStreamResponse(["a", "b"], observer=metrics.observer([])), ok)
    samples = parse(metrics.render()[0].decode())
    assert closed(samples)["error"] == 2
    assert closed(samples)["source_ended"] == 1
    assert value(samples, "sse_streams_opened_total") == 3
    assert value(samples, "sse_bytes_sent_total") == len(client.body) + len(ok.body)
    # Plain iterables count no deliveries (only channel listeners do).
    assert value(samples, "sse_events_delivered_total") == 0


# -- errors, replay, latency ---------------------------------------------------------------


async def test_errors_are_counted_by_route_and_status() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, metrics=True, heartbeat_interval=None)
    assert (await call(app, publish_client("c", b"{not json"))).status == 400
    assert (await call(app, publish_client("c", b"{not json"))).status == 400
    assert (await call(app, publish_client("c", {"data": 1}, headers=[]))).status == 415
    assert (await call(app, publish_client("c", {"data": 1}))).status == 202
    assert (await call(app, Client(path="/bad name"))).status == 400
    assert (await call(app, Client(path="/_nothing"))).status == 404
    assert (await call(app, Client(method="POST", path="/_metrics"))).status == 405
    samples = await scrape(app)
    errors = {
        (dict(labels)["route"], dict(labels)["status"]): count
        for (name, labels), count in samples.items()
        if name == "sse_http_errors_total"
    }
    assert errors == {
        ("publish", "400"): 2,
        ("publish", "415"): 1,
        ("subscribe", "400"): 1,
        ("other", "404"): 1,
        ("metrics", "405"): 1,
    }
    assert value(samples, "sse_events_published_total") == 1


def test_route_labels_are_bounded() -> None:
    assert route_of("POST", "/c") == "publish"
    assert route_of("GET", "/c") == "subscribe"
    assert route_of("HEAD", "/") == "subscribe"
    assert route_of("GET", "/_presence/c") == "presence"
    assert route_of("GET", "/_health") == "health"
    assert route_of("GET", "/_whatever/x") == "other"
    assert route_of("DELETE", "/c") == "other"


async def test_subscribe_refusals_with_a_secret_and_the_routes_auth() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, secret=SECRET, metrics=True, stats=True)
    assert (await call(app, Client(path="/c"))).status == 401
    other = [("authorization", f"Bearer {token(sse={'subscribe': ['d']})}")]
    assert (await call(app, Client(path="/c", headers=other))).status == 403
    # The route itself: 401 without a token, 403 without the stats grant, then 200.
    assert (await call(app, Client(path="/_metrics"))).status == 401
    no_stats = [("authorization", f"Bearer {token(sse={'subscribe': ['*']})}")]
    assert (await call(app, Client(path="/_metrics", headers=no_stats))).status == 403
    stats = [("authorization", f"Bearer {token(sse={'stats': True})}")]
    samples = await scrape(app, headers=stats)
    assert value(samples, "sse_http_errors_total", route="subscribe", status="401") == 1
    assert value(samples, "sse_http_errors_total", route="subscribe", status="403") == 1
    assert value(samples, "sse_http_errors_total", route="metrics", status="401") == 1
    assert value(samples, "sse_http_errors_total", route="metrics", status="403") == 1
    assert value(samples, "sse_streams_opened_total") == 0


async def test_off_by_default_and_404() -> None:
    app = SSEApp(ChannelManager())
    assert app.metrics is None
    assert (await call(app, Client(path="/_metrics"))).status == 404


async def test_replay_requests_and_resets() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, metrics=True, heartbeat_interval=None)
    first = (await call(app, publish_client("c", {"data": 1}))).json()["id"]
    await call(app, publish_client("c", {"data": 2}))
    async with Stream(app, Client(path="/c", headers=[("last-event-id", first)])) as replay:
        await replay.client.wait_for(lambda: b"data: 2" in replay.client.body)
    async with Stream(app, Client(path="/c", headers=[("last-event-id", "nope")])) as reset:
        await reset.client.wait_for(lambda: b"sse.reset" in reset.client.body)
    async with Stream(app, Client(path="/c")):
        pass
    samples = await scrape(app)
    assert value(samples, "sse_replay_requests_total") == 2
    assert value(samples, "sse_replay_resets_total") == 1
    assert value(samples, "sse_events_delivered_total") == 1  # the replayed event
    # A replay is not a delivery latency: nothing observed.
    assert value(samples, "sse_publish_to_write_seconds_count") == 0


@pytest.mark.parametrize("interval", [0, 60])
async def test_publish_to_write_latency_is_observed_per_live_batch(interval: float) -> None:
    manager = ChannelManager()
    metrics = Metrics(latency_interval=interval)
    app = SSEApp(manager, allow_publish=True, metrics=metrics, heartbeat_interval=None)
    async with Stream(app, Client(path="/c")) as sub:
        await until(lambda: manager.channel_stats("c") is not None)
        await until(lambda: manager.channel_stats("c").subscribers == 1)  # type: ignore[union-attr]
        started = time.monotonic()
        for n in range(5):
            assert (await call(app, publish_client("c", {"data": n}))).status == 202
            await sub.client.wait_for(lambda n=n: sub.client.body.count(b"\n\n") == n + 1)
        elapsed = time.monotonic() - started
    samples = await scrape(app)
    count = value(samples, "sse_publish_to_write_seconds_count")
    # The channel starts recording publish times at the stream's first batch: every
    # batch after it is observed (each publish here is one batch); sampled at most every
    # 60 s, only the first of them.
    assert count == (4 if interval == 0 else 1)
    assert 0 < value(samples, "sse_publish_to_write_seconds_sum") <= elapsed
    buckets = sorted(
        (float(dict(labels)["le"]), n)
        for (name, labels), n in samples.items()
        if name == "sse_publish_to_write_seconds_bucket"
    )
    assert buckets[-1] == (float("inf"), count)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative


# -- exposition: a registry of the app's own, cardinality, content types --------------------


async def test_the_collector_on_an_apps_own_registry() -> None:
    manager = ChannelManager()
    metrics = Metrics(namespace="myapp_sse")
    app = SSEApp(manager, allow_publish=True, metrics=metrics, heartbeat_interval=None)
    registry = CollectorRegistry()
    mine = Counter("myapp_logins", "Logins", registry=registry)
    mine.inc(3)
    registry.register(metrics.collector)
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(Metrics(namespace="myapp_sse").collector)
    async with Stream(app, Client(path="/c")):
        await until(lambda: manager.channel_stats("c") is not None)
        await call(app, publish_client("c", {"data": 1}))
        samples = parse(generate_latest(registry).decode())
        assert value(samples, "myapp_logins_total") == 3
        assert value(samples, "myapp_sse_streams_open") == 1
        assert value(samples, "myapp_sse_events_published_total") == 1
    served = await scrape_as(app, "myapp_sse_streams_opened_total")
    assert served == 1


async def scrape_as(app: SSEApp, name: str) -> float:
    client = await call(app, Client(path="/_metrics"))
    return value(parse(client.body.decode()), name)


@pytest.mark.parametrize("per_channel", [False, True])
async def test_a_channel_label_only_when_asked(per_channel: bool) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, metrics=Metrics(per_channel=per_channel), heartbeat_interval=None)
    async with Stream(app, Client(path="/a")), Stream(app, Client(path="/a")):
        async with Stream(app, Client(path="/", query="channel=a&channel=b")):
            await until(lambda: app.open_streams == 3)
            samples = await scrape(app)
    labelled = {labels for (_, labels) in samples if any(k == "channel" for k, _ in labels)}
    if per_channel:
        assert value(samples, "sse_streams_open", channel="a") == 3
        assert value(samples, "sse_streams_open", channel="b") == 1
        assert labelled == {frozenset({("channel", "a")}), frozenset({("channel", "b")})}
    else:
        assert value(samples, "sse_streams_open") == 3
        assert labelled == set()


async def test_openmetrics_when_the_scraper_asks() -> None:
    app = SSEApp(ChannelManager(), metrics=True)
    accept = [("accept", "application/openmetrics-text; version=1.0.0")]
    client = await call(app, Client(path="/_metrics", headers=accept))
    assert client.headers["content-type"].startswith("application/openmetrics-text")
    assert client.body.endswith(b"# EOF\n")


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"sse-toolkit\[metrics\]"):
        Metrics()
    with pytest.raises(ImportError, match=r"sse-toolkit\[metrics\]"):
        SSEApp(ChannelManager(), metrics=True)


def test_options_are_checked() -> None:
    with pytest.raises(TypeError, match="metrics"):
        SSEApp(ChannelManager(), metrics="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_channel"):
        Metrics(per_channel=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        Metrics(namespace="not a name")
    with pytest.raises(ValueError, match="buckets"):
        Metrics(latency_buckets=[])
    with pytest.raises(ValueError, match="interval"):
        Metrics(latency_interval=-1)


def test_backend_state_of_redis_is_read_without_io() -> None:
    pytest.importorskip("redis")
    from sse_toolkit.backends.redis import RedisBackend

    backend = RedisBackend("redis://127.0.0.1:9/0")  # never connected: nothing is asked
    backend.reconnects = 2
    metrics = Metrics()
    metrics.watch(ChannelManager(backend=backend))
    samples = parse(metrics.render()[0].decode())
    assert value(samples, "sse_backend_connected", backend="redis") == 0
    assert value(samples, "sse_backend_reconnects_total", backend="redis") == 2
    assert ("sse_backend_read_age_seconds", frozenset({("backend", "redis")})) not in samples
    backend._read_at = time.monotonic() - 3
    samples = parse(metrics.render()[0].decode())
    assert 3 <= value(samples, "sse_backend_read_age_seconds", backend="redis") < 3 + WAIT


# -- over real servers -----------------------------------------------------------------------


@pytest.fixture
def hub_app() -> tuple[SSEApp, ChannelManager]:
    manager = ChannelManager()
    return SSEApp(manager, allow_publish=True, metrics=True, heartbeat_interval=None), manager


def http_scrape(http: httpx.Client, url: str) -> Samples:
    response = http.get(f"{url}/_metrics")
    assert response.status_code == 200
    return parse(response.text)


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn-trio"])
def test_scraped_over_a_real_server(hub_app: tuple[SSEApp, ChannelManager], server: str) -> None:
    app, _ = hub_app
    with serve(app, server) as url, httpx.Client(timeout=WAIT) as http:
        received = b""
        with http.stream("GET", f"{url}/news") as stream:
            assert stream.status_code == 200
            deadline = time.monotonic() + WAIT
            while http_scrape(http, url)[("sse_streams_open", frozenset())] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for n in range(3):
                posted = http.post(f"{url}/news", json={"data": n})
                assert posted.status_code == 202
            chunks = stream.iter_bytes()  # (not broken out of: that would close the stream)
            while received.count(b"\n\n") < 3:
                received += next(chunks)
            samples = http_scrape(http, url)
            assert value(samples, "sse_streams_open") == 1
            assert value(samples, "sse_events_published_total") == 3
            assert value(samples, "sse_events_delivered_total") == 3
            assert value(samples, "sse_bytes_sent_total") == len(received)
        deadline = time.monotonic() + WAIT
        while value(samples := http_scrape(http, url), "sse_streams_open") != 0:
            assert time.monotonic() < deadline, "the stream did not close"
            time.sleep(0.01)
        assert closed(samples)["client_left"] == 1
        assert value(samples, "sse_streams_opened_total") == 1


# -- the hub ---------------------------------------------------------------------------------


def test_the_hub_serves_metrics_with_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_toolkit import cli

    served: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run", lambda app, **kw: served.update(app=app))
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)
    assert cli.main([]) == 0
    assert served["app"].sse.metrics is None
    assert cli.main(["--metrics"]) == 0
    assert isinstance(served["app"].sse.metrics, Metrics)
    assert cli.build_parser().parse_args([]).metrics is False


async def test_the_hub_route_is_under_sse_and_guarded() -> None:
    from sse_toolkit.hub import Hub, HubSettings

    hub = Hub(SSEApp(ChannelManager(), metrics=True, secret=SECRET), HubSettings())
    assert (await call(hub, Client(path="/sse/_metrics", root_path=""))).status in (401,)
    stats = [("authorization", f"Bearer {token(sse={'stats': True})}")]
    client = await call(hub, Client(path="/sse/_metrics", headers=stats))
    assert client.status == 200
    assert value(parse(client.body.decode()), "sse_streams_open") == 0


async def test_a_merged_stream_counts_its_deliveries_open_and_closed() -> None:
    """``/?channel=a&channel=b``: what each channel handed over, during and after."""
    app = SSEApp(ChannelManager(), allow_publish=True, heartbeat_interval=None, metrics=True)
    async with Stream(app, Client(path="/", query="channel=a&channel=b")) as stream:
        await until(lambda: app.open_streams == 1, "the merged stream")
        for channel, data in (("a", "1"), ("b", "2"), ("a", "3")):
            assert (await call(app, publish_client(channel, {"data": data}))).status == 202
        await until(lambda: stream.client.body.count(b"data: ") == 3, "three events")
        during = await scrape(app)
    after = await scrape(app)
    assert value(during, "sse_events_delivered_total") == 3
    assert value(after, "sse_events_delivered_total") == 3
    assert value(after, "sse_streams_closed_total", reason="client_left") == 1
