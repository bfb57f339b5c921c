"""HTTP fuzzing of `SSEApp` with an oracle: whatever arrives, a documented answer.

Hypothesis draws methods, paths (percent-encodings, non-UTF-8 bytes in ``raw_path``,
surrogates in ``path``), query strings, headers (tokens of any bytes, split cookies, huge
``Last-Event-ID``), bodies (JSON of any shape and depth, non-JSON, wrong content types,
split over several body messages, or cut by a disconnect) against apps with and without a
secret, publishing and stats. The oracle: no exception escapes the app, nothing hangs
(`anyio.fail_after`), the status is one the route documents, every error body is JSON
``{"error": str}``, a stream is ``text/event-stream``, and every stream slot is given back.

A second oracle for resuming: any id a stream sent, returned as UTF-8 bytes in
``Last-Event-ID`` (or percent-encoded in ``?last_event_id=``), single or merged stream,
replays exactly what followed it.

Runs in-process (``SSE_TOOLKIT_FUZZ_EXAMPLES`` examples per event loop, 150 by default), and a
smaller run over TCP against real uvicorn whose error log must hold no traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import string
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_toolkit import ChannelManager, ServerSentEvent, SSEApp, create_token

from .asgi import Client
from .servers import serve
from .sse_parser import parse

pytestmark = pytest.mark.anyio

SECRET = "fuzz-secret: 32 bytes or more, as PyJWT wants for HS256"
OTHER_SECRET = "not the fuzz secret, but as long: 32 bytes or more"
EXAMPLES = int(os.environ.get("SSE_TOOLKIT_FUZZ_EXAMPLES", "150"))
SERVER_REQUESTS = int(os.environ.get("SSE_TOOLKIT_FUZZ_SERVER_REQUESTS", "50"))
HANG = 5.0  # bound on any one request, far above what a healthy one takes

# The statuses each kind of request may get (README: "Statuses").
STREAM_STATUSES = {200, 400, 401, 403, 404, 405, 414, 429, 503}
PUBLISH_STATUSES = {202, 400, 401, 403, 404, 405, 413, 414, 415, 503}
STATS_STATUSES = {200, 401, 403, 404, 405}
PREFLIGHT_STATUSES = {204, 403}
OTHER_STATUSES = {400, 404, 405}


# -- what a request may hold ---------------------------------------------------------------

NAMES = ["news", "a", "room:1", "x.y~z-1", "_stats", "_private", "", "a" * 200]
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
latin1 = st.binary(max_size=60).map(lambda b: b.decode("latin-1"))


@st.composite
def segment(draw: st.DrawFn) -> str:
    return draw(st.one_of(st.sampled_from(NAMES), any_text, latin1))


ROUTES = ["/news", "/a", "/room:1", "/", "/_stats", "/news/", "/_stats/"]


def path() -> st.SearchStrategy[str]:
    routes = st.sampled_from(ROUTES)
    return st.one_of(routes, routes, routes, any_path())  # mostly routes that exist


@st.composite
def any_path(draw: st.DrawFn) -> str:
    parts = draw(st.lists(segment(), min_size=0, max_size=3))
    text = "/" + "/".join(parts)
    return text if draw(st.booleans()) or text == "/" else text + "/"


def valid_tokens() -> st.SearchStrategy[str]:
    return st.builds(
        lambda channels, actions, ttl: create_token(
            SECRET, channels=channels, actions=actions, ttl=ttl
        ),
        st.lists(st.sampled_from(["*", "news", "a", "room:1"]), min_size=1, max_size=3),
        st.lists(st.sampled_from(["subscribe", "publish", "stats"]), min_size=1, max_size=3),
        st.sampled_from([3600.0, 0.001]),
    )


def spliced_tokens() -> st.SearchStrategy[str]:
    """A real token with one part replaced by non-ASCII: reaches the signature check."""
    return st.builds(
        lambda token, junk, which: (
            f"{token.partition('.')[0]}.{junk}" if which else f"{junk}.{token.partition('.')[2]}"
        ),
        valid_tokens(),
        st.one_of(latin1, any_text).filter(lambda junk: not junk.isascii()),
        st.booleans(),
    )


def signed(header: str, payload: str, key: str = SECRET) -> str:
    """A JWT of raw JSON texts, HS256-signed by hand (PyJWT would refuse to mint most)."""
    encoded = ".".join(
        base64.urlsafe_b64encode(part.encode()).rstrip(b"=").decode() for part in (header, payload)
    )
    signature = hmac.new(key.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{encoded}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def crafted_tokens() -> list[str]:
    """Well-signed tokens whose claims are wrong or odd, and unsigned ones (alg none)."""
    later = int(time.time()) + 10**6
    hs256 = '{"alg":"HS256","typ":"JWT"}'
    grants = '"sse":{"subscribe":["*"],"publish":["*"],"stats":true}'
    payloads = [
        '{"exp":1e400,' + grants + "}",
        '{"exp":' + "9" * 5000 + "," + grants + "}",
        '{"exp":NaN,' + grants + "}",
        '{"exp":"' + str(later) + '",' + grants + "}",
        f'{{"exp":{later},"nbf":{later},{grants}}}',
        f'{{"exp":{later},"iat":"x",{grants}}}',
        f'{{"exp":{later},"aud":"someone",{grants}}}',
        f'{{"exp":{later},"sub":5,{grants}}}',
        f'{{"exp":{later},"sse":{{"subscribe":"*","publish":[1],"stats":"yes"}}}}',
        f'{{"exp":{later},"sse":["*"]}}',
        f'{{"exp":{later},"sse":{{"subscribe":["news.*"],"publish":["news.*"]}}}}',
        f'{{"exp":{later}}}',
        "[1,2,3]",
        '"text"',
    ]
    tokens = [signed(hs256, payload) for payload in payloads]
    tokens += [signed('{"alg":"HS256","kid":5}', f'{{"exp":{later},{grants}}}')]
    for alg in ("none", "None", "NONE"):
        tokens.append(
            signed(f'{{"alg":"{alg}"}}', f'{{"exp":{later},{grants}}}').rpartition(".")[0] + "."
        )
    return tokens


CRAFTED_TOKENS = crafted_tokens()


def tokens() -> st.SearchStrategy[str]:
    forged = st.builds(
        lambda channels: create_token(OTHER_SECRET, channels=channels, actions="publish"),
        st.just("*"),
    )
    return st.one_of(
        valid_tokens(),
        spliced_tokens(),
        forged,
        st.sampled_from(CRAFTED_TOKENS),
        latin1,
        any_text,
        st.just("x" * 5000),
        st.just("x" * 20_000),  # over MAX_TOKEN_LENGTH
    )


def header_value(name: str) -> st.SearchStrategy[str]:
    if name == "authorization":
        return st.one_of(tokens().map(lambda t: f"Bearer {t}"), latin1)
    if name == "cookie":
        return st.one_of(tokens().map(lambda t: f"sse_token={t}"), latin1)
    if name == "last-event-id":
        # Any bytes (latin-1 text is sent byte for byte) and any text (sent as UTF-8).
        return st.one_of(
            latin1, any_text, st.sampled_from(["x" * 60_000, "x" * 4096, "a=1&b=2", ""])
        )
    if name == "content-type":
        return st.one_of(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "application/merge-patch+json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "",
                ]
            ),
            latin1,
        )
    if name == "content-length":
        return st.one_of(st.integers(-5, 10**7).map(str), latin1, st.just("9" * 5000))
    if name == "origin":
        return st.sampled_from(["https://app.example", "https://evil.example", "null"])
    return latin1


HEADER_NAMES = [
    "authorization",
    "cookie",
    "last-event-id",
    "content-type",
    "content-length",
    "origin",
    "access-control-request-headers",
    "x-anything",
]


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    names = draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=6))
    drawn = [(name, draw(header_value(name))) for name in names]
    if draw(st.booleans()):  # usually a JSON body, so publishing gets past the media type
        drawn.append(("content-type", "application/json"))
    if draw(st.booleans()):  # usually a token where the secret asks for one
        token = draw(st.one_of(spliced_tokens(), tokens()))
        if draw(st.booleans()):
            drawn.append(("authorization", f"Bearer {token}"))
        else:
            drawn.append(("cookie", f"sse_token={token}"))
    return draw(st.permutations(drawn))


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        any_text.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["data", "event", "id", "retry", "x"]), children),
    ),
    max_leaves=12,
)


@st.composite
def body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "event", "json", "deep", "deep", "bytes", "empty"]))
    if kind == "event":
        fields: dict[str, Any] = {"data": draw(json_values)}
        for key, values in [
            ("event", st.one_of(any_text, st.sampled_from(["a\nb", "x" * 300]))),
            ("id", st.one_of(any_text, st.sampled_from(["1", "x" * 5000, "a\rb", ""]))),
            ("retry", st.one_of(st.integers(-5, 10**12), st.just("1"))),
        ]:
            if draw(st.booleans()):
                fields[key] = draw(values)
        return json.dumps(fields).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_values)).encode("utf-8", "surrogatepass")
    if kind == "deep":
        depth = draw(st.integers(1, 50_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"data":', b"}")]))
        return opener * depth + b"1" + closer * depth
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    return b""


QUERY_KEYS = ["channel", "channel", "last_event_id", "token", "x"]


@st.composite
def query(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    pairs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(QUERY_KEYS), st.one_of(st.sampled_from(NAMES), any_text, tokens())
            ),
            max_size=20,
        )
    )
    return "&".join(
        f"{key}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}" for key, value in pairs
    ).encode()


@dataclass
class Shape:
    """One drawn request and how its body arrives."""

    method: str
    path: str
    raw_path: bytes
    root_path: str
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes
    chunks: int
    cut_mid_body: bool
    app_options: dict[str, Any] = field(default_factory=dict)


APP_OPTIONS = [
    {},
    {"allow_publish": True, "secret": SECRET},
    {"secret": SECRET},
    {"allow_publish": True},
    {"allow_publish": True, "secret": SECRET, "stats": True},
    {"secret": SECRET, "token_required_for": ["publish", "stats"], "stats": True},
    {
        "allow_publish": True,
        "cors_origins": ["https://app.example"],
        "cors_allow_credentials": True,
        "max_body_size": 256 * 1024,
        "max_subscribers_per_client": 1,
    },
    {"allow_publish": True, "cors_origins": "*", "max_channels_per_stream": 2},
]


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    method = draw(
        st.one_of(
            st.sampled_from(["GET", "POST"] * 3 + ["HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]),
            st.text(string.ascii_letters, min_size=1, max_size=8),
        )
    )
    text_path = draw(path())
    raw_path = draw(
        st.one_of(
            st.just(text_path.encode("utf-8", "surrogatepass")),
            st.binary(max_size=40).map(lambda b: b"/" + b),
        )
    )
    return Shape(
        method=method,
        path=text_path,
        raw_path=raw_path,
        root_path=draw(st.sampled_from(["", "", "/api"])),
        query=draw(query()),
        headers=draw(headers()),
        body=draw(body()) if method == "POST" or draw(st.booleans()) else b"",
        chunks=draw(st.integers(1, 4)),
        cut_mid_body=draw(st.booleans()) and draw(st.booleans()),
        app_options=draw(st.sampled_from(APP_OPTIONS)),
    )


@st.composite
def plausible_publishes(draw: st.DrawFn) -> Shape:
    """A publish that passes routing, media type and auth: its body is what is fuzzed."""
    shape = draw(shapes())
    token = create_token(SECRET, channels="*", actions=["publish", "subscribe", "stats"])
    shape.method = "POST"
    shape.path = draw(st.sampled_from(["/news", "/a", "/room:1"]))
    shape.raw_path = shape.path.encode()
    shape.headers = [
        ("content-type", "application/json"),
        ("authorization", f"Bearer {token}"),
        *shape.headers,
    ]
    shape.body = draw(body())
    shape.app_options = {"allow_publish": True, "secret": SECRET, "max_body_size": 256 * 1024}
    return shape


def requests() -> st.SearchStrategy[Shape]:
    return st.one_of(shapes(), shapes(), plausible_publishes())


# -- the oracle ----------------------------------------------------------------------------


def route_of(path: str) -> str:
    """The route a path names: ``/{name}/`` is ``/{name}`` (a name holds no ``/``)."""
    if len(path) > 2 and path.endswith("/") and path.count("/") == 2:
        return path[:-1]
    return path


def documented_statuses(shape: Shape) -> set[int]:
    route = route_of(shape.path)
    if shape.method == "OPTIONS":
        return PREFLIGHT_STATUSES
    if route == "/_stats":
        return STATS_STATUSES
    if route in ("", "/") or route.count("/") == 1:
        if shape.method in ("GET", "HEAD"):
            return STREAM_STATUSES
        if shape.method == "POST":
            return PUBLISH_STATUSES
        return {405, 404}
    return OTHER_STATUSES


def check_answer(shape: Shape, status: int, headers: dict[str, str], payload: bytes) -> None:
    allowed = documented_statuses(shape)
    assert status in allowed, (status, allowed, payload[:300])
    content_type = headers.get("content-type", "")
    if status >= 400:
        assert content_type == "application/json", headers
        if shape.method != "HEAD":
            error = json.loads(payload)
            assert set(error) == {"error"} and isinstance(error["error"], str), error
            assert len(payload) < 2048, "an error echoes too much of the request"
    elif status == 200 and route_of(shape.path) != "/_stats":
        assert content_type.startswith("text/event-stream"), headers


def wire(value: str) -> bytes:
    """A header value's bytes: latin-1 where it fits (any byte), else UTF-8 (any text)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def streaming(client: Client) -> bool:
    return bool(client.messages) and client.headers.get("content-type", "").startswith(
        "text/event-stream"
    )


