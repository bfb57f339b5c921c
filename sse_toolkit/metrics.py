"""Prometheus metrics: `Metrics`, what ``SSEApp(metrics=True)`` serves at ``GET /_metrics``.

Nothing here runs on the hot path. Streams and channels keep plain ints and floats of their
own (`EventStreamResponse`: bytes sent, why it ended, a `LatencyHistogram` of plain ints;
channels: published, lagged, skipped, resets; listeners: delivered, filtered), and the app
counts its refusals and replay requests. A scrape reads all of it through one custom
collector (`prometheus_client.registry.Collector`): not a single ``prometheus_client`` call
is made per publish, per batch or per stream.

Two ways to expose it:

- ``SSEApp(metrics=True)`` (or ``metrics=Metrics(per_channel=True)``): ``GET /_metrics`` in
  the Prometheus text format (OpenMetrics when the scraper asks for it), guarded like
  ``/_stats`` (with a secret, a token with the ``stats`` grant);
- ``registry.register(metrics.collector)``: the same families on an app's own
  ``CollectorRegistry`` (next to its other metrics, served however it serves them).

Every family, its type and labels are listed in the docs ("Operating it"). Counters that
come from channels (published, lagged, skipped, resets, gaps) are read at scrape time; a
channel the manager evicted keeps its last scraped counts in the totals (eviction only
happens to channels idle for ``retention``, so nothing counted is lost in practice).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from .response import CLOSE_REASONS, LatencyHistogram, StreamState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    from .channel import SSEChannel
    from .manager import ChannelManager

__all__ = [
    "CLOSE_REASONS",
    "DEFAULT_LATENCY_BUCKETS",
    "DEFAULT_LATENCY_INTERVAL",
    "ROUTES",
    "Metrics",
    "route_of",
]

DEFAULT_LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the publish-to-write histogram: 100 µs to 10 s."""

DEFAULT_LATENCY_INTERVAL: Final = 0.01
"""A stream observes its publish-to-write latency at most this often (seconds): every
batch of a stream that writes less often, a sample of them at saturation (the cost)."""

ROUTES: Final = ("subscribe", "publish", "stats", "metrics", "health", "presence", "other")
"""The ``route`` label of ``sse_http_errors_total``."""

_NAMESPACE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_CHANNEL_COUNTS: Final = ("published", "dropped", "lagged", "resets", "gaps")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "metrics need prometheus_client: pip install 'sse-toolkit[metrics]'"
        ) from exc
    return prometheus_client


def route_of(method: str, route_path: str) -> str:
    """The ``route`` label of a request's error: one of `ROUTES` (bounded cardinality)."""
    if route_path.startswith("/_"):
        name = route_path[2:].partition("/")[0]
        return name if name in ROUTES else "other"
    if method == "POST":
        return "publish"
    if method in ("GET", "HEAD"):
        return "subscribe"
    return "other"


class _StreamRecord:
    """The `StreamObserver` of one stream of an `SSEApp` (made per subscribe request)."""

    __slots__ = ("channels", "latency", "metrics", "names", "stream")

    def __init__(self, metrics: Metrics, channels: Sequence[SSEChannel]) -> None:
        self.metrics = metrics
        self.channels = tuple(channels)
        self.names = tuple(dict.fromkeys(channel.name for channel in channels))
        self.latency: LatencyHistogram | None = metrics.latency
        self.stream: StreamState | None = None

    def opened(self, stream: StreamState) -> None:
        self.stream = stream
        metrics = self.metrics
        with metrics._lock:
            metrics._open[self] = None
            metrics.streams_opened += 1

    def closed(self, stream: StreamState) -> None:
        reason = stream.close_reason or "source_ended"
        channels = self.channels
        if (
            reason == "source_ended"
            and not any(channel.closed for channel in channels)
            and any(channel.lag_policy == "close" for channel in channels)
        ):
            # A listener ends only when its channel closes, or when it lags under
            # lag_policy="close" (the response closes it only after it ended).
            reason = "lag"
        delivered, filtered = _deliveries(stream.response.content)
        metrics = self.metrics
        with metrics._lock:
            metrics._open.pop(self, None)
            metrics.streams_closed[reason] = metrics.streams_closed.get(reason, 0) + 1
            metrics._closed_bytes += stream.bytes_sent
            metrics._closed_delivered += delivered
            metrics._closed_filtered += filtered


