"""`RedisBackend`: channels shared by every process and host on one Redis, through Streams.

Each channel is a Redis stream (``<prefix><channel>``). Publishing appends an entry (a
small Lua script: ``XADD`` trimmed to about the channel's capacity, numbered, and its
expiry refreshed); the stream entry id is the event id, so ids are global and a client
reconnecting to any process replays from its ``Last-Event-ID``. Each process runs one
reader on one connection: a blocking ``XREAD`` over all the streams it has channels for,
fanning entries out into the local channels (the publishing process's own included), so
every process sees one order per channel. ``publish`` returns once this process's channel
holds the new entry (and every entry before it), so replay from the returned id works at
once, here as anywhere.

Failure model:

* Redis down: ``publish`` raises `BackendUnavailable` at once (the sub-app answers 503);
  it is not retried, so an event is never stored twice. What was acknowledged is in Redis.
* The reader never dies on an error: it logs, backs off (50 ms doubling to 5 s, with
  jitter), reconnects and resumes each stream from the last id it delivered, so what was
  published meanwhile arrives, in order, once. Subscribers stay connected meanwhile and
  their heartbeats go on (they come from the channels, not from Redis).
* Entries trimmed before this process read them (it was cut off, or behind) are not
  skipped silently: every entry carries its number
  in the stream (``n``), and a jump tells the channel exactly how many it missed
  (``SSEChannel.note_gap``), so its listeners get ``sse.lagged`` (or, under
  ``lag_policy="close"``, their streams end). A stream that starts over (it expired, or
  Redis lost its data) after this process lost track of it counts as an unknown gap.
* A channel the manager evicted is still read while anything references it (an app that
  fetched it once and holds it): it keeps working as with the in-memory backend. The
  backend holds channels weakly, so one nobody references is no longer read.
* The backend connects lazily, on first use, so it works in hosts that do not forward
  lifespan to mounted apps. Its tasks (the reader, wake-ups) run in one anyio task group
  held by one owner task per event loop; ``ChannelManager.close()`` closes the backend,
  which cancels that task group and waits for it.

redis-py's client is asyncio-only: on trio this backend raises a clear `RuntimeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import anyio.lowlevel

from ..frames import ServerSentEvent, id_line
from .base import Backend, BackendUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from ..channel import SSEChannel

__all__ = ["DEFAULT_STREAM_TTL", "RedisBackend"]

log = logging.getLogger("sse_toolkit.redis")

DEFAULT_STREAM_TTL: Final = 86_400.0
"""Seconds an idle stream (no publish) lives in Redis: a day, far beyond any reconnect."""

_FIRST_DELAY: Final = 0.05
_MAX_DELAY: Final = 5.0
_MAX_CONNECTIONS: Final = 64
_READ_COUNT: Final = 100  # bounds the loop's stall parsing one reply after a burst
HEALTH_TIMEOUT: Final = 1.0
"""Seconds `RedisBackend.health` waits for Redis to answer its PING."""
HEALTH_CACHE: Final = 1.0
"""Seconds a `RedisBackend.health` answer is reused: one PING a second at most."""
_OWNER_TASK: Final = "sse-toolkit redis backend"
_READER_TASK: Final = "sse-toolkit redis reader"

# KEYS[1]: the stream; ARGV: maxlen, expiry in ms (0: none), where this process stands in
# the stream ("": not attached here), then the entry's fields. The entry's number ("n",
# first field) is one more than the newest entry's: readers find trimmed entries they
# never saw as a jump, and count them exactly. Numbering from the stream itself keeps one
# key per channel, so the stream's expiry is the whole story. The reply: the new id, and
# the entries from where this process stands up to the new one (at most _CATCH_UP + 1),
# so that publish delivers them here at once, in stream order, without waiting for the
# reader (which skips them later).
_PUBLISH_SCRIPT: Final = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local n = 1
if newest and newest[2][1] == 'n' then n = tonumber(newest[2][2]) + 1 end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', n, unpack(ARGV, 4))
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local since = false
if ARGV[3] ~= '' then
  since = redis.call('XRANGE', KEYS[1], ARGV[3], '+', 'COUNT', %d)
end
return {id, since}
"""
_CATCH_UP: Final = 64  # = the pool: publishes in flight here; past that, the reader delivers

