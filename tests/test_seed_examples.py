"""The examples of Lilya's "SSE Channels" page, run against sse_toolkit.

Each example of ``reference/lilya-sse-channels.md`` is written here as the page has it, with
only ``SSEChannel``, ``sse_manager`` and ``EventStreamResponse`` imported from ``sse_toolkit``,
served by a real uvicorn in a thread and read over loopback by ``httpx-sse``.

In Lilya the handlers are the page's, verbatim: Lilya awaits a returned async callable as an
ASGI app, so our ``EventStreamResponse`` is returned directly. Starlette has no ``@app.get``,
passes the ``request`` to every endpoint and does not turn a returned ``dict`` into JSON, so
there each endpoint takes ``request``, reads path parameters from it and returns a
``JSONResponse``; the channel and streaming code inside is unchanged, and the endpoint returns
our ``EventStreamResponse`` directly (Starlette awaits whatever the endpoint returns as
``response(scope, receive, send)``).

What the page leaves out but a test needs is marked ``# harness``: the ``/events`` route the
notifications example mentions, a route that runs the job, a route that publishes to a room
or to the injected channel, and a small job.

Channels are per app (``SSEChannel`` made in the app factory), or named on the process-wide
``sse_manager`` with the page's name plus a unique suffix per test: each test's server runs its
own event loop, and a channel that outlived one loop breaks in the next (see
``test_a_channel_outlives_its_event_loop``). Every test ends by waiting for its subscribers to
leave while the server still runs. Events are published only once the server has registered
the subscriber: a channel delivers from the moment of subscription.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from lilya.apps import Lilya
from lilya.dependencies import Depends, Resolve, inject
from lilya.routing import Path
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from sse_toolkit import EventStreamResponse, SSEChannel, sse_manager

from .servers import serve

WAIT = 10.0  # read timeout of every HTTP request
SETTLE = 5.0  # longest wait for the server to register or release a subscriber
FRAMEWORKS = ["lilya", "starlette"]
JOB_STEPS = 20
HEARTBEAT_FRAME = b": heartbeat\n\n"


# -- helpers -------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    """Poll ``predicate`` every 10 ms; fail after ``timeout`` seconds."""
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        tick.wait(0.01)


def manager_subscribers(name: str) -> int:
    """Subscribers of ``sse_manager``'s channel ``name`` (0 if it does not exist), read
    synchronously from the test thread."""
    stats = sse_manager.channel_stats(name)
    return 0 if stats is None else stats.subscribers


def next_events(events: Iterator[ServerSentEvent], count: int) -> list[ServerSentEvent]:
    """The next ``count`` events of a stream; each read is bounded by the client's timeout.

    httpx-sse 0.4 dispatches an empty ``message`` event for the blank line ending a comment
    frame (such as a heartbeat) once an ``id`` was seen, which browsers do not (WHATWG: no
    data, no dispatch); those are skipped.
    """
    received: list[ServerSentEvent] = []
    while len(received) < count:
        event = next(events, None)
        if event is None:
            raise AssertionError(f"the stream ended after {len(received)} of {count} events")
        if event.event == "message" and event.data == "":
            continue
        received.append(event)
    return received


def open_stream(client: httpx.Client, url: str) -> Any:
    return connect_sse(client, "GET", url)


def check_stream_headers(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")


@dataclass
class Example:
    app: Any
    subscribers: Callable[[], int]
    """How many listeners the server has registered on the example's channel."""


# -- 1. Basic example ------------------------------------------------------------------------


def basic_lilya() -> Example:
    # Create or get a named SSE channel
    notifications = SSEChannel("notifications")

    async def events():
        # Stream messages to connected clients
        async def stream():
            async for event in notifications.listen(heartbeat_interval=10):
                yield event

        return EventStreamResponse(stream())

    async def send():
        # Broadcast to all connected clients
        await notifications.broadcast({"event": "notice", "data": "Hello, world!"})
        return {"sent": True}

    app = Lilya(
        routes=[
            Path("/events", events),
            Path("/send", send),
        ]
    )
    return Example(app, lambda: notifications.subscriber_count)