def _deliveries(source: object) -> tuple[int, int]:
    """Events a stream's source handed over and filtered out (0 for sources that do not
    count: plain iterables)."""
    delivered = getattr(source, "delivered", 0)
    filtered = getattr(source, "filtered", 0)
    return (
        delivered if type(delivered) is int else 0,
        filtered if type(filtered) is int else 0,
    )


class Metrics:
    """The metrics of one or more `SSEApp`s (their streams, channels and backends).

    ``per_channel``: label ``sse_streams_open`` by channel (off by default: one series per
    channel name is unbounded cardinality when names are per user or per room).
    ``namespace`` prefixes every family (``sse_...``). ``latency_buckets``: the upper
    bounds, in seconds, of the publish-to-write histogram; ``latency_interval``: each
    stream observes it at most that often (default 10 ms; 0: every batch).

    ``SSEApp(metrics=...)`` attaches it; `render` gives the exposition, and `collector` is
    what a ``CollectorRegistry`` of the app's own registers. Needs ``prometheus_client``
    (the ``metrics`` extra): an `ImportError` saying so otherwise, here.
    """

    def __init__(
        self,
        *,
        per_channel: bool = False,
        namespace: str = "sse",
        latency_buckets: Iterable[float] = DEFAULT_LATENCY_BUCKETS,
        latency_interval: float = DEFAULT_LATENCY_INTERVAL,
    ) -> None:
        _prometheus()
        if type(per_channel) is not bool:
            raise TypeError(f"per_channel must be a bool, not {per_channel!r}")
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(f"namespace must be a Prometheus metric name, not {namespace!r}")
        self.per_channel = per_channel
        self.namespace = namespace
        self.latency = LatencyHistogram(latency_buckets, latency_interval)
        self._lock = threading.Lock()
        self._managers: list[ChannelManager] = []
        self._open: dict[_StreamRecord, None] = {}  # (insertion-ordered set)
        self.streams_opened = 0
        self.streams_closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self._closed_bytes = 0
        self._closed_delivered = 0
        self._closed_filtered = 0
        self.replay_requests = 0
        self.errors: dict[tuple[str, int], int] = {}
        # Channel counters as last scraped (manager id, name) -> counts, and the counts of
        # channels gone since (evicted, removed, or replaced by a new object).
        self._seen: dict[tuple[int, str], tuple[int, ...]] = {}
        self._gone = [0] * len(_CHANNEL_COUNTS)
        self._collector: Collector | None = None
        self._registry: CollectorRegistry | None = None

    def __repr__(self) -> str:
        return f"Metrics(per_channel={self.per_channel}, namespace={self.namespace!r})"

    # -- what the app calls (never per event) -----------------------------------------------

    def watch(self, manager: ChannelManager) -> None:
        """Count ``manager``'s channels and backend (an `SSEApp` calls it for its own)."""
        with self._lock:
            if all(m is not manager for m in self._managers):
                self._managers.append(manager)

    def observer(self, channels: Sequence[SSEChannel], *, replay: bool = False) -> _StreamRecord:
        """The `StreamObserver` for one stream of ``channels`` (``replay``: it came with a
        ``Last-Event-ID``)."""
        if replay:
            with self._lock:
                self.replay_requests += 1
        return _StreamRecord(self, channels)

    def count_error(self, route: str, status: int) -> None:
        """An error response (4xx/5xx) on ``route`` (see `route_of`)."""
        key = (route, status)
        with self._lock:
            self.errors[key] = self.errors.get(key, 0) + 1

    # -- reading ----------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return len(self._open)

    @property
    def collector(self) -> Collector:
        """A ``prometheus_client`` collector of these metrics: ``registry.register(it)``."""
        if self._collector is None:
            self._collector = _collector_class()(self)
        return self._collector

    @property
    def registry(self) -> CollectorRegistry:
        """A registry holding only `collector` (what `render` exposes)."""
        if self._registry is None:
            from prometheus_client.registry import CollectorRegistry

            registry = CollectorRegistry(auto_describe=True)
            registry.register(self.collector)
            self._registry = registry
        return self._registry

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: the Prometheus text format, or OpenMetrics
        when ``accept`` (the scraper's ``Accept`` header) asks for it."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def describe(self) -> Iterator[Metric]:
        """The families `collect` yields, without samples (a registry checks names)."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        """Every family, read from the streams, channels and backends now."""
        return self._families(self._snapshot())

    # -- the families -----------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            records = list(self._open)
            managers = list(self._managers)
            snapshot: dict[str, Any] = {
                "opened": self.streams_opened,
                "closed": dict(self.streams_closed),
                "bytes": self._closed_bytes,
                "delivered": self._closed_delivered,
                "filtered": self._closed_filtered,
                "replays": self.replay_requests,
                "errors": dict(self.errors),
            }
        per_channel: dict[str, int] = {}
        for record in records:
            stream = record.stream
            if stream is None:
                continue
            snapshot["bytes"] += stream.bytes_sent
            delivered, filtered = _deliveries(stream.response.content)
            snapshot["delivered"] += delivered
            snapshot["filtered"] += filtered
            for name in record.names:
                per_channel[name] = per_channel.get(name, 0) + 1
        snapshot["open"] = len(records)
        snapshot["per_channel"] = per_channel
        snapshot["channels"], snapshot["counts"] = self._channel_counts(managers)
        snapshot["backends"] = _backends(managers)
        hist = self.latency
        snapshot["latency"] = (list(hist.counts), hist.sum)
        return snapshot

    def _channel_counts(self, managers: list[ChannelManager]) -> tuple[int, list[int]]:
        """Live channels, and totals of the channel counters (gone channels included)."""
        current: dict[tuple[int, str], tuple[int, ...]] = {}
        for manager in managers:
            stats = manager.stats()["per_channel"]
            for name, channel in stats.items():
                current[id(manager), name] = tuple(channel[key] for key in _CHANNEL_COUNTS)
        with self._lock:
            gone, seen = self._gone, self._seen
            for key, before in seen.items():
                now = current.get(key)
                if now is None or now[0] < before[0]:  # gone, or a new channel of that name
                    for i, value in enumerate(before):
                        gone[i] += value
            self._seen = current
            totals = list(gone)
        for counts in current.values():
            for i, value in enumerate(counts):
                totals[i] += value
        return len(current), totals

    def _families(self, snap: dict[str, Any] | None) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        ns = self.namespace

        def counter(name: str, doc: str, value: float | None, labels: Sequence[str] = ()) -> Any:
            family = CounterMetricFamily(f"{ns}_{name}", doc, labels=labels or None)
            if value is not None and not labels:
                family.add_metric([], value)
            return family

        def gauge(name: str, doc: str, value: float | None, labels: Sequence[str] = ()) -> Any:
            family = GaugeMetricFamily(f"{ns}_{name}", doc, labels=labels or None)
            if value is not None and not labels:
                family.add_metric([], value)
            return family

        def get(key: str) -> Any:
            return None if snap is None else snap[key]

        # -- streams
        if self.per_channel:
            family = gauge(
                "streams_open",
                "Event streams open now, by channel (a stream of several channels counts in each)",
                None,
                ["channel"],
            )
            if snap is not None:
                for name, count in sorted(snap["per_channel"].items()):
                    family.add_metric([name], count)
            yield family
        else:
            yield gauge("streams_open", "Event streams open now", get("open"))
        yield counter("streams_opened", "Event streams opened", get("opened"))
        family = counter(
            "streams_closed",
            "Event streams ended, by reason: client_left, send_timeout (it stopped reading),"
            " token_expired, shutdown, lag (lag_policy=close), source_ended, error",
            None,
            ["reason"],
        )
        if snap is not None:
            for reason, count in snap["closed"].items():
                family.add_metric([reason], count)
        yield family
        yield counter(
            "bytes_sent", "Body bytes written to event streams (open ones included)", get("bytes")
        )
        # -- events
        counts = get("counts")
        yield counter(
            "events_published",
            "Events stored in this process's channels (with Redis: every event of the"
            " channels it reads, whichever process published it)",
            None if counts is None else counts[0],
        )
        yield counter(
            "events_delivered",
            "Events handed to this app's streams (notices, heartbeats and"
            " filtered-out events not counted)",
            get("delivered"),
        )
        yield counter(
            "events_filtered",
            "Events a stream's ?event= filter skipped",
            get("filtered"),
        )
        yield counter(
            "listener_lags",
            "Times a listener fell behind its channel's ring (or read across a gap)",
            None if counts is None else counts[2],
        )
        yield counter(
            "events_skipped",
            "Events lagging listeners skipped (each told with sse.lagged)",
            None if counts is None else counts[1],
        )
        yield counter(
            "channel_gaps",
            "Times a backend reported events lost upstream (trimmed before read)",
            None if counts is None else counts[4],
        )
        yield counter(
            "replay_requests",
            "Subscriptions that came with a Last-Event-ID",
            get("replays"),
        )
        yield counter(
            "replay_resets",
            "Listeners told (sse.reset) that their Last-Event-ID could not be replayed",
            None if counts is None else counts[3],
        )
        yield gauge("channels", "Channels the watched managers hold now", get("channels"))
        # -- errors
        family = counter(
            "http_errors",
            "Error responses by route (subscribe, publish, stats, metrics, health,"
            " presence, other) and status: publish errors, subscribe refusals (401, 403,"
            " 429, 503, ...)",
            None,
            ["route", "status"],
        )
        if snap is not None:
            for (route, status), count in sorted(snap["errors"].items()):
                family.add_metric([route, str(status)], count)
        yield family
        # -- backends
        connected = gauge(
            "backend_connected",
            "Whether the backend is connected (1; Redis: its reader's last call succeeded;"
            " in memory: always 1)",
            None,
            ["backend"],
        )
        reconnects = counter(
            "backend_reconnects",
            "Times the backend's reader reconnected after losing its connection",
            None,
            ["backend"],
        )
        read_age = gauge(
            "backend_read_age_seconds",
            "Seconds since the backend's reader last completed a read (Redis: a blocking"
            " XREAD returns at least every block_ms when idle; much more means it is stuck"
            " or reconnecting)",
            None,
            ["backend"],
        )
        if snap is not None:
            for kind, (is_up, count, age) in sorted(snap["backends"].items()):
                connected.add_metric([kind], is_up)
                reconnects.add_metric([kind], count)
                if age is not None:
                    read_age.add_metric([kind], age)
        yield connected
        yield reconnects
        yield read_age
        # -- latency
        histogram = HistogramMetricFamily(
            f"{ns}_publish_to_write_seconds",
            "Seconds from an event's arrival in its channel (its publish, in this process)"
            " to the end of the write of the batch carrying it, for the batch's oldest event"
            " (filtered streams: the newest); each stream observes at most one batch per"
            " latency_interval (10 ms: every batch below 100 batches/s); live events of"
            " single-channel streams only (not replays, not merged streams)",
        )
        if snap is not None:
            bucket_counts, total = snap["latency"]
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip(self.latency.bounds, bucket_counts, strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            cumulative += bucket_counts[-1]
            buckets.append(("+Inf", cumulative))
            histogram.add_metric([], buckets, total)
        yield histogram


def _backends(managers: list[ChannelManager]) -> dict[str, tuple[int, int, float | None]]:
    """By backend kind: connected (0/1; the worst), reconnects (summed), read age (the
    oldest; None when the backend does not read)."""
    found: dict[str, tuple[int, int, float | None]] = {}
    for manager in managers:
        backend = manager.backend
        kind = str(getattr(backend, "kind", type(backend).__name__.lower()))
        connected = getattr(backend, "connected", True)
        reconnects = getattr(backend, "reconnects", 0)
        since = getattr(backend, "seconds_since_read", None)
        age = since() if callable(since) else None
        up = 1 if connected is True else 0
        count = reconnects if type(reconnects) is int else 0
        if kind in found:
            was_up, was_count, was_age = found[kind]
            up = min(up, was_up)
            count += was_count
            if was_age is not None:
                age = was_age if age is None else max(age, was_age)
        found[kind] = (up, count, age)
    return found


def _collector_class() -> Any:
    """A `prometheus_client.registry.Collector` subclass, made once prometheus_client is
    imported (this module imports it lazily)."""
    global _COLLECTOR_CLASS
    if _COLLECTOR_CLASS is None:
        from prometheus_client.registry import Collector

        class SSECollector(Collector):
            """The collector of a `Metrics`: reads its state at every scrape."""

            def __init__(self, metrics: Metrics) -> None:
                self.metrics = metrics

            def collect(self) -> Iterable[Metric]:
                return self.metrics.collect()

            def describe(self) -> Iterable[Metric]:
                return self.metrics.describe()

        _COLLECTOR_CLASS = SSECollector
    return _COLLECTOR_CLASS


_COLLECTOR_CLASS: Any = None