def asgi_client(shape: Shape) -> tuple[Client, Any]:
    client = Client(method=shape.method, root_path=shape.root_path)
    client.scope["path"] = shape.root_path + shape.path
    client.scope["raw_path"] = shape.root_path.encode() + shape.raw_path
    client.scope["query_string"] = shape.query
    client.scope["headers"] = [(k.encode(), wire(v)) for k, v in shape.headers]
    size = max(1, -(-len(shape.body) // shape.chunks))
    parts = [shape.body[i : i + size] for i in range(0, len(shape.body), size)] or [b""]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    if shape.cut_mid_body:
        messages[-1]["more_body"] = True  # the rest never comes: the client is gone

    async def receive() -> Any:
        if messages:
            return messages.pop(0)
        if not shape.cut_mid_body:
            await client.disconnect.wait()
        return {"type": "http.disconnect"}

    return client, receive


async def answer_one(shape: Shape, *, hang: float = HANG) -> None:
    """Serve ``shape`` in process and check the answer with the oracle (the atheris target
    in tests/fuzz/ drives this too)."""
    manager = ChannelManager(max_channels=64)
    app = SSEApp(manager, heartbeat_interval=None, **shape.app_options)
    client, receive = asgi_client(shape)
    settled = anyio.Event()  # the app returned, or it is streaming (then: hang up)

    async def send(message: Any) -> None:
        await client.send(message)
        if streaming(client):
            settled.set()

    async def run() -> None:
        try:
            await app(client.scope, receive, send)
        finally:
            settled.set()

    with anyio.fail_after(hang):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await settled.wait()
            client.disconnect.set()
    if not client.messages:
        assert shape.cut_mid_body and shape.method == "POST", "no answer"
    else:
        check_answer(shape, client.status, client.headers, client.body)
        if not client.headers.get("content-type", "").startswith("text/event-stream"):
            length = int(client.headers["content-length"])
            assert length == len(client.body) or shape.method == "HEAD"
    assert app.open_streams == 0
    assert manager.stats()["subscribers"] == 0
    await manager.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=requests())
async def test_in_process_every_request_gets_a_documented_answer(shape: Shape) -> None:
    await answer_one(shape)


# -- any id a stream sent comes back through Last-Event-ID ---------------------------------

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


class Subscriber:
    """A stream read in a task group until ``done(parsed)``, then hung up."""

    def __init__(self, app: SSEApp, client: Client) -> None:
        self.app, self.client = app, client

    async def read(self, done: Any, then: Any = None) -> Any:
        client = self.client
        with anyio.fail_after(HANG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.app, client.scope, client.receive, client.send)
                if then is not None:
                    await client.wait_for(lambda: bool(client.messages))
                    await then()
                await client.wait_for(lambda: done(parse(client.body)))
                client.disconnect.set()
        assert client.status == 200, client.body
        return parse(client.body)


@settings(max_examples=max(10, EXAMPLES // 3), deadline=None)
@given(event_id=ids, merged=st.booleans(), via_query=st.booleans())
async def test_any_id_the_stream_sent_replays_from_last_event_id(
    event_id: str, merged: bool, via_query: bool
) -> None:
    """The oracle for resuming: EventSource sends back, as UTF-8 bytes, the id it last read;
    the app replays exactly what followed it (never ``sse.reset``), whatever the id's text."""
    manager = ChannelManager()
    app = SSEApp(manager, allow_publish=True, heartbeat_interval=None)

    def subscriber(last_event_id: str | None = None) -> Client:
        query = "channel=room&channel=other" if merged else ""
        client = Client(path="/" if merged else "/room", query=query)
        if last_event_id is not None and via_query:
            resume = "last_event_id=" + quote(last_event_id.encode("utf-8"), safe="")
            client.scope["query_string"] = f"{query}&{resume}".lstrip("&").encode()
        elif last_event_id is not None:  # the exact bytes a browser sends
            client.scope["headers"] = [(b"last-event-id", last_event_id.encode("utf-8"))]
        return client

    refused: list[bytes] = []

    async def publish() -> None:
        while (channel := await manager.get("room")) is None or not channel.subscriber_count:
            await anyio.sleep(0.001)
        for data, fields in (("first", {"id": event_id}), ("second", {})):
            client = Client(
                method="POST",
                path="/room",
                body=json.dumps({"data": data, **fields}).encode(),
                headers=[("content-type", "application/json")],
            )
            await app(client.scope, client.receive, client.send)
            if client.status == 400:  # an id the frames refuse (a line break, NUL): said so
                refused.append(client.body)
                for other in ("first", "second"):  # let the live reader finish
                    await channel.broadcast(ServerSentEvent(other))
                return
            assert client.status == 202, client.body

    live = await Subscriber(app, subscriber()).read(lambda p: len(p.events) >= 2, publish)
    if refused:
        assert b"id" in refused[0], refused
        return
    seen_id = live.events[0].last_event_id
    if not merged:
        assert seen_id == event_id
    resumed = await Subscriber(app, subscriber(seen_id)).read(lambda p: len(p.events) >= 1)
    assert [(e.event, e.data) for e in resumed.events[:1]] == [("message", "second")]
    await manager.close()


# -- against real uvicorn ------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_CONTROL_BYTES = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])


def raw_request(port: int, shape: Shape) -> tuple[int, dict[str, str], bytes] | None:
    """One request over a fresh TCP connection, bytes exactly as drawn (within HTTP/1.1
    framing). None when the server refused the request line itself (its own 400)."""
    path = quote(shape.raw_path, safe="/%")
    # The route the app will see: what the server decodes from the target.
    shape.path = unquote_to_bytes(path).decode("utf-8", "replace")
    shape.root_path = ""
    target = path.encode()
    if shape.query:
        target += b"?" + quote(shape.query, safe="=&%").encode()
    lines = [shape.method.encode() + b" " + target + b" HTTP/1.1", b"host: 127.0.0.1"]
    for name, value in shape.headers:
        if name in ("content-length",):
            continue  # framing is the client's job here: a lie would desynchronise the socket
        # (no control character but tab: h11 refuses them all, and the app would see none)
        clean = wire(value).translate(None, _CONTROL_BYTES).strip(b" \t")
        lines.append(name.encode() + b": " + clean)
    body = b"" if shape.cut_mid_body else shape.body
    lines.append(b"content-length: " + str(len(body)).encode())
    lines.append(b"connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=HANG) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                return None if not reply else _parse(reply, b"")
            reply += chunk
        head, _, rest = reply.partition(b"\r\n\r\n")
        status, header_map, _ = _parse(head + b"\r\n\r\n", b"")
        if shape.method == "HEAD" or header_map.get("content-type", "").startswith(
            "text/event-stream"
        ):
            return status, header_map, b""  # a stream: hang up
        length = int(header_map.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, header_map, rest[:length]


def _parse(head: bytes, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    lines = head.split(b"\r\n\r\n")[0].split(b"\r\n")
    status = int(lines[0].split()[1])
    header_map = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        header_map[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return status, header_map, payload


def server_shapes() -> st.SearchStrategy[Shape]:
    # Methods the server accepts on the request line; the rest is as in-process.
    return requests().filter(lambda s: s.method.isascii() and s.method.isalpha())


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the server has its own loop
def test_over_uvicorn_no_traceback_and_documented_answers(anyio_backend: str) -> None:
    manager = ChannelManager(max_channels=64)
    options = {"allow_publish": True, "secret": SECRET, "stats": True, "max_body_size": 256 * 1024}
    app = SSEApp(manager, heartbeat_interval=None, **options)
    drawn: list[Shape] = []

    @settings(max_examples=SERVER_REQUESTS, deadline=None, database=None)
    @given(shape=server_shapes())
    def collect(shape: Shape) -> None:
        drawn.append(shape)

    collect()
    records = Records()
    with serve(app, "uvicorn") as url:
        port = int(url.rsplit(":", 1)[1])
        error_log = logging.getLogger("uvicorn.error")
        error_log.addHandler(records)
        try:
            answered = 0
            for shape in drawn:
                shape.app_options = options
                answer = raw_request(port, shape)
                if answer is None:
                    continue
                status, header_map, payload = answer
                if status == 400 and not header_map.get("content-type", "").startswith(
                    "application/json"
                ):
                    continue  # the server's own refusal of a malformed request
                check_answer(shape, status, header_map, payload)
                answered += 1
            assert answered >= len(drawn) // 2, "too few requests reached the app"
        finally:
            error_log.removeHandler(records)
    tracebacks = [r for r in records.records if r.exc_info or "Exception" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
