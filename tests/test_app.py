"""SSEApp driven in-process: routing, publishing, errors, auth, CORS, limits, lifespan."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import anyio
import jwt
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_toolkit import ChannelManager, SSEApp, create_token
from sse_toolkit.backends import Backend, BackendUnavailable
from sse_toolkit.merge import decode_positions, encode_positions
from sse_toolkit.tokens import TokenVerifier

from .asgi import WAIT, Client, Stream, call, wait_subscribers
from .sse_parser import parse

pytestmark = pytest.mark.anyio

# (PyJWT warns of HMAC keys shorter than the hash: 32 bytes for HS256, 64 for HS512)
SECRET = "s3cret: a test secret of 64 bytes or more, long enough for HS512 too"
OTHER_SECRET = "another secret of 32 bytes or more, not the app's"


def publish_client(channel: str, payload: Any, **kwargs: Any) -> Client:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = kwargs.pop("headers", [("content-type", "application/json")])
    return Client(method="POST", path=f"/{channel}", body=body, headers=headers, **kwargs)


# -- subscribe and publish -----------------------------------------------------------------


async def test_subscribe_then_publish_reaches_the_stream() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    async with Stream(app, Client(path="/news")) as sub:
        await wait_subscribers(manager, "news", 1)
        pub = await call(app, publish_client("news", {"data": {"x": 1}, "event": "update"}))
        assert pub.status == 202
        stored_id = pub.json()["id"]
        assert pub.json()["channel"] == "news"
        await sub.wait_for(lambda: b"update" in sub.body)
    assert sub.headers["content-type"] == "text/event-stream; charset=utf-8"
    (event,) = parse(sub.body).events
    assert (event.event, event.data, event.last_event_id) == ("update", '{"x":1}', stored_id)


async def test_mounted_under_a_prefix_routes_below_root_path() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True)
    pub = await call(app, publish_client("room", {"data": "hi"}, root_path="/api/sse"))
    assert pub.status == 202
    assert await manager.get("room") is not None


async def test_replay_with_last_event_id_header_and_query() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    ids = [(await call(app, publish_client("r", {"data": i}))).json()["id"] for i in range(5)]
    for client in (
        Client(path="/r", headers=[("last-event-id", ids[1])]),
        Client(path="/r", query=f"last_event_id={ids[1]}"),
    ):
        async with Stream(app, client) as sub:
            await sub.wait_for(lambda sub=sub: len(parse(sub.body).events) == 3)
        assert [e.data for e in parse(client.body).events] == ["2", "3", "4"]


async def test_head_answers_headers_only() -> None:
    manager = ChannelManager()
    client = await call(SSEApp(manager), Client(method="HEAD", path="/c"))
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.body == b""
    assert manager.stats()["subscribers"] == 0  # the listener left


async def test_multi_channel_stream_with_composite_ids_replays_each_channel() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    await call(app, publish_client("a", {"data": "a0"}))  # before the stream: not sent
    client = Client(path="/", query="channel=a&channel=b")
    async with Stream(app, client) as sub:
        await wait_subscribers(manager, "b", 1)
        await call(app, publish_client("a", {"data": "a1"}))
        await call(app, publish_client("b", {"data": "b1"}))
        await sub.wait_for(lambda: len(parse(sub.body).events) == 2)
    events = parse(client.body).events
    assert [e.data for e in events] == ["a1", "b1"]
    last = events[-1].last_event_id
    positions = decode_positions(last)
    assert positions is not None and set(positions) == {"a", "b"}

    # missed while away: a2 and b2, then reconnect with the last composite id
    await call(app, publish_client("b", {"data": "b2"}))
    await call(app, publish_client("a", {"data": "a2"}))
    again = Client(path="/", query="channel=a&channel=b", headers=[("last-event-id", last)])
    async with Stream(app, again) as sub:
        await sub.wait_for(lambda: len(parse(sub.body).events) == 2)
    assert sorted(e.data for e in parse(again.body).events) == ["a2", "b2"]


async def test_multi_channel_stream_replays_a_channel_that_was_empty() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    await call(app, publish_client("a", {"data": "a0"}))
    client = Client(path="/", query="channel=a&channel=b")
    async with Stream(app, client) as sub:
        await wait_subscribers(manager, "b", 1)
        await call(app, publish_client("a", {"data": "a1"}))
        await sub.wait_for(lambda: len(parse(sub.body).events) == 1)
    last = parse(client.body).events[-1].last_event_id
    b = await manager.get("b")
    assert b is not None
    # b stands before its first event: its own position 0, not "" (which meant "replay all").
    assert decode_positions(last) == {"a": decode_positions(last)["a"], "b": b.position_at(0)}  # type: ignore[index]
    await call(app, publish_client("b", {"data": "first ever on b"}))
    again = Client(path="/", query="channel=a&channel=b", headers=[("last-event-id", last)])
    async with Stream(app, again) as sub:
        await sub.wait_for(lambda: len(parse(sub.body).events) == 1)
    assert parse(again.body).events[0].data == "first ever on b"


def test_composite_ids_round_trip_any_id() -> None:
    positions = {"a": "1-2", "b": "", "c": "x&y=z%"}
    assert decode_positions(encode_positions(positions)) == positions
    assert decode_positions("1700000000000-5") is None


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"event": "x"}, 400, "'data' is required"),
        ({"data": "x", "colour": "red"}, 400, "colour"),
        ({"data": "x", "event": "a\nevent: b"}, 400, "event"),
        ({"data": "x", "id": "1\r\ndata: injected"}, 400, "id"),
        ({"data": "x", "id": "a\u0000b"}, 400, "NUL"),
        ({"data": "x", "retry": -1}, 400, "retry"),
        ({"data": "x", "retry": "soon"}, 400, "retry"),
        (b'{"data": "\\ud800"}', 400, "surrogate"),
        (b"\xff\xfe", 400, "malformed JSON"),
    ],
)
async def test_bad_publishes_are_400_and_store_nothing(
    payload: Any, status: int, needle: str
) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True)
    client = await call(app, publish_client("c", payload))
    assert client.status == status
    assert needle in client.json()["error"]
    channel = await manager.get("c")
    assert channel is None or channel.stats().published == 0


async def test_body_over_the_limit_is_413_declared_or_streamed() -> None:
    app = SSEApp(ChannelManager(), allow_publish=True, max_body_size=100)
    big = json.dumps({"data": "x" * 200}).encode()
    declared = publish_client(
        "c", big, headers=[("content-type", "application/json"), ("content-length", "213")]
    )
    assert (await call(app, declared)).status == 413
    streamed = publish_client("c", big, chunk_size=10)  # no content-length
    assert (await call(app, streamed)).status == 413


async def test_wrong_content_type_is_415() -> None:
    app = SSEApp(ChannelManager(), allow_publish=True)
    client = publish_client("c", {"data": 1}, headers=[("content-type", "text/plain")])
    assert (await call(app, client)).status == 415


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("GET", "/a/b", "", 404),
        ("GET", "/_private", "", 404),
        ("GET", "/_stats", "", 404),  # the stats route is off by default
        ("GET", "/", "", 400),
        ("GET", "/bad name", "", 400),
        ("GET", "/bad%2Fname", "", 400),
        ("GET", "/" + "x" * 129, "", 414),
        ("GET", "/", "channel=ok&channel=b%0Ad", 400),
        ("GET", "/", "&".join(f"channel=c{i}" for i in range(17)), 400),
        ("POST", "/c", "", 405),  # publishing is off by default
        ("PUT", "/c", "", 405),
        ("DELETE", "/", "", 405),
    ],
)
async def test_route_errors(method: str, path: str, query: str, status: int) -> None:
    manager = ChannelManager()
    client = await call(SSEApp(manager), Client(method=method, path=path, query=query))
    assert client.status == status, client.body
    assert "error" in client.json()
    if status == 405:
        assert "GET" in client.headers["allow"] and "POST" not in client.headers["allow"]
    assert await manager.list_channels() == []


async def test_too_many_channels_is_503() -> None:
    manager = ChannelManager(max_channels=1)
    app = SSEApp(manager, allow_publish=True)
    assert (await call(app, publish_client("a", {"data": 1}))).status == 202
    client = await call(app, publish_client("b", {"data": 1}))
    assert client.status == 503
    assert "retry-after" in client.headers


class DownBackend(Backend):
    async def publish(self, channel: Any, event: Any) -> Any:
        raise BackendUnavailable("redis is down")


async def test_backend_down_is_503() -> None:
    app = SSEApp(ChannelManager(backend=DownBackend()), allow_publish=True)
    client = await call(app, publish_client("c", {"data": 1}))
    assert client.status == 503
    assert "redis is down" in client.json()["error"]


# -- limits --------------------------------------------------------------------------------


async def test_max_subscribers_per_channel_is_429() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_channel=1)
    async with Stream(app, Client(path="/c")):
        await wait_subscribers(manager, "c", 1)
        second = await call(app, Client(path="/c"))
        assert second.status == 429
    assert manager.stats()["subscribers"] == 0  # every listener left


async def test_max_subscribers_per_client_is_429_and_frees_on_leave() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_client=1, heartbeat_interval=None)
    async with Stream(app, Client(path="/a")):
        await wait_subscribers(manager, "a", 1)
        assert (await call(app, Client(path="/b"))).status == 429
    async with Stream(app, Client(path="/b")) as again:
        await wait_subscribers(manager, "b", 1)
        assert again.status == 200


# -- authorisation -------------------------------------------------------------------------


async def test_authorize_hook_sync_and_async() -> None:
    calls: list[tuple[str, str]] = []

    async def authorize(scope: Any, channel: str, action: str) -> bool:
        calls.append((channel, action))
        return channel != "secret"

    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, authorize=authorize)
    assert (await call(app, publish_client("secret", {"data": 1}))).status == 403
    assert (await call(app, publish_client("open", {"data": 1}))).status == 202
    assert (await call(app, Client(method="HEAD", path="/secret"))).status == 403
    sync_app = SSEApp(manager, authorize=lambda scope, channel, action: False)
    assert (await call(sync_app, Client(method="HEAD", path="/open"))).status == 403
    assert calls == [("secret", "publish"), ("open", "publish"), ("secret", "subscribe")]


@pytest.mark.parametrize("where", ["header", "cookie", "query"])
async def test_tokens_from_header_cookie_or_query(where: str) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, secret=SECRET)
    token = create_token(SECRET, channels="c", actions="publish", ttl=60)
    headers = [("content-type", "application/json")]
    query = ""
    if where == "header":
        headers.append(("authorization", f"Bearer {token}"))
    elif where == "cookie":
        headers.append(("cookie", f"other=1; sse_token={token}"))
    else:
        query = f"token={token}"
    client = await call(app, publish_client("c", {"data": 1}, headers=headers, query=query))
    assert client.status == 202


async def test_token_errors() -> None:
    app = SSEApp(ChannelManager(), allow_publish=True, secret=SECRET)

    async def status(token: str | None, channel: str = "c") -> int:
        headers = [("content-type", "application/json")]
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        return (await call(app, publish_client(channel, {"data": 1}, headers=headers))).status

    assert await status(None) == 401
    assert await status("garbage") == 401
    assert await status(create_token(OTHER_SECRET, channels="c", actions="publish")) == 401
    expired = create_token(SECRET, channels="c", actions="publish", ttl=1, now=0)
    assert await status(expired) == 401
    subscribe_only = create_token(SECRET, channels="c", actions="subscribe")
    assert await status(subscribe_only) == 403
    assert await status(create_token(SECRET, channels="d", actions="publish")) == 403
    assert await status(create_token(SECRET, channels="*", actions="publish")) == 202


def pyjwt_token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token minted by PyJWT directly, as any backend would (None drops a claim)."""
    payload = {"exp": int(time.time()) + 300, **claims}
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm)