def basic_starlette() -> Example:
    notifications = SSEChannel("notifications")

    async def events(request):
        async def stream():
            async for event in notifications.listen(heartbeat_interval=10):
                yield event

        return EventStreamResponse(stream())

    async def send(request):
        await notifications.broadcast({"event": "notice", "data": "Hello, world!"})
        return JSONResponse({"sent": True})

    app = Starlette(
        routes=[
            Route("/events", events),
            Route("/send", send),
        ]
    )
    return Example(app, lambda: notifications.subscriber_count)


BASIC = {"lilya": basic_lilya, "starlette": basic_starlette}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_basic_example(framework: str) -> None:
    example = BASIC[framework]()
    with (
        serve(example.app, "uvicorn") as url,
        httpx.Client(timeout=WAIT) as browser,
        httpx.Client(timeout=WAIT) as other_tab,
    ):
        with open_stream(browser, f"{url}/events") as source:
            check_stream_headers(source.response)
            wait_until(lambda: example.subscribers() >= 1, "the /events subscriber")
            assert example.subscribers() == 1

            reply = other_tab.get(f"{url}/send")
            assert reply.status_code == 200
            assert reply.json() == {"sent": True}

            [event] = next_events(source.iter_sse(), 1)
        assert event.event == "notice"
        assert event.data == "Hello, world!"
        assert event.id  # the channel numbers what it stores

        wait_until(lambda: example.subscribers() == 0, "the subscriber to leave")


# -- 2. Live notifications -------------------------------------------------------------------


def notifications_lilya(name: str = "user_notifications") -> Lilya:
    app = Lilya()

    @app.get("/notify")
    async def notify():
        ch = await sse_manager.get_or_create(name)
        await ch.broadcast({"event": "alert", "data": "You have a new message"})
        return {"status": "notified"}

    @app.get("/events")  # harness: "Clients subscribe to /events"
    async def events():
        ch = await sse_manager.get_or_create(name)

        async def stream():
            async for event in ch.listen(heartbeat_interval=10):
                yield event

        return EventStreamResponse(stream())

    return app


def notifications_starlette(name: str = "user_notifications") -> Starlette:
    async def notify(request):
        ch = await sse_manager.get_or_create(name)
        await ch.broadcast({"event": "alert", "data": "You have a new message"})
        return JSONResponse({"status": "notified"})

    async def events(request):  # harness: "Clients subscribe to /events"
        ch = await sse_manager.get_or_create(name)

        async def stream():
            async for event in ch.listen(heartbeat_interval=10):
                yield event

        return EventStreamResponse(stream())

    return Starlette(routes=[Route("/notify", notify), Route("/events", events)])


NOTIFICATIONS = {"lilya": notifications_lilya, "starlette": notifications_starlette}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_live_notifications(framework: str) -> None:
    name = f"user_notifications-{uuid.uuid4().hex}"
    app = NOTIFICATIONS[framework](name)

    def subscribers() -> int:
        return manager_subscribers(name)

    with (
        serve(app, "uvicorn") as url,
        httpx.Client(timeout=WAIT) as first,
        httpx.Client(timeout=WAIT) as second,
        httpx.Client(timeout=WAIT) as server_side,
    ):
        with open_stream(first, f"{url}/events") as a, open_stream(second, f"{url}/events") as b:
            check_stream_headers(a.response)
            check_stream_headers(b.response)
            wait_until(lambda: subscribers() >= 2, "both /events subscribers")
            assert subscribers() == 2

            for _ in range(2):
                reply = server_side.get(f"{url}/notify")
                assert reply.status_code == 200
                assert reply.json() == {"status": "notified"}

            got_a = next_events(a.iter_sse(), 2)
            got_b = next_events(b.iter_sse(), 2)
        for got in (got_a, got_b):
            assert [(e.event, e.data) for e in got] == [("alert", "You have a new message")] * 2
            assert got[0].id != got[1].id
        # one broadcast, the same stored event (same id) for every subscriber
        assert [e.id for e in got_a] == [e.id for e in got_b]

        wait_until(lambda: subscribers() == 0, "the subscribers to leave")
        assert sse_manager.channel_stats(name) is not None  # kept: it published


