"""`RedisBackend`: channels shared by every process and host on one Redis, through Streams.

Each channel is a Redis stream (``<prefix><channel>``). Publishing is an ``XADD`` trimmed
to about the channel's capacity; the stream entry id is the event id, so ids are global
and a client reconnecting to any process replays from its ``Last-Event-ID``. Each process
runs one reader task on one connection: a blocking ``XREAD`` over all the streams it has
channels for, fanning entries out into the local channels (the publishing process's own
included), so every process sees one order per channel.

Failure model:

* Redis down: ``publish`` raises `BackendUnavailable` at once (the sub-app answers 503);
  it is not retried, so an event is never stored twice. What was acknowledged is in Redis.
* The reader never dies on an error: it logs, backs off (50 ms doubling to 5 s, with
  jitter), reconnects and resumes each stream from the last id it delivered, so what was
  published meanwhile arrives, in order, once. Subscribers stay connected meanwhile and
  their heartbeats go on (they come from the channels, not from Redis).
* The backend connects lazily, on first use, so it works in hosts that do not forward
  lifespan to mounted apps; `ChannelManager.close()` closes it.

redis-py's client is asyncio-only: on trio this backend raises a clear `RuntimeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from typing import TYPE_CHECKING, Any, Final

import anyio.lowlevel

from ..frames import ServerSentEvent, id_line
from .base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..channel import SSEChannel

__all__ = ["RedisBackend"]

log = logging.getLogger("sse_toolkit.redis")

_FIRST_DELAY: Final = 0.05
_MAX_DELAY: Final = 5.0
_MAX_CONNECTIONS: Final = 64
_READ_COUNT: Final = 100  # bounds the loop's stall parsing one reply after a burst


class RedisBackend(Backend):
    """Share channels through Redis Streams: ``ChannelManager(backend=RedisBackend(url))``.

    ``url`` takes ``redis://``, ``rediss://`` (TLS) and ``unix://`` forms, with a password
    (``redis://:secret@host:6379/0``). ``prefix`` namespaces the keys. ``maxlen`` bounds
    each stream (default: the channel's capacity, so local replay and Redis agree).
    """

    local = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "sse:",
        maxlen: int | None = None,
        block_ms: int = 5000,
        connect_timeout: float = 2.0,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisBackend needs redis-py: pip install 'sse-toolkit[redis]'"
            ) from exc
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be a positive int or None, not {maxlen!r}")
        if block_ms < 1:
            raise ValueError(f"block_ms must be >= 1, not {block_ms!r}")
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.connect_timeout = connect_timeout
        self._channels: dict[str, SSEChannel] = {}
        self._positions: dict[str, str] = {}  # channel -> last stream id delivered locally
        self._wake_key = f"{prefix}__wake__:{uuid.uuid4().hex}"
        # Read from the last wake-up seen, not "$": a wake-up written after the reader built
        # its list of streams but before Redis ran its XREAD must still end that XREAD.
        self._wake_position = "0-0"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Redis | None = None
        self._reader_client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Bumped by close(): a reader of an older generation stops, even when redis-py
        # turned its cancellation into another error (it does, e.g. during a handshake).
        self._generation = 0
        self.connected = False
        """Whether the reader's last call to Redis succeeded."""
        self.reconnects = 0

    # -- Backend ---------------------------------------------------------------------------

    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        if event.id is not None:
            raise ValueError(
                "id: with RedisBackend every event's id is its Redis stream id; do not set one"
            )
        client = self._ensure()
        fields = _fields(event)
        maxlen = self.maxlen or channel.capacity
        try:
            entry_id = await client.xadd(self._key(channel.name), fields, maxlen=maxlen)
        except Exception as exc:
            raise _unavailable(exc) from exc
        return _event(_text(entry_id), fields)

    async def attach(self, channel: SSEChannel) -> None:
        client = self._ensure()
        name = channel.name
        position = channel.last_id
        if position is None:
            # A new local channel: load what Redis retains, so replay works here too.
            try:
                entries: Any = await client.xrevrange(self._key(name), count=channel.capacity)
            except Exception as exc:
                raise _unavailable(exc) from exc
            for entry_id, fields in reversed(entries or []):
                channel._store(_event(_text(entry_id), fields))
            position = _text(entries[0][0]) if entries else "0-0"
        self._channels[name] = channel
        self._positions[name] = position
        await self._wake_reader()

    async def detach(self, channel: SSEChannel) -> None:
        self.forget(channel)
        # anyio's checkpoint, not asyncio.sleep(0): a manager on trio must still close.
        await anyio.lowlevel.checkpoint()

    def forget(self, channel: SSEChannel) -> None:
        if self._channels.get(channel.name) is channel:
            del self._channels[channel.name]
            del self._positions[channel.name]

    def remember(self, channel: SSEChannel) -> None:
        self._channels[channel.name] = channel
        self._positions[channel.name] = channel.last_id or "0-0"
        self._spawn(self._wake_reader())

    async def close(self) -> None:
        self._generation += 1
        tasks = list(self._tasks)
        if self._reader is not None:
            tasks.append(self._reader)
        for task in tasks:
            task.cancel()
        same_loop = self._loop is not None and self._loop is asyncio.get_running_loop()
        for client in (self._reader_client, self._client):
            if client is not None and same_loop:
                # redis-py finishes a blocking read before it honours a cancellation:
                # closing the sockets under it is what makes the reader stop now.
                with contextlib.suppress(Exception):
                    await client.connection_pool.disconnect(inuse_connections=True)
                with contextlib.suppress(Exception):
                    await client.aclose()
        if tasks and same_loop:
            await asyncio.wait(tasks, timeout=self.connect_timeout)
        self._tasks.clear()
        self._reader = self._client = self._reader_client = None
        self._channels.clear()
        self._positions.clear()
        self._loop = None
        self.connected = False

    # -- connections and the reader --------------------------------------------------------

    def _ensure(self) -> Redis:
        """Clients and reader for the running loop, created on first use."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "RedisBackend runs on asyncio only (redis-py's client is asyncio-only); "
                "on trio, use the in-memory backend"
            ) from None
        if self._loop is not loop:
            # First use, or a new event loop (a restarted server): start afresh.
            self._loop = loop
            self._tasks.clear()
            self._reader = None
            self._client = self._connect(timeout=self.connect_timeout)
            self._reader_client = self._connect(timeout=self.block_ms / 1000 + 5)
        if self._reader is None or self._reader.done():
            if self._reader is not None and not self._reader.cancelled():
                log.error("the Redis reader had stopped (%r); restarting it", self._reader)
            self._reader = loop.create_task(
                self._read_forever(self._generation), name="sse-toolkit redis reader"
            )
        assert self._client is not None
        return self._client

    def _connect(self, *, timeout: float) -> Redis:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {}
        try:
            from redis.maint_notifications import MaintNotificationsConfig
        except ImportError:  # an older redis-py: no such notifications, nothing to turn off
            pass
        else:
            # Left on "auto", redis-py (8.x) skips its check of pooled connections that
            # Redis closed while idle (a restart, CLIENT KILL, its `timeout`), so the next
            # publish failed with BackendUnavailable although Redis was up again.
            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        pool = BlockingConnectionPool.from_url(
            self.url,
            # Publishes beyond this many at once wait for a connection (up to the connect
            # timeout) instead of failing as the default pool does past its size.
            max_connections=_MAX_CONNECTIONS,
            timeout=self.connect_timeout,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=timeout,
            # No retries inside redis-py: a retried XADD whose reply was lost would store
            # the event twice. Publishers get the error; the reader has its own backoff.
            retry=Retry(NoBackoff(), 0),
            **options,
        )
        return Redis(connection_pool=pool)

    def _key(self, channel: str) -> str:
        return f"{self.prefix}{channel}"

    def _spawn(self, coroutine: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:  # no running loop: the reader picks changes up on its next read
            coroutine.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wake_reader(self) -> None:
        """Make the reader's blocking XREAD return, so it reads the new set of streams."""
        if self._client is None:
            return
        try:
            await self._client.xadd(self._wake_key, {"w": "1"}, maxlen=1)
            await self._client.pexpire(self._wake_key, 60_000)
        except Exception:  # down: the reader rebuilds its streams when it reconnects
            pass

    async def _read_forever(self, generation: int) -> None:
        delay = _FIRST_DELAY
        prefix_length = len(self.prefix)
        while self._generation == generation:
            client = self._reader_client
            assert client is not None
            streams: dict[Any, Any] = {self._wake_key: self._wake_position}
            streams.update({self._key(name): pos for name, pos in self._positions.items()})
            try:
                response: Any = await client.xread(streams, count=_READ_COUNT, block=self.block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never die: back off, reconnect, resume
                if self._generation != generation:
                    return  # closed meanwhile
                if self.connected or delay == _FIRST_DELAY:
                    log.warning("Redis reader lost its connection (%s); reconnecting", exc)
                self.connected = False
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_DELAY)
                continue
            if self._generation != generation:
                return  # closed meanwhile: deliver nothing more
            if not self.connected:
                if delay != _FIRST_DELAY:
                    self.reconnects += 1
                    log.warning("Redis reader reconnected; resuming every stream")
                self.connected = True
            delay = _FIRST_DELAY
            for key, entries in response or ():
                if _text(key) == self._wake_key:
                    if entries:
                        self._wake_position = _text(entries[-1][0])
                    continue
                name = _text(key)[prefix_length:]
                channel = self._channels.get(name)
                if channel is None:
                    continue  # the wake stream, or a channel forgotten meanwhile
                for entry_id, fields in entries:
                    position = _text(entry_id)
                    self._positions[name] = position
                    try:
                        channel._store(_event(position, fields))
                    except Exception as exc:  # a closed channel, or an entry we did not write
                        log.warning("skipping Redis entry %s of %r: %s", position, name, exc)


def _unavailable(exc: Exception) -> Exception:
    from redis.exceptions import ConnectionError, TimeoutError

    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return BackendUnavailable(f"Redis is unavailable: {exc}")
    return exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(event: ServerSentEvent) -> dict[Any, Any]:
    """A stream entry: the frame (without id) plus what rebuilds the event's attributes."""
    fields: dict[Any, Any] = {"f": event.encode()}
    data = event.data
    if isinstance(data, str):
        fields["t"], fields["d"] = "s", data
    elif data is not None:
        # What other processes see as `.data`; the frame itself keeps the exact encoding.
        fields["t"], fields["d"] = "j", json.dumps(data, separators=(",", ":"), default=str)
    if event.event is not None:
        fields["e"] = event.event
    if event.retry is not None:
        fields["r"] = str(event.retry)
    if event.comment is not None:
        fields["c"] = event.comment
    return fields


def _event(entry_id: str, fields: Any) -> ServerSentEvent:
    def get(name: str) -> str | None:
        value = fields.get(name, fields.get(name.encode()))
        return None if value is None else _text(value)

    frame = fields.get("f", fields.get(b"f"))
    if not isinstance(frame, (bytes, bytearray)):
        raise ValueError("not an sse-toolkit entry")
    kind, text = get("t"), get("d")
    data = text if kind == "s" else json.loads(text) if kind == "j" and text is not None else None
    retry = get("r")
    return ServerSentEvent._from_encoded(
        id_line(entry_id) + bytes(frame),
        data,
        event=get("e"),
        id=entry_id,
        retry=int(retry) if retry is not None else None,
        comment=get("c"),
    )