async def answer(app: SSEApp, client: Client) -> tuple[int, str | None, Any]:
    """Status, ``WWW-Authenticate`` and JSON body of a request that is not a stream."""
    await call(app, client)
    return client.status, client.headers.get("www-authenticate"), client.json()


def challenge(description: str) -> str:
    return f'Bearer error="invalid_token", error_description="{description}"'


AUDIENCE_APP = {"allow_publish": True, "stats": True, "heartbeat_interval": None}


@pytest.mark.parametrize(
    ("token", "description"),
    [
        (pyjwt_token(aud="hub", exp=int(time.time()) - 60), "the token has expired"),
        (create_token(SECRET, channels="c", audience="hub", ttl=1, now=0), "the token has expired"),
        (pyjwt_token(OTHER_SECRET, aud="hub"), "bad token signature"),
        ("garbage", "malformed token"),
        ("a.b.c", "malformed token"),
        (pyjwt_token(aud="elsewhere"), "the token is for another audience"),
        (pyjwt_token(), "the token has no aud claim"),
        (pyjwt_token(aud="hub", nbf=int(time.time()) + 3600), "the token is not valid yet"),
        (pyjwt_token(aud="hub", exp=None), "the token has no exp claim"),
        (pyjwt_token(aud="hub", sse=["c"]), "the token's sse claim is not an object"),
        ("eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.", "the token's algorithm is not accepted"),
    ],
)
async def test_an_invalid_token_is_401_saying_why(token: str, description: str) -> None:
    app = SSEApp(
        ChannelManager(), secret=TokenVerifier(secret=SECRET, audience="hub"), **AUDIENCE_APP
    )
    auth = ("authorization", f"Bearer {token}")
    for client in (
        Client(path="/c", headers=[auth]),
        Client(method="HEAD", path="/c", query=f"token={token}"),
        publish_client("c", {"data": 1}, headers=[auth, ("content-type", "application/json")]),
        Client(path="/_stats", headers=[("cookie", f"sse_token={token}")]),
    ):
        await call(app, client)
        assert client.status == 401, client.scope["path"]
        assert client.headers["www-authenticate"] == challenge(description)
        if client.scope["method"] != "HEAD":
            assert client.json() == {"error": description}