StreamId = tuple[int, int]


class _Cursor:
    """Where this process stands in one channel's stream.

    It holds its channel weakly: the manager (or the app) keeps the channels that matter
    alive; one nobody references any more is no longer read (see `_prune`).
    """

    __slots__ = ("_channel", "id", "key", "n", "resumed")

    def __init__(self, channel: SSEChannel, entry_id: str, n: int | None, *, resumed: bool):
        self._channel = weakref.ref(channel)
        self.id = entry_id  # the newest entry delivered into the channel ("0-0": none)
        self.key = _id_key(entry_id)  # the same, to compare numerically
        self.n = n  # its number in the stream, None if unknown
        # Reading goes on from a saved position (after a reconnect, or the channel was
        # attached again): a stream that started over may have lost entries for us.
        self.resumed = resumed

    @property
    def channel(self) -> SSEChannel | None:
        """The channel delivered into; None once nobody references it."""
        return self._channel()


_URL_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class RedisBackend(Backend):
    """Share channels through Redis Streams: ``ChannelManager(backend=RedisBackend(url))``.

    ``url`` takes ``redis://``, ``rediss://`` (TLS) and ``unix://`` forms, with a password
    (``redis://:secret@host:6379/0``). ``prefix`` namespaces the keys. ``maxlen`` bounds
    each stream (default: the channel's capacity, so local replay and Redis agree).
    ``stream_ttl`` (seconds, default `DEFAULT_STREAM_TTL`, one day) is how long a stream
    nobody publishes to stays in Redis: every publish renews it, so per-user or per-room
    channels that fell silent do not keep keys forever; ``None`` keeps streams forever.
    A client reconnecting after its stream expired gets ``sse.reset``, as for any id
    that is no longer retained.
    """

    local = False
    kind = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "sse:",
        maxlen: int | None = None,
        block_ms: int = 5000,
        connect_timeout: float = 2.0,
        stream_ttl: float | None = DEFAULT_STREAM_TTL,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "RedisBackend needs redis-py: pip install 'sse-toolkit[redis]'"
            ) from exc
        if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
            scheme = url.partition("://")[0] if isinstance(url, str) else type(url).__name__
            raise ValueError(f"url must be a redis://, rediss:// or unix:// URL, not {scheme!r}")
        if maxlen is not None and (type(maxlen) is not int or maxlen < 1):
            raise ValueError(f"maxlen must be a positive int or None, not {maxlen!r}")
        if type(block_ms) is not int or block_ms < 1:
            raise ValueError(f"block_ms must be an int >= 1, not {block_ms!r}")
        if not _positive_number(connect_timeout):
            raise ValueError(f"connect_timeout must be > 0 seconds, not {connect_timeout!r}")
        if stream_ttl is not None and not _positive_number(stream_ttl):
            raise ValueError(f"stream_ttl must be > 0 seconds or None, not {stream_ttl!r}")
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.connect_timeout = connect_timeout
        self.stream_ttl = stream_ttl
        self._ttl_ms = "0" if stream_ttl is None else str(max(1, math.ceil(stream_ttl * 1000)))
        # By channel name: the channels read here, evicted ones still referenced included.
        self._cursors: dict[str, _Cursor] = {}
        self._wake_key = f"{prefix}__wake__:{uuid.uuid4().hex}"
        # Read from the last wake-up seen, not "$": a wake-up written after the reader built
        # its list of streams but before Redis ran its XREAD must still end that XREAD.
        self._wake_position = "0-0"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._client: Redis | None = None
        self._reader_client: Redis | None = None
        self._publish_script: AsyncScript | None = None
        self._owner: asyncio.Task[None] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._read_done: anyio.Event | None = None  # set (and replaced) after each read
        self._backing_off = False
        # Bumped by close(): a reader of an older generation stops, even when redis-py
        # turned its cancellation into another error (it does, e.g. during a handshake).
        self._generation = 0
        self.connected = False
        """Whether the reader's last call to Redis succeeded."""
        self.reconnects = 0
        """Times the reader reconnected after losing its connection (for metrics)."""
        self._read_at: float | None = None  # time.monotonic() of the reader's last read
        # health(): the last answer, when it was had, and the PING in flight (if one is).
        self.health_timeout = HEALTH_TIMEOUT
        self.health_cache = HEALTH_CACHE
        self._health: str | None = None
        self._health_at = -math.inf
        self._health_pinging: anyio.Event | None = None

    # -- Backend ---------------------------------------------------------------------------

    async def publish(self, channel: SSEChannel, event: ServerSentEvent) -> ServerSentEvent:
        if event.id is not None:
            raise ValueError(
                "id: with RedisBackend every event's id is its Redis stream id; do not set one"
            )
        self._ensure()
        assert self._publish_script is not None
        fields = _fields(event)
        cursor = self._cursors.get(channel.name)
        if cursor is not None and cursor.channel is not channel:
            cursor = None  # not attached here: nothing reads it into this object
        args: list[Any] = [self.maxlen or channel.capacity, self._ttl_ms]
        args.append(cursor.id if cursor is not None else "")
        for item in fields.items():
            args += item
        try:
            reply = await self._publish_script(keys=[self._key(channel.name)], args=args)
        except Exception as exc:
            raise _unavailable(exc) from exc
        entry_id = _text(reply[0])
        if cursor is not None and cursor.key < _id_key(entry_id):
            since = reply[1] or []
            if (
                since
                and _text(since[-1][0]) == entry_id
                and self._cursors.get(channel.name) is cursor
            ):
                # From where we stood to the new entry, complete: deliver it all now.
                self._deliver(cursor, [(key, _pairs(flat)) for key, flat in since])
            else:
                await self._catch_up(channel, entry_id)  # far behind: the reader delivers
        return _event(entry_id, fields)

    async def attach(self, channel: SSEChannel) -> None:
        client = self._ensure()
        name = channel.name
        cursor = self._cursors.get(name)
        if cursor is not None and cursor.channel is channel:
            # Read all along (an evicted channel the app held, brought back): nothing to do.
            await anyio.lowlevel.checkpoint()
            return
        if channel.last_id is None:
            # A new local channel: load what Redis retains, so replay works here too.
            try:
                entries: Any = await client.xrevrange(self._key(name), count=channel.capacity)
            except Exception as exc:
                raise _unavailable(exc) from exc
            if entries:
                # The entries before the oldest loaded one (trimmed, or past this ring's
                # capacity) are not here: a replay from before the first event is told.
                first = _number(entries[-1][1])
                if first is not None and first > 1:
                    channel.note_gap(first - 1)
            for entry_id, fields in reversed(entries or []):
                _deliver_event(channel, _event(_text(entry_id), fields))
            if entries:
                cursor = _Cursor(
                    channel, _text(entries[0][0]), _number(entries[0][1]), resumed=False
                )
            else:
                cursor = _Cursor(channel, "0-0", 0, resumed=False)  # the next entry is n=1
            self._cursors[name] = cursor
        else:
            self._resume(channel)
        await self._wake_reader()

    async def detach(self, channel: SSEChannel) -> None:
        cursor = self._cursors.get(channel.name)
        if cursor is not None and cursor.channel is channel:
            del self._cursors[channel.name]
        # anyio's checkpoint, not asyncio.sleep(0): a manager on trio must still close.
        await anyio.lowlevel.checkpoint()

    def forget(self, channel: SSEChannel) -> None:
        """The manager evicted ``channel``: keep delivering into it while it is referenced.

        The app may hold the object (``get_or_create`` once, use it later): its listeners,
        its replay and its own broadcasts must keep working, as with the in-memory backend.
        Cursors hold channels weakly, so once nobody references it, it is no longer read.
        """

    def remember(self, channel: SSEChannel) -> None:
        """Deprecated (the manager calls `attach` again): deliver into ``channel`` again."""
        cursor = self._cursors.get(channel.name)
        if cursor is not None and cursor.channel is channel:
            return
        self._resume(channel)
        if self._task_group is not None:
            self._task_group.start_soon(self._wake_reader)
        # else: the reader has not started yet; its first read includes this channel

    def loop_token(self) -> anyio.lowlevel.EventLoopToken | None:
        """The event loop this backend's connections and reader run on (None: not yet).

        What a publish from another thread must run on (`SSEChannel.broadcast_from_thread`).
        """
        return self._token

    def reading(self) -> list[str]:
        """Names of the channels this process reads from Redis (for diagnostics, tests)."""
        return list(self._cursors)

    def seconds_since_read(self) -> float | None:
        """Seconds since the reader's last completed read (None before the first): its
        blocking XREAD returns at least every ``block_ms`` when idle, so much more means
        it is stuck or reconnecting. Read-only, for metrics."""
        read_at = self._read_at
        return None if read_at is None else time.monotonic() - read_at

    async def close(self) -> None:
        self._generation += 1
        owner, task_group = self._owner, self._task_group
        try:
            same_loop = self._loop is not None and self._loop is asyncio.get_running_loop()
        except RuntimeError:  # on trio: nothing of ours can be running here
            same_loop = False
        if same_loop:
            if task_group is not None:
                task_group.cancel_scope.cancel()
            elif owner is not None:
                owner.cancel()  # not started yet
            for client in (self._reader_client, self._client):
                if client is not None:
                    # redis-py finishes a blocking read before it honours a cancellation:
                    # closing the sockets under it is what makes the reader stop now.
                    with contextlib.suppress(Exception):
                        await client.connection_pool.disconnect(inuse_connections=True)
                    with contextlib.suppress(Exception):
                        await client.aclose()
            if owner is not None:
                await asyncio.wait([owner], timeout=self.connect_timeout)
        self._owner = self._task_group = self._read_done = None
        self._client = self._reader_client = self._publish_script = None
        self._cursors.clear()
        self._loop = self._token = None
        self.connected = False

    # -- health and presence ---------------------------------------------------------------

    async def health(self) -> str | None:
        """None if Redis answers a PING within ``health_timeout`` (1 s), else why not.

        The answer is reused for ``health_cache`` seconds (1 s), and callers arriving while
        a PING is in flight wait for it: a load balancer polling every 100 ms costs at most
        one PING a second per process.
        """
        if time.monotonic() - self._health_at < self.health_cache:
            await anyio.lowlevel.checkpoint()
            return self._health
        pinging = self._health_pinging
        if pinging is not None:
            await pinging.wait()
            return self._health
        pinging = self._health_pinging = anyio.Event()
        try:
            client = self._ensure()
            reason: str | None
            try:
                with anyio.fail_after(self.health_timeout):
                    await client.ping()
            except TimeoutError:
                reason = f"Redis did not answer a PING within {self.health_timeout:g} s"
            except Exception as exc:
                reason = f"Redis is unavailable: {exc}"
            else:
                reason = None
            self._health, self._health_at = reason, time.monotonic()
            return reason
        finally:
            self._health_pinging = None
            pinging.set()

    def _presence_key(self, channel: str) -> str:
        # "_presence:" cannot be a channel's key: channel names do not start with "_" (and
        # the internal channels of presence events are "_presence.<channel>").
        return f"{self.prefix}_presence:{channel}"

    async def write_presence(
        self, member: str, entries: Mapping[str, str | None], ttl: float
    ) -> None:
        """``HSET <prefix>_presence:<channel> <member> <entry>`` (``HDEL`` for None), and
        the hash's expiry set to ``ttl``, for every channel in one pipeline."""
        if not entries:
            await anyio.lowlevel.checkpoint()
            return
        client = self._ensure()
        ttl_ms = max(1, math.ceil(ttl * 1000))
        try:
            async with client.pipeline(transaction=False) as pipe:
                for channel, entry in entries.items():
                    key = self._presence_key(channel)
                    if entry is None:
                        pipe.hdel(key, member)
                    else:
                        pipe.hset(key, member, entry)
                        pipe.pexpire(key, ttl_ms)
                await pipe.execute()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def read_presence(self, channel: str) -> dict[str, str]:
        client = self._ensure()
        try:
            fields: Any = await client.hgetall(self._presence_key(channel))
        except Exception as exc:
            raise _unavailable(exc) from exc
        return {_text(member): _text(entry) for member, entry in (fields or {}).items()}

    async def drop_presence(self, channel: str, members: list[str]) -> None:
        if not members:
            await anyio.lowlevel.checkpoint()
            return
        client = self._ensure()
        try:
            await client.hdel(self._presence_key(channel), *members)
        except Exception as exc:
            raise _unavailable(exc) from exc

    # -- delivering ------------------------------------------------------------------------

    def _resume(self, channel: SSEChannel) -> None:
        """Deliver into ``channel`` again, from where it stands (not read here meanwhile:
        its number in the stream is unknown, so a gap up to the next entry goes unseen)."""
        last_id = channel.last_id or "0-0"
        self._cursors[channel.name] = _Cursor(channel, last_id, None, resumed=True)

    def _prune(self) -> None:
        """Stop reading the streams of channels nobody references any more, or closed."""
        for name, cursor in list(self._cursors.items()):
            channel = cursor.channel
            if channel is None or channel.closed:
                del self._cursors[name]

    def _deliver(self, cursor: _Cursor, entries: Any) -> None:
        """Deliver stream entries, oldest first, skipping those delivered already, and
        telling the channel about entries it can no longer get."""
        channel = cursor.channel
        if channel is None:
            return  # nobody references it any more
        for entry_id, fields in entries:
            position = _text(entry_id)
            key = _id_key(position)
            if key <= cursor.key:
                continue  # delivered already (by the reader, or by a publish catching up)
            n = _number(fields)
            gap = False
            missed: int | None = None
            if n is not None and cursor.n is not None:
                if n > cursor.n + 1:
                    gap, missed = True, n - cursor.n - 1
                elif n <= cursor.n and cursor.resumed:
                    gap = True  # the stream started over while we were away: unknown
            cursor.id, cursor.key, cursor.n, cursor.resumed = position, key, n, False
            if gap:
                log.warning(
                    "channel %r: %s entries trimmed from Redis before this process read them",
                    channel.name,
                    "unknown" if missed is None else missed,
                )
                channel.note_gap(missed)
            try:
                event = _event(position, fields)
            except ValueError as exc:  # an entry we did not write
                log.warning("skipping Redis entry %s of %r: %s", position, channel.name, exc)
                continue
            _deliver_event(channel, event)

    async def _catch_up(self, channel: SSEChannel, entry_id: str) -> None:
        """Return once ``channel`` holds the entry just published, and all before it.

        The reader delivers it (it reads every stream of ours, in order); if it does not
        within ``connect_timeout`` (it is reconnecting, say), fetch up to it here, through
        the same deduplicating delivery.
        """
        target = _id_key(entry_id)
        cursor = self._cursors.get(channel.name)
        if cursor is None or cursor.channel is not channel or cursor.key >= target:
            return  # not attached (nothing reads it here), or delivered already
        with anyio.move_on_after(self.connect_timeout):
            while not self._backing_off and self._cursors.get(channel.name) is cursor:
                read_done = self._read_done
                if cursor.key >= target or read_done is None:
                    break
                await read_done.wait()
        if cursor.key >= target or self._cursors.get(channel.name) is not cursor:
            return
        client = self._client
        if client is None:
            return
        try:
            entries: Any = await client.xrevrange(
                # From the cursor's own entry on (skipped): no "(" ranges, older Redis too.
                self._key(channel.name),
                max=entry_id,
                min=cursor.id,
                count=channel.capacity + 1,
            )
        except Exception as exc:  # stored in Redis all the same: the reader delivers it later
            log.warning("could not fetch Redis entry %s of %r: %s", entry_id, channel.name, exc)
            return
        if self._cursors.get(channel.name) is cursor:
            self._deliver(cursor, reversed(entries or []))

    # -- connections and the reader --------------------------------------------------------

    def _ensure(self) -> Redis:
        """Clients, and the task owning the reader, for the running loop; made on first use."""
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
            self._token = anyio.lowlevel.current_token()
            self._owner = self._task_group = None
            self._client = self._connect(timeout=self.connect_timeout)
            self._reader_client = self._connect(timeout=self.block_ms / 1000 + 5)
            self._publish_script = self._client.register_script(_PUBLISH_SCRIPT % (_CATCH_UP + 2))
            self._read_done = anyio.Event()
        if self._owner is None or self._owner.done():
            if self._owner is not None and not self._owner.cancelled():
                log.error("the Redis backend's tasks had stopped (%r); restarting", self._owner)
            self._owner = loop.create_task(self._own(self._generation), name=_OWNER_TASK)
        assert self._client is not None
        return self._client

    async def _own(self, generation: int) -> None:
        """Hold this loop's task group: the reader, and wake-ups; close() cancels it."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            try:
                task_group.start_soon(self._read_forever, generation, name=_READER_TASK)
                await anyio.sleep_forever()
            finally:
                if self._task_group is task_group:
                    self._task_group = None

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

    async def _wake_reader(self) -> None:
        """Make the reader's blocking XREAD return, so it reads the new set of streams."""
        if self._client is None:
            return
        try:
            await self._client.xadd(self._wake_key, {"w": "1"}, maxlen=1)
            await self._client.pexpire(self._wake_key, 60_000)
        except Exception:  # down: the reader rebuilds its streams when it reconnects
            pass

    def _read_finished(self) -> None:
        """Wake publishes waiting for the reader (see _catch_up)."""
        read_done = self._read_done
        if read_done is not None:
            self._read_done = anyio.Event()
            read_done.set()

    async def _read_forever(self, generation: int) -> None:
        delay = _FIRST_DELAY
        prefix_length = len(self.prefix)
        while self._generation == generation:
            client = self._reader_client
            assert client is not None
            self._prune()
            streams: dict[Any, Any] = {self._key(name): c.id for name, c in self._cursors.items()}
            streams[self._wake_key] = self._wake_position
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
                for cursor in self._cursors.values():
                    cursor.resumed = True
                self._backing_off = True
                self._read_finished()
                try:
                    await anyio.sleep(delay * (0.5 + random.random()))
                finally:
                    self._backing_off = False
                delay = min(delay * 2, _MAX_DELAY)
                continue
            if self._generation != generation:
                return  # closed meanwhile: deliver nothing more
            if not self.connected:
                if delay != _FIRST_DELAY:
                    self.reconnects += 1
                    log.warning("Redis reader reconnected; resuming every stream")
                self.connected = True
            self._read_at = time.monotonic()
            delay = _FIRST_DELAY
            for key, entries in response or ():
                name = _text(key)
                if name == self._wake_key:
                    if entries:
                        self._wake_position = _text(entries[-1][0])
                    continue
                reading = self._cursors.get(name[prefix_length:])
                if reading is not None:  # else a channel forgotten meanwhile
                    self._deliver(reading, entries)
            self._read_finished()


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def _unavailable(exc: Exception) -> Exception:
    from redis.exceptions import ConnectionError, TimeoutError

    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return BackendUnavailable(f"Redis is unavailable: {exc}")
    return exc


def _deliver_event(channel: SSEChannel, event: ServerSentEvent) -> None:
    try:
        channel.deliver(event)
    except Exception as exc:  # a closed channel: nobody to deliver to
        log.debug("not delivered into %r: %s", channel.name, exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> StreamId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A Lua reply's [field, value, ...] as the dict redis-py makes of XRANGE's."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _number(fields: Any) -> int | None:
    """An entry's number in its stream (None for entries written without one)."""
    value = fields.get(b"n", fields.get("n"))
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


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
    return ServerSentEvent.from_frame(
        id_line(entry_id) + bytes(frame),
        data,
        event=get("e"),
        id=entry_id,
        retry=int(retry) if retry is not None else None,
        comment=get("c"),
    )