# -- 3. Real-time job progress ---------------------------------------------------------------


def progress_lilya() -> Example:
    app = Lilya()
    progress = SSEChannel("tasks")

    async def run_job():
        for i in range(JOB_STEPS):  # the page: range(100) with 0.1 s steps
            await progress.broadcast({"event": "progress", "data": i})
            await anyio.sleep(0.01)

    @app.get("/job/status")
    async def job_status():
        async def stream():
            async for event in progress.listen(heartbeat_interval=5):
                yield event

        return EventStreamResponse(stream())

    @app.get("/job/run")  # harness: something has to run the job
    async def job_run():
        await run_job()
        return {"done": JOB_STEPS}

    return Example(app, lambda: progress.subscriber_count)


def progress_starlette() -> Example:
    progress = SSEChannel("tasks")

    async def run_job():
        for i in range(JOB_STEPS):
            await progress.broadcast({"event": "progress", "data": i})
            await anyio.sleep(0.01)

    async def job_status(request):
        async def stream():
            async for event in progress.listen(heartbeat_interval=5):
                yield event

        return EventStreamResponse(stream())

    async def job_run(request):  # harness
        await run_job()
        return JSONResponse({"done": JOB_STEPS})

    app = Starlette(routes=[Route("/job/status", job_status), Route("/job/run", job_run)])
    return Example(app, lambda: progress.subscriber_count)


PROGRESS = {"lilya": progress_lilya, "starlette": progress_starlette}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_job_progress(framework: str) -> None:
    example = PROGRESS[framework]()
    with (
        serve(example.app, "uvicorn") as url,
        httpx.Client(timeout=WAIT) as watcher,
        httpx.Client(timeout=WAIT) as runner,
    ):
        with open_stream(watcher, f"{url}/job/status") as source:
            check_stream_headers(source.response)
            wait_until(lambda: example.subscribers() >= 1, "the /job/status subscriber")

            reply = runner.get(f"{url}/job/run")  # returns once the job is over
            assert reply.status_code == 200
            assert reply.json() == {"done": JOB_STEPS}

            events = next_events(source.iter_sse(), JOB_STEPS)
        assert all(e.event == "progress" for e in events)
        assert [e.json() for e in events] == list(range(JOB_STEPS))
        assert len({e.id for e in events}) == JOB_STEPS

        wait_until(lambda: example.subscribers() == 0, "the subscriber to leave")


# -- 4. Multi-channel communication ----------------------------------------------------------


def rooms_lilya() -> Lilya:
    app = Lilya()

    @app.get("/events/{room_id}")
    async def room_events(room_id: str):
        room = await sse_manager.get_or_create(room_id)

        async def stream():
            async for ev in room.listen():
                yield ev

        return EventStreamResponse(stream())

    @app.get("/say/{room_id}/{text}")  # harness: publish to one room
    async def say(room_id: str, text: str):
        room = await sse_manager.get_or_create(room_id)
        await room.broadcast({"event": "chat", "data": text})
        return {"room": room_id}

    return app


def rooms_starlette() -> Starlette:
    async def room_events(request):
        room_id = request.path_params["room_id"]
        room = await sse_manager.get_or_create(room_id)

        async def stream():
            async for ev in room.listen():
                yield ev

        return EventStreamResponse(stream())

    async def say(request):  # harness
        room_id, text = request.path_params["room_id"], request.path_params["text"]
        room = await sse_manager.get_or_create(room_id)
        await room.broadcast({"event": "chat", "data": text})
        return JSONResponse({"room": room_id})

    return Starlette(
        routes=[Route("/events/{room_id}", room_events), Route("/say/{room_id}/{text}", say)]
    )