async def test_no_token_is_401_with_a_bare_challenge() -> None:
    app = SSEApp(ChannelManager(), secret=SECRET, **AUDIENCE_APP)
    for client in (Client(path="/c"), publish_client("c", {"data": 1}), Client(path="/_stats")):
        status, www_authenticate, body = await answer(app, client)
        assert (status, www_authenticate) == (401, "Bearer")
        assert body == {"error": "a token is required"}


@pytest.mark.parametrize(
    ("grants", "method", "path", "expected"),
    [
        ({"subscribe": ["c"]}, "GET", "/c", 200),
        ({"subscribe": ["d"]}, "GET", "/c", 403),
        ({"publish": ["c"]}, "GET", "/c", 403),  # another action
        ({"subscribe": ["news.*"]}, "GET", "/news.sport", 200),
        ({"subscribe": ["news.*"]}, "GET", "/news", 403),
        ({"subscribe": ["news.*"]}, "GET", "/newsroom", 403),
        ({"subscribe": ["*"]}, "GET", "/anything", 200),
        ({"publish": ["c"]}, "POST", "/c", 202),
        ({"publish": ["d"]}, "POST", "/c", 403),
        ({"subscribe": ["*"]}, "POST", "/c", 403),
        ({"subscribe": ["*"], "publish": ["*"]}, "GET", "/_stats", 403),  # stats is its own
        ({"stats": False}, "GET", "/_stats", 403),
        ({"stats": True}, "GET", "/_stats", 200),
        ({"stats": True}, "GET", "/c", 403),
        (None, "GET", "/c", 403),  # no sse claim: valid, grants nothing
        (None, "GET", "/_stats", 403),
    ],
)
async def test_grants_decide_403(
    grants: dict[str, Any] | None, method: str, path: str, expected: int
) -> None:
    app = SSEApp(ChannelManager(), secret=SECRET, **AUDIENCE_APP)
    token = pyjwt_token(sse=grants, sub="alice")
    headers = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
    if method == "GET" and path != "/_stats":
        client = Client(method="HEAD", path=path, headers=headers)
    elif method == "POST":
        client = publish_client(path[1:], {"data": 1}, headers=headers)
    else:
        client = Client(path=path, headers=headers)
    await call(app, client)
    assert client.status == expected
    assert "www-authenticate" not in client.headers
    if expected == 403 and client.scope["method"] != "HEAD":
        assert "does not allow" in client.json()["error"]


@pytest.fixture(scope="module")
def ec_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def pem_of(key: Any) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


async def test_pyjwt_minted_tokens_are_served(ec_key: Any) -> None:
    private, public = pem_of(ec_key)
    app = SSEApp(
        ChannelManager(),
        secret=TokenVerifier(secret=SECRET, public_key=public),
        **AUDIENCE_APP,
    )
    grants = {"subscribe": ["c"], "publish": ["c"], "stats": True}
    for token in (
        pyjwt_token(sse=grants),
        pyjwt_token(SECRET, "HS512", sse=grants),
        pyjwt_token(private, "ES256", sse=grants, sub="bob"),
        create_token(
            private, channels="c", actions=["subscribe", "publish", "stats"], algorithm="ES256"
        ),
    ):
        auth = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
        assert (await call(app, Client(method="HEAD", path="/c", headers=auth))).status == 200
        assert (await call(app, publish_client("c", {"data": 1}, headers=auth))).status == 202
        assert (await call(app, Client(path="/_stats", headers=auth))).status == 200
    # HS256 signed with the public key's PEM as the secret (algorithm confusion)
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    body = json.dumps({"exp": int(time.time()) + 60, "sse": grants}).encode()
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(body)
    forged = signing_input + b"." + b64(hmac.new(public, signing_input, hashlib.sha256).digest())
    status, www_authenticate, _ = await answer(
        app, Client(path="/_stats", headers=[("authorization", f"Bearer {forged.decode()}")])
    )
    assert (status, www_authenticate) == (401, challenge("bad token signature"))
    public_only = SSEApp(ChannelManager(), secret=TokenVerifier(public_key=public), **AUDIENCE_APP)
    status, www_authenticate, _ = await answer(
        public_only,
        Client(path="/_stats", headers=[("authorization", f"Bearer {forged.decode()}")]),
    )
    assert (status, www_authenticate) == (401, challenge("the token's algorithm is not accepted"))


