"""Drive an ASGI callable in-process with our own ``receive``/``send``.

httpx's ASGITransport collects a whole body before returning, so it hangs on an endless
stream; this driver records every message as it is sent and lets a test disconnect the
client, stall it, or break its socket at will.
"""

from __future__ import annotations

from typing import Any

import anyio

from sse_toolkit._types import Message

WAIT = 5.0  # bounded wait for any condition in these tests


class Client:
    def __init__(
        self,
        *,
        method: str = "GET",
        path: str = "/",
        headers: Any = (),
        query: str = "",
        body: bytes = b"",
        root_path: str = "",
        chunk_size: int | None = None,
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": root_path + path,
            "raw_path": (root_path + path).encode(),
            "root_path": root_path,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        self.messages: list[Message] = []
        self.disconnect = anyio.Event()
        self.stall = False  # when set, send blocks until disconnect (a client not reading)
        self.broken = False  # when set, send raises OSError (a dead socket)
        self.broken_body = False  # the same, but only once the response has started
        size = chunk_size or max(len(body), 1)
        self._chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        self._changed = anyio.Event()

    async def receive(self) -> Message:
        if self._chunks:
            chunk = self._chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self._chunks)}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.broken or (self.broken_body and message["type"] == "http.response.body"):
            raise OSError("connection reset")
        if self.stall and message["type"] == "http.response.body":
            await anyio.sleep_forever()
        self.messages.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    # -- reading what was sent -------------------------------------------------------------

    @property
    def start(self) -> Message:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.start["headers"]}

    @property
    def bodies(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.bodies)

    @property
    def finished(self) -> bool:
        bodies = self.bodies
        return bool(bodies) and not bodies[-1].get("more_body", False)

    @property
    def status(self) -> int:
        return int(self.start["status"])

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    async def wait_for(self, predicate: Any, timeout: float = WAIT) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


async def call(app: Any, client: Client) -> Client:
    """Run one request to the end (bounded)."""
    with anyio.fail_after(WAIT):
        await app(client.scope, client.receive, client.send)
    return client


class Stream:
    """A subscriber running in a task group, disconnected on exit."""

    def __init__(self, app: Any, client: Client) -> None:
        self.app, self.client = app, client

    async def __aenter__(self) -> Client:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.app, self.client.scope, self.client.receive, self.client.send)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        self.client.disconnect.set()
        await self._tg.__aexit__(None, None, None)


async def wait_subscribers(manager: Any, name: str, n: int) -> None:
    """Until ``manager``'s channel ``name`` counts ``n`` subscribers (bounded)."""
    with anyio.fail_after(WAIT):
        while (channel := await manager.get(name)) is None or channel.subscriber_count < n:
            await anyio.sleep(0.001)