ROOMS = {"lilya": rooms_lilya, "starlette": rooms_starlette}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rooms_do_not_see_each_other(framework: str) -> None:
    app = ROOMS[framework]()
    red, blue = f"red-{uuid.uuid4().hex}", f"blue-{uuid.uuid4().hex}"
    with (
        serve(app, "uvicorn") as url,
        httpx.Client(timeout=WAIT) as alice,
        httpx.Client(timeout=WAIT) as bob,
        httpx.Client(timeout=WAIT) as publisher,
    ):
        with (
            open_stream(alice, f"{url}/events/{red}") as in_red,
            open_stream(bob, f"{url}/events/{blue}") as in_blue,
        ):
            check_stream_headers(in_red.response)
            check_stream_headers(in_blue.response)
            wait_until(lambda: manager_subscribers(red) >= 1, "the red room's subscriber")
            wait_until(lambda: manager_subscribers(blue) >= 1, "the blue room's subscriber")

            # Interleaved; each room ends with "over": an event leaking from the other room
            # would be read before it.
            for room, text in [(red, "r1"), (blue, "b1"), (red, "r2"), (blue, "b2")]:
                assert publisher.get(f"{url}/say/{room}/{text}").json() == {"room": room}
            for room in (blue, red):
                assert publisher.get(f"{url}/say/{room}/over").json() == {"room": room}

            red_events = next_events(in_red.iter_sse(), 3)
            blue_events = next_events(in_blue.iter_sse(), 3)
        assert [(e.event, e.data) for e in red_events] == [
            ("chat", "r1"),
            ("chat", "r2"),
            ("chat", "over"),
        ]
        assert [(e.event, e.data) for e in blue_events] == [
            ("chat", "b1"),
            ("chat", "b2"),
            ("chat", "over"),
        ]

        wait_until(lambda: manager_subscribers(red) == 0, "the red subscriber to leave")
        wait_until(lambda: manager_subscribers(blue) == 0, "the blue subscriber to leave")


# -- 5. Integration with dependencies (Lilya only) -------------------------------------------

AS_WRITTEN_REASON = (
    "Lilya 0.29 does not resolve Depends() defaults of a route handler: the handler is called "
    "without `ch`, so `ch` is the _Depends marker itself and `ch.listen()` raises "
    "AttributeError (the same happens with lilya.contrib.sse.channels)"
)


def dependencies_lilya(variant: str, name: str = "chat") -> Lilya:
    app = Lilya()

    @inject
    async def get_channel() -> SSEChannel:
        return await sse_manager.get_or_create(name)

    if variant == "as-written":

        @app.get("/stream")
        async def stream(ch: SSEChannel = Depends(get_channel)):  # noqa: B008
            async def events():
                async for ev in ch.listen():
                    yield ev

            return EventStreamResponse(events())

    elif variant == "inject-handler":  # the page's handler, also decorated with @inject

        @app.get("/stream")
        @inject
        async def stream(ch: SSEChannel = Depends(get_channel)):  # noqa: B008
            async def events():
                async for ev in ch.listen():
                    yield ev

            return EventStreamResponse(events())

    else:  # "resolve": Lilya's own marker for handler parameters

        @app.get("/stream")
        async def stream(ch: SSEChannel = Resolve(get_channel)):  # noqa: B008
            async def events():
                async for ev in ch.listen():
                    yield ev

            return EventStreamResponse(events())

    @app.get("/say/{text}")  # harness: publish through the same injected factory
    async def say(text: str):
        ch = await get_channel()  # @inject lets plain code call it too
        await ch.broadcast({"event": "chat", "data": text})
        return {"sent": text}

    return app


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            "as-written",
            marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=AS_WRITTEN_REASON),
        ),
        "inject-handler",
        "resolve",
    ],
)
def test_dependency_injection_lilya(variant: str) -> None:
    name = f"chat-{uuid.uuid4().hex}"
    app = dependencies_lilya(variant, name)

    def subscribers() -> int:
        return manager_subscribers(name)

    with (
        serve(app, "uvicorn") as url,
        httpx.Client(timeout=WAIT) as client,
        httpx.Client(timeout=WAIT) as publisher,
    ):
        with open_stream(client, f"{url}/stream") as source:
            check_stream_headers(source.response)
            wait_until(lambda: subscribers() >= 1, "the /stream subscriber")

            for text in ("hi", "there"):
                assert publisher.get(f"{url}/say/{text}").json() == {"sent": text}

            events = next_events(source.iter_sse(), 2)
        assert [(e.event, e.data) for e in events] == [("chat", "hi"), ("chat", "there")]

        wait_until(lambda: subscribers() == 0, "the subscriber to leave")