async def test_stream_ends_cleanly_when_its_token_expires() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, secret=SECRET, heartbeat_interval=None)
    token = create_token(SECRET, channels="c", ttl=1.5)
    client = Client(path="/c", query=f"token={token}")
    await call(app, client)  # returns by itself when the token runs out
    assert client.status == 200
    assert client.finished


async def test_the_expiry_of_a_pyjwt_token_ends_its_open_stream(ec_key: Any) -> None:
    """``exp`` about a second ahead (a float: PyJWT accepts it): the open stream, which got
    an event meanwhile, ends by itself, cleanly, within a bounded wait."""
    private, public = pem_of(ec_key)
    manager = ChannelManager()
    app = SSEApp(
        manager,
        allow_publish=True,
        secret=TokenVerifier(secret=SECRET, public_key=public),
        token_required_for=["subscribe"],
        heartbeat_interval=None,
    )
    for key, algorithm in ((SECRET, "HS256"), (private, "ES256")):
        started = time.time()
        token = pyjwt_token(key, algorithm, exp=started + 1.0, sse={"subscribe": ["c"]})
        client = Client(path="/c", headers=[("authorization", f"Bearer {token}")])
        with anyio.fail_after(3.5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(app, client.scope, client.receive, client.send)
                await wait_subscribers(manager, "c", 1)
                assert (await call(app, publish_client("c", {"data": "hi"}))).status == 202
                await client.wait_for(lambda client=client: b"hi" in client.body)
                # the stream task ends by itself: the task group exits without a disconnect
        elapsed = time.time() - started
        assert 0.5 <= elapsed <= 3.0, elapsed
        assert client.status == 200 and client.finished
        assert [e.data for e in parse(client.body).events] == ["hi"]
        with anyio.fail_after(WAIT):
            while (channel := await manager.get("c")) is not None and channel.subscriber_count:
                await anyio.sleep(0.01)
    assert app.open_streams == 0


async def test_a_token_far_in_the_future_streams_until_the_client_leaves() -> None:
    """exp 1e308 (a valid NumericDate): no overflow in the stream's deadline."""
    manager = ChannelManager()
    app = SSEApp(manager, secret=SECRET, heartbeat_interval=None)
    token = pyjwt_token(exp=1e308, sse={"subscribe": ["c"]})
    async with Stream(app, Client(path="/c", query=f"token={token}")) as client:
        await client.wait_for(lambda: bool(client.messages))
        await wait_subscribers(manager, "c", 1)
        assert client.status == 200


# -- CORS ----------------------------------------------------------------------------------


async def test_cors_simple_request_and_preflight() -> None:
    manager = ChannelManager()
    app = SSEApp(
        manager,
        allow_publish=True,
        cors_origins=["https://app.example"],
        cors_allow_credentials=True,
        heartbeat_interval=None,
    )
    origin = [("origin", "https://app.example")]
    preflight = Client(
        method="OPTIONS",
        path="/c",
        headers=[
            *origin,
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "Last-Event-ID"),
        ],
    )
    await call(app, preflight)
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "last-event-id" in preflight.headers["access-control-allow-headers"]
    assert "POST" in preflight.headers["access-control-allow-methods"]

    evil = Client(method="OPTIONS", path="/c", headers=[("origin", "https://evil.example")])
    assert (await call(app, evil)).status == 403

    async with Stream(app, Client(path="/c", headers=origin)) as sub:
        await wait_subscribers(manager, "c", 1)
    assert sub.headers["access-control-allow-origin"] == "https://app.example"
    assert sub.headers["vary"] == "origin"

    plain = await call(app, Client(method="HEAD", path="/c", headers=[("origin", "https://x.y")]))
    assert "access-control-allow-origin" not in plain.headers


def test_cors_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        SSEApp(ChannelManager(), cors_origins="*", cors_allow_credentials=True)


# -- stats ---------------------------------------------------------------------------------


async def test_stats_route() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, stats=True)
    await call(app, publish_client("c", {"data": 1}))
    client = await call(app, Client(path="/_stats"))
    assert client.status == 200
    stats = client.json()
    assert stats["published"] == 1
    assert stats["per_channel"]["c"]["published"] == 1


# -- lifespan ------------------------------------------------------------------------------


async def test_served_alone_lifespan_shutdown_ends_streams_cleanly() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, heartbeat_interval=None)
    client = Client(path="/c")
    async with anyio.create_task_group() as tg:
        async with LifespanManager(app):  # type: ignore[arg-type]
            tg.start_soon(app, client.scope, client.receive, client.send)
            await wait_subscribers(manager, "c", 1)
        # shutdown happened: the stream must have ended by itself, cleanly
        with anyio.fail_after(WAIT):
            await client.wait_for(lambda: client.finished)
    assert await manager.list_channels() == []


async def test_lifespan_context_for_hosts() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, heartbeat_interval=None)
    client = Client(path="/c")
    async with anyio.create_task_group() as tg:
        async with app.lifespan(None):
            tg.start_soon(app, client.scope, client.receive, client.send)
            await wait_subscribers(manager, "c", 1)
        await client.wait_for(lambda: client.finished)


async def test_websocket_scope_is_closed() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    await SSEApp(ChannelManager())({"type": "websocket", "path": "/c"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1003}]


async def test_token_required_for_publish_only() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, secret=SECRET, token_required_for=["publish"])
    assert (await call(app, Client(method="HEAD", path="/c"))).status == 200
    assert (await call(app, publish_client("c", {"data": 1}))).status == 401


class DownOnAttach(Backend):
    async def attach(self, channel: Any) -> None:
        raise BackendUnavailable("redis is down")

    async def publish(self, channel: Any, event: Any) -> Any:
        raise AssertionError("never reached")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_backend_down_when_a_channel_is_first_used_is_503(method: str) -> None:
    manager = ChannelManager(backend=DownOnAttach())
    app = SSEApp(manager, allow_publish=True)
    if method == "GET":
        client = await call(app, Client(path="/c"))
    else:
        client = await call(app, publish_client("c", {"data": 1}))
    assert client.status == 503
    assert client.headers["retry-after"] == "1"
    assert await manager.list_channels() == []  # not kept half-attached


