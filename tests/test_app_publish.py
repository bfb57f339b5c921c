"""What a publish over HTTP stores: the toolkit's notice types are not for publishers, and
JSON's null is sent as JSON (an event without data would be acknowledged, then never
dispatched by EventSource)."""

from __future__ import annotations

import pytest

from sse_toolkit import ChannelManager, SSEApp

from .asgi import Client, Stream, call, wait_subscribers
from .sse_parser import parse
from .test_app import publish_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("event", ["sse.reset", "sse.lagged", "sse.join", "sse."])
async def test_the_toolkits_event_types_are_refused_and_nothing_is_stored(event: str) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True)
    client = await call(app, publish_client("c", {"data": "forged", "event": event}))
    assert client.status == 400
    assert "reserved" in client.json()["error"]
    channel = await manager.get("c")
    assert channel is None or channel.stats().published == 0


@pytest.mark.parametrize("event", ["sse", "ssE.reset", "my.sse.reset", "update"])
async def test_other_event_types_are_published(event: str) -> None:
    app = SSEApp(ChannelManager(), allow_publish=True)
    client = await call(app, publish_client("c", {"data": "x", "event": event}))
    assert client.status == 202


async def test_null_data_reaches_the_subscriber_as_json_null() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    async with Stream(app, Client(path="/news")) as sub:
        await wait_subscribers(manager, "news", 1)
        pub = await call(app, publish_client("news", {"data": None}))
        assert pub.status == 202
        await sub.wait_for(lambda: b"data: null" in sub.body)
    (event,) = parse(sub.body).events
    assert (event.data, event.last_event_id) == ("null", pub.json()["id"])


async def test_a_quoted_token_cookie_is_read_without_its_quotes() -> None:
    """RFC 6265 lets a cookie value be quoted; the quotes are not part of the token."""
    from sse_toolkit import create_token

    secret = "a shared secret of at least thirty-two bytes, for HS256"
    token = create_token(secret, channels="c", actions="publish")
    app = SSEApp(ChannelManager(), allow_publish=True, secret=secret)
    headers = [("content-type", "application/json"), ("cookie", f'sse_token="{token}"')]
    client = await call(app, publish_client("c", {"data": "x"}, headers=headers))
    assert client.status == 202, client.body