# -- 6. Heartbeats ---------------------------------------------------------------------------


def heartbeats_lilya() -> Example:
    ch = SSEChannel("idle")

    async def beats():
        async def stream():
            async for event in ch.listen(heartbeat_interval=0.05):  # the page: 10
                yield event

        return EventStreamResponse(stream())

    return Example(Lilya(routes=[Path("/beats", beats)]), lambda: ch.subscriber_count)


def heartbeats_starlette() -> Example:
    ch = SSEChannel("idle")

    async def beats(request):
        async def stream():
            async for event in ch.listen(heartbeat_interval=0.05):
                yield event

        return EventStreamResponse(stream())

    return Example(Starlette(routes=[Route("/beats", beats)]), lambda: ch.subscriber_count)


HEARTBEATS = {"lilya": heartbeats_lilya, "starlette": heartbeats_starlette}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_heartbeats_on_an_idle_channel(framework: str) -> None:
    example = HEARTBEATS[framework]()
    wanted = 4
    with serve(example.app, "uvicorn") as url, httpx.Client(timeout=WAIT) as client:
        with client.stream("GET", f"{url}/beats") as response:
            check_stream_headers(response)
            received = b""
            started = time.monotonic()
            for chunk in response.iter_bytes():
                received += chunk
                if received.count(HEARTBEAT_FRAME) >= wanted:
                    break
                assert time.monotonic() - started < WAIT, f"only {received!r} after {WAIT} s"
            elapsed = time.monotonic() - started
        # Nothing but heartbeat comments (the last one may be cut by the chunking) ...
        assert received.startswith(HEARTBEAT_FRAME * wanted)
        assert (HEARTBEAT_FRAME * (wanted + 8)).startswith(received)
        # ... paced by the interval (at least wanted - 1 intervals), not a flood. The
        # EventStreamResponse's own heartbeats (every 15 s by default) cannot be these.
        assert elapsed >= (wanted - 1) * 0.05 * 0.8

        wait_until(lambda: example.subscribers() == 0, "the subscriber to leave")


# -- the process-wide sse_manager across event loops ----------------------------------------


def test_a_channel_outlives_its_event_loop() -> None:
    """The page's dependency example served twice in one process (as two tests, or an app
    restarted in place, would): the same named channel of ``sse_manager``, a new event loop."""
    name = f"chat-{uuid.uuid4().hex}"
    for round_ in ("first server", "second server"):
        app = dependencies_lilya("inject-handler", name)
        with (
            serve(app, "uvicorn") as url,
            httpx.Client(timeout=WAIT) as client,
            httpx.Client(timeout=WAIT) as publisher,
        ):
            with open_stream(client, f"{url}/stream") as source:
                wait_until(lambda: manager_subscribers(name) >= 1, f"the {round_}'s subscriber")
                assert publisher.get(f"{url}/say/{round_}").json() == {"sent": round_}
                [event] = next_events(source.iter_sse(), 1)
            assert event.data == round_
            wait_until(lambda: manager_subscribers(name) == 0, "the subscriber to leave")