@pytest.mark.parametrize("host", ["starlette", "lilya"])
async def test_host_lifespan_through_asgi_lifespan_ends_streams(host: str) -> None:
    """Hosts do not forward lifespan to mounted apps: `sse.lifespan` plugs into theirs."""
    manager = ChannelManager()
    sse = SSEApp(manager, heartbeat_interval=None)
    if host == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount

        app: Any = Starlette(routes=[Mount("/sse", app=sse)], lifespan=sse.lifespan)
    else:
        from lilya.apps import Lilya
        from lilya.routing import Include

        app = Lilya(routes=[Include("/sse", app=sse)], lifespan=sse.lifespan)
    client = Client(path="/sse/c")
    async with anyio.create_task_group() as tg:
        async with LifespanManager(app):
            tg.start_soon(app, client.scope, client.receive, client.send)
            await wait_subscribers(manager, "c", 1)
        await client.wait_for(lambda: client.finished)
    assert client.status == 200
    assert await manager.list_channels() == []


# -- issue 8: the HTTP surface under adversaries -------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_caller_set_id_on_a_redis_backed_app_is_a_json_400_naming_the_field() -> None:
    import uuid

    from sse_toolkit.backends.redis import RedisBackend

    from .conftest import redis_url

    prefix = f"test-{uuid.uuid4().hex}:"
    manager = ChannelManager(backend=RedisBackend(redis_url(), prefix=prefix))
    app = SSEApp(manager, allow_publish=True)
    try:
        client = await call(app, publish_client("c", {"data": 1, "id": "mine"}))
        assert client.status == 400
        assert client.headers["content-type"] == "application/json"
        assert client.json()["error"].startswith("id")
        assert (await call(app, publish_client("c", {"data": 1}))).status == 202
    finally:
        with anyio.CancelScope(shield=True):
            await manager.close()
        import redis

        shared = redis.Redis.from_url(redis_url(), socket_timeout=WAIT)
        keys = list(shared.scan_iter(match=f"{prefix}*"))
        if keys:
            shared.delete(*keys)
        shared.close()


class RefusingBackend(Backend):
    """A backend that refuses an event because of what it holds (as Redis refuses ids)."""

    async def publish(self, channel: Any, event: Any) -> Any:
        raise ValueError("event: this backend refuses it")


async def test_an_event_a_backend_refuses_is_400_not_500() -> None:
    app = SSEApp(ChannelManager(backend=RefusingBackend()), allow_publish=True)
    client = await call(app, publish_client("c", {"data": 1}))
    assert client.status == 400
    assert client.json() == {"error": "event: this backend refuses it"}


@pytest.mark.parametrize(
    ("where", "token"),
    [
        ("header", "abc.d\u00e9f"),  # latin-1 bytes in the header
        ("header", "\u00ff\u00fe.\u00e9"),
        ("query", "abc.%C3%A9%E2%82%AC"),  # UTF-8 percent-encoded, non-ASCII once decoded
        ("query", "abc.%FF%FE"),  # not UTF-8 at all
        ("cookie", "abc.d\u00e9f"),
        ("header", "." * 3),
        ("header", "a.b.c.d"),
        ("header", "\u00e9" * 20_000),  # over MAX_TOKEN_LENGTH
        ("header", "eyJhbGciOiJIUzI1NiJ9.\u00e9\u00e9.\u00ff"),  # a JWT header, then junk
        ("query", "eyJhbGciOiJIUzI1NiJ9.%C3%A9.x"),
        ("query", "%00%01%02"),
        ("cookie", "\u00ff" * 40),
    ],
)
async def test_any_token_bytes_are_401_never_500(where: str, token: str) -> None:
    app = SSEApp(ChannelManager(), secret=SECRET)
    client = Client(path="/c")
    if where == "header":
        client.scope["headers"] = [(b"authorization", b"Bearer " + token.encode("latin-1"))]
    elif where == "cookie":
        client.scope["headers"] = [(b"cookie", b"sse_token=" + token.encode("latin-1"))]
    else:
        client.scope["query_string"] = b"token=" + token.encode()
    await call(app, client)
    assert client.status == 401
    assert client.json() == {"error": "malformed token"}
    assert client.headers["www-authenticate"] == challenge("malformed token")


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("where", ["body", "data"])
async def test_deeply_nested_json_is_400(depth: int, where: str) -> None:
    app = SSEApp(ChannelManager(), allow_publish=True, max_body_size=1024 * 1024)
    nested = b"[" * depth + b"]" * depth
    body = nested if where == "body" else b'{"data": ' + nested + b"}"
    client = await call(app, publish_client("c", body))
    assert client.status == 400
    assert "deep" in client.json()["error"]


async def test_concurrent_streams_cannot_bypass_max_subscribers_per_client() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_client=2, heartbeat_interval=None)
    clients = [Client(path=f"/c{i}") for i in range(20)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        for client in clients:
            await client.wait_for(lambda c=client: bool(c.messages))
        statuses = sorted(c.status for c in clients)
        assert statuses == [200] * 2 + [429] * 18
        for client in clients:
            client.disconnect.set()
    assert manager.stats()["subscribers"] == 0
    again = Client(path="/c")
    async with Stream(app, again):
        await again.wait_for(lambda: bool(again.messages))
        assert again.status == 200


async def test_concurrent_streams_cannot_bypass_max_subscribers_per_channel() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_subscribers_per_channel=3, heartbeat_interval=None)
    clients = [Client(path="/room") for i in range(20)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        for client in clients:
            await client.wait_for(lambda c=client: bool(c.messages))
        assert sorted(c.status for c in clients) == [200] * 3 + [429] * 17
        for client in clients:
            client.disconnect.set()
    assert manager.stats()["subscribers"] == 0


async def test_subscribers_alone_cannot_make_publishing_fail() -> None:
    manager = ChannelManager(max_channels=32)
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    clients = [
        Client(path="/", query="&".join(f"channel=s{i}-{j}" for j in range(16))) for i in range(8)
    ]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        for client in clients:
            await client.wait_for(lambda c=client: bool(c.messages))
        for n in range(8):
            published = await call(app, publish_client(f"fresh-{n}", {"data": n}))
            assert published.status == 202, published.body
        for client in clients:
            client.disconnect.set()


async def test_safe_defaults() -> None:
    app = SSEApp(ChannelManager())
    assert app.limits.max_subscribers_per_client == 1000
    assert app.limits.max_channels_per_stream == 16
    assert app.limits.max_last_event_id_length == 4096


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"secret": ""}, "secret"),
        ({"secret": b""}, "secret"),
        ({"secret": 42}, "secret"),
        ({"secret": SECRET, "token_required_for": ("subscibe",)}, "token_required_for"),
        ({"secret": SECRET, "token_required_for": ()}, "token_required_for"),
        ({"token_required_for": ("publish",)}, "token_required_for"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"heartbeat_interval": -1.0}, "heartbeat_interval"),
        ({"heartbeat_interval": float("nan")}, "heartbeat_interval"),
        ({"heartbeat_interval": "15"}, "heartbeat_interval"),
        ({"send_timeout": 0}, "send_timeout"),
        ({"send_timeout": float("inf")}, "send_timeout"),
        ({"retry": -1}, "retry"),
        ({"retry": 1.5}, "retry"),
        ({"retry": True}, "retry"),
        ({"max_body_size": 0}, "max_body_size"),
        ({"max_body_size": 1.5}, "max_body_size"),
        ({"max_channel_name_length": 0}, "max_channel_name_length"),
        ({"max_channels_per_stream": 0}, "max_channels_per_stream"),
        ({"max_subscribers_per_channel": 0}, "max_subscribers_per_channel"),
        ({"max_subscribers_per_client": -3}, "max_subscribers_per_client"),
        ({"client_key": "peer"}, "client_key"),
        ({"authorize": True}, "authorize"),
        ({"allow_publish": "no"}, "allow_publish"),
        ({"stats": 1}, "stats"),
        ({"token_cookie": ""}, "token_cookie"),
        ({"token_cookie": "a b;"}, "token_cookie"),
        ({"cors_origins": "https://example.com/"}, "cors_origins"),
        ({"cors_origins": ["example.com"]}, "cors_origins"),
        ({"cors_allow_credentials": True}, "cors_allow_credentials"),
        ({"manager": "sse_manager"}, "manager"),
    ],
)
def test_configuration_mistakes_raise_naming_the_parameter(
    options: dict[str, Any], parameter: str
) -> None:
    manager = options.pop("manager", ChannelManager())
    with pytest.raises((ValueError, TypeError), match=parameter):
        SSEApp(manager, **options)


@pytest.mark.parametrize(
    "headers",
    [[], [("content-type", "text/plain")], [("content-type", "application/x-www-form-urlencoded")]],
)
async def test_publish_needs_a_json_media_type(headers: list[tuple[str, str]]) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True)
    client = await call(app, publish_client("c", {"data": 1}, headers=headers))
    assert client.status == 415
    assert "application/json" in client.json()["error"]
    assert await manager.get("c") is None


async def test_split_cookie_headers_are_joined() -> None:
    app = SSEApp(ChannelManager(), secret=SECRET, heartbeat_interval=None)
    token = create_token(SECRET, channels="c")
    client = Client(path="/c", headers=[("cookie", "theme=dark"), ("cookie", f"sse_token={token}")])
    async with Stream(app, client):
        await client.wait_for(lambda: bool(client.messages))
        assert client.status == 200


async def test_last_event_id_over_the_limit_is_400_naming_the_header() -> None:
    app = SSEApp(ChannelManager(), heartbeat_interval=None)
    for client in [
        Client(path="/c", headers=[("last-event-id", "x" * 60_000)]),
        Client(path="/c", query="last_event_id=" + "x" * 5000),
        Client(path="/", query="channel=a&channel=b", headers=[("last-event-id", "x" * 8193)]),
    ]:
        await call(app, client)
        assert client.status == 400
        assert "last-event-id" in client.json()["error"].lower()
        assert len(client.body) < 200


async def test_last_event_id_within_the_limit_is_answered_with_a_bounded_reset() -> None:
    app = SSEApp(ChannelManager(), heartbeat_interval=None)
    client = Client(path="/c", headers=[("last-event-id", "x" * 4096)])
    async with Stream(app, client):
        await client.wait_for(lambda: b"sse.reset" in client.body)
        assert client.status == 200
        assert len(client.body) < 600  # the channel echoes at most 256 characters of it
    (reset,) = [e for e in parse(client.body).events if e.event == "sse.reset"]
    assert json.loads(reset.data)["last_event_id"] == "x" * 256


async def test_a_published_id_over_a_quarter_of_the_last_event_id_limit_is_400() -> None:
    app = SSEApp(ChannelManager(), allow_publish=True)
    for too_long in ["x" * 1025, "\u00e9" * 513]:
        client = await call(app, publish_client("c", {"data": 1, "id": too_long}))
        assert client.status == 400
        assert client.json() == {"error": "id is at most 1024 bytes in UTF-8"}
    for longest in ["x" * 1024, "\u00e9" * 512, "\U0001f600" * 256]:
        client = await call(app, publish_client("c", {"data": 1, "id": longest}))
        assert client.status == 202


async def test_a_merged_streams_longest_composite_id_is_accepted_back() -> None:
    """16 channels with the longest names and ids: the composite id a client sends back
    fits the Last-Event-ID bound (per channel), so reconnecting replays, never a 400."""
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    names = [f"{n:02d}:" + ":" * 125 for n in range(16)]  # ':' percent-encodes to 3 chars
    for name in names:
        published = await call(app, publish_client(name, {"data": name, "id": "é" * 512}))
        assert published.status == 202
    positions = {name: "é" * 512 for name in names}
    composite = encode_positions(positions)
    assert 16 * 3000 < len(composite) <= 16 * 4096  # long, but within 16 channels' worth
    query = "&".join(f"channel={quote(name)}" for name in names)
    client = Client(path="/", query=query, headers=[("last-event-id", "x")])
    client.scope["headers"] = [(b"last-event-id", composite.encode())]
    async with Stream(app, client):
        await client.wait_for(lambda: bool(client.messages))
        assert client.status == 200
    assert b"sse.reset" not in client.body


async def test_content_length_that_is_not_an_ascii_number_is_ignored_not_a_500() -> None:
    app = SSEApp(ChannelManager(), allow_publish=True)
    for declared in ["\u00b2", "9" * 5000, "-1", " 12"]:
        client = publish_client("c", {"data": 1})
        client.scope["headers"].append((b"content-length", declared.encode("latin-1")))
        await call(app, client)
        assert client.status == 202 or client.status == 413


async def test_a_client_gone_mid_body_gets_no_answer_and_nothing_is_published() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True)
    client = publish_client("c", b"")
    parts = [{"type": "http.request", "body": b'{"data": ', "more_body": True}]

    async def receive() -> Any:  # part of the body, then the client is gone
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    with anyio.fail_after(WAIT):
        await app(client.scope, receive, client.send)
    assert client.messages == []
    assert await manager.get("c") is None


@pytest.mark.parametrize("path", ["/", "/c", "/_stats", "/a/b"])
async def test_websocket_is_refused_before_accept_on_every_path(path: str) -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    scope = {"type": "websocket", "path": path, "headers": []}
    await SSEApp(ChannelManager())(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]


async def test_an_unknown_scope_type_raises_a_clear_error() -> None:
    async def receive() -> Any:
        raise AssertionError("not called")

    async def send(message: Any) -> None:
        raise AssertionError("not called")

    with pytest.raises(RuntimeError, match="'webtransport'"):
        await SSEApp(ChannelManager())({"type": "webtransport"}, receive, send)


OPTION_NAMES = [
    "allow_publish",
    "authorize",
    "secret",
    "heartbeat_interval",
    "send_timeout",
    "retry",
    "stats",
    "max_body_size",
    "max_channel_name_length",
    "max_channels_per_stream",
    "max_subscribers_per_channel",
    "max_subscribers_per_client",
    "max_channels_per_client",
    "max_last_event_id_length",
    "client_key",
    "cors_origins",
    "cors_allow_credentials",
    "token_cookie",
    "token_required_for",
]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(OPTION_NAMES),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 10**6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.binary(max_size=4),
        st.lists(st.sampled_from(["subscribe", "publish", "stats", "subscibe", "*", ""])),
        st.just(lambda *args: True),
        st.just(object()),
    ),
)
def test_any_option_value_builds_or_raises_naming_the_option(name: str, value: Any) -> None:
    options: dict[str, Any] = {name: value}
    if name == "token_required_for":
        options["secret"] = SECRET
    if name == "cors_allow_credentials":
        options["cors_origins"] = ["https://app.example"]
    try:
        app = SSEApp(ChannelManager(), **options)
    except (ValueError, TypeError) as exc:
        assert name in str(exc), (name, value, str(exc))  # noqa: PT017
    else:
        assert app.open_streams == 0


async def test_option_groups_serve_like_the_flat_keywords() -> None:
    from sse_toolkit.policy import CORS, Auth, Limits

    manager = ChannelManager()
    app = SSEApp(
        manager,
        allow_publish=True,
        auth=Auth(SECRET, required_for=["publish"]),
        limits=Limits(max_body_size=100, max_subscribers_per_client=1),
        cors=CORS(["https://app.example"], allow_credentials=True),
        heartbeat_interval=None,
    )
    assert (await call(app, publish_client("c", {"data": 1}))).status == 401
    token = create_token(SECRET, channels="c", actions="publish")
    auth = [("authorization", f"Bearer {token}"), ("content-type", "application/json")]
    assert (await call(app, publish_client("c", {"data": "x" * 200}, headers=auth))).status == 413
    published = await call(
        app, publish_client("c", {"data": 1}, headers=[*auth, ("origin", "https://app.example")])
    )
    assert published.status == 202
    assert published.headers["access-control-allow-credentials"] == "true"
    async with Stream(app, Client(path="/c")) as first:
        await first.wait_for(lambda: bool(first.messages))
        assert (await call(app, Client(path="/d"))).status == 429
    assert "s3cret" not in repr(app.auth)


def test_a_group_and_its_keywords_together_are_refused() -> None:
    from sse_toolkit.policy import Auth, Limits

    with pytest.raises(TypeError, match="secret"):
        SSEApp(ChannelManager(), auth=Auth(SECRET), secret=SECRET)
    with pytest.raises(TypeError, match="max_body_size"):
        SSEApp(ChannelManager(), limits=Limits(), max_body_size=10)
    with pytest.raises(TypeError, match="limits"):
        SSEApp(ChannelManager(), limits=Auth())  # type: ignore[arg-type]


# -- channels held per client (review: one client filled max_subscriber_channels) ----------


def merged_client(prefix: str, n: int, **kwargs: Any) -> Client:
    return Client(path="/", query="&".join(f"channel={prefix}-{j}" for j in range(n)), **kwargs)


async def test_a_clients_open_streams_hold_at_most_max_channels_per_client() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_channels_per_client=32, heartbeat_interval=None)
    async with Stream(app, merged_client("a", 16)) as a, Stream(app, merged_client("b", 16)) as b:
        await a.wait_for(lambda: bool(a.messages))
        await b.wait_for(lambda: bool(b.messages))
        assert (a.status, b.status) == (200, 200)
        refused = await call(app, Client(path="/one-more"))
        assert refused.status == 429
        assert refused.headers["retry-after"]
        assert "max_channels_per_client" in refused.json()["error"]
        assert await manager.get("one-more") is None  # refused before creating anything
        # Channels already held count once: more streams on them are still served.
        async with Stream(app, Client(path="/a-3")) as again:
            await again.wait_for(lambda: bool(again.messages))
            assert again.status == 200
        # Another client is not affected.
        other = Client(path="/one-more")
        other.scope["client"] = ("10.0.0.2", 1)
        async with Stream(app, other):
            await other.wait_for(lambda: bool(other.messages))
            assert other.status == 200
    # Every way out gave the channels back.
    async with Stream(app, merged_client("c", 16)) as c:
        await c.wait_for(lambda: bool(c.messages))
        assert c.status == 200


async def test_concurrent_streams_cannot_bypass_max_channels_per_client() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, max_channels_per_client=48, heartbeat_interval=None)
    clients = [merged_client(f"s{i}", 16) for i in range(10)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        for client in clients:
            await client.wait_for(lambda c=client: bool(c.messages))
        assert sorted(c.status for c in clients) == [200] * 3 + [429] * 7
        for client in clients:
            client.disconnect.set()
    assert app.open_streams == 0


async def test_default_channels_per_client_keep_new_channels_open_to_others() -> None:
    # The review's attack, scaled down: one client names fresh channels until refused; the
    # manager's subscriber channels are not exhausted, so others still subscribe to new ones.
    manager = ChannelManager(max_channels=2 * 300)  # 300 subscriber channels
    app = SSEApp(manager, heartbeat_interval=None)
    assert app.limits.max_channels_per_client == 256
    clients = [merged_client(f"x{i}", 16) for i in range(20)]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(app, client.scope, client.receive, client.send)
        for client in clients:
            await client.wait_for(lambda c=client: bool(c.messages))
        assert sorted(c.status for c in clients) == [200] * 16 + [429] * 4
        victim = Client(path="/alice-room")
        victim.scope["client"] = ("10.0.0.9", 1)
        async with Stream(app, victim):
            await victim.wait_for(lambda: bool(victim.messages))
            assert victim.status == 200
        for client in clients:
            client.disconnect.set()


def test_max_channels_per_client_is_validated() -> None:
    assert (
        SSEApp(ChannelManager(), max_channels_per_client=None).limits.max_channels_per_client
        is None
    )
    for bad in (0, -1, 1.5, "8", True):
        with pytest.raises((ValueError, TypeError), match="max_channels_per_client"):
            SSEApp(ChannelManager(), max_channels_per_client=bad)
    with pytest.raises(ValueError, match="max_channels_per_client"):
        SSEApp(ChannelManager(), max_channels_per_client=8)  # below max_channels_per_stream (16)


# -- Last-Event-ID is UTF-8 (review: non-ASCII ids were not replayed) ----------------------


@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_non_ascii_id_is_replayed_from_last_event_id(where: str) -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    for i in range(3):
        assert (
            await call(app, publish_client("r", {"data": i, "id": f"café-☕-{i}"}))
        ).status == 202
    if where == "header":  # the Client sends header values as UTF-8 bytes, as EventSource does
        client = Client(path="/r", headers=[("last-event-id", "café-☕-0")])
    else:
        client = Client(path="/r", query="last_event_id=" + quote("café-☕-0"))
    async with Stream(app, client):
        await client.wait_for(lambda: len(parse(client.body).events) == 2)
    events = parse(client.body).events
    assert [(e.last_event_id, e.data) for e in events] == [("café-☕-1", "1"), ("café-☕-2", "2")]


async def test_a_non_ascii_composite_id_is_replayed_from_last_event_id() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)
    first = Client(path="/", query="channel=a&channel=b")
    async with Stream(app, first):
        await wait_subscribers(manager, "b", 1)
        for i in range(2):
            await call(app, publish_client("a", {"data": f"a{i}", "id": f"é{i}"}))
        await first.wait_for(lambda: len(parse(first.body).events) == 2)
    composite = parse(first.body).events[0].last_event_id
    client = Client(path="/", query="channel=a&channel=b", headers=[("last-event-id", composite)])
    async with Stream(app, client):
        await client.wait_for(lambda: len(parse(client.body).events) == 1)
    assert [e.data for e in parse(client.body).events] == ["a1"]


@pytest.mark.parametrize("raw", [b"caf\xe9-1", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"])
async def test_a_last_event_id_that_is_not_utf8_is_an_unknown_id(raw: bytes) -> None:
    app = SSEApp(ChannelManager(), allow_publish=True, heartbeat_interval=None)
    await call(app, publish_client("r", {"data": "x", "id": "caf\u00e9-1"}))
    client = Client(path="/r")
    client.scope["headers"] = [(b"last-event-id", raw)]
    async with Stream(app, client):
        await client.wait_for(lambda: b"sse.reset" in client.body)
        assert client.status == 200
    (reset,) = [e for e in parse(client.body).events if e.event == "sse.reset"]
    assert json.loads(reset.data)["last_event_id"] == raw.decode("utf-8", "replace")


# -- issue 10: one meaning of a secret; a 405 that says how to publish ----------------------


async def test_a_post_with_publishing_off_is_405_saying_how_to_turn_it_on() -> None:
    manager = ChannelManager()
    client = await call(SSEApp(manager), publish_client("c", {"data": 1}))
    assert client.status == 405
    assert client.headers["allow"] == "GET, HEAD, OPTIONS"
    assert client.json() == {
        "error": "publishing is off: SSEApp(allow_publish=True) or the hub's --allow-publish"
        " turns it on"
    }
    assert await manager.list_channels() == []


@pytest.mark.parametrize(
    ("method", "path", "allow_publish"),
    [("PUT", "/c", False), ("PUT", "/c", True), ("DELETE", "/", False), ("POST", "/", False)],
)
async def test_other_405s_keep_their_message(method: str, path: str, allow_publish: bool) -> None:
    app = SSEApp(ChannelManager(), allow_publish=allow_publish)
    client = await call(app, Client(method=method, path=path))
    assert client.status == 405
    assert client.json() == {"error": "method not allowed"}


async def test_a_secret_guards_every_action_by_default_subscribing_included() -> None:
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, stats=True, secret=SECRET)
    assert app.auth.required_for == {"subscribe", "publish", "stats"}
    for client in (
        Client(method="HEAD", path="/c"),
        publish_client("c", {"data": 1}),
        Client(path="/_stats"),
    ):
        assert (await call(app, client)).status == 401, client.scope["method"]
    token = create_token(SECRET, channels="c", actions="subscribe")
    ok = await call(app, Client(method="HEAD", path="/c", query=f"token={token}"))
    assert ok.status == 200
