"""The Server-Sent Events wire format: events in, bytes out. No I/O, standard library only.

Every rule here comes from the WHATWG HTML standard, "Server-sent events", section
"Interpreting an event stream". The encoder guarantees that whatever a caller passes,
the bytes it writes parse back into exactly one event carrying exactly those fields:

* data is split on CRLF, CR and LF (never ``str.splitlines()``, which also splits on
  U+2028, U+0085 and friends that the spec keeps inside a line), one ``data:`` line each;
* ``event`` and ``id`` must be single lines and ``id`` may not hold NUL (the spec drops
  such an id), otherwise construction raises: a field can never inject another frame;
* comments get a ``:`` on every line; lines end with LF; UTF-8; never a BOM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "HEARTBEAT",
    "JSONDumps",
    "ServerSentEvent",
    "as_event",
    "encode",
    "frame_bytes",
    "id_line",
    "json_compact",
]

JSONDumps = Callable[[Any], "str | bytes"]


# What json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False) builds
# on every call; JSONEncoder.encode keeps no state between calls, so one instance serves all.
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_compact(value: Any) -> str:
    """The default JSON encoder: compact, UTF-8 kept as is, NaN and infinities refused."""
    return _COMPACT_JSON.encode(value)


def _lines(prefix: str, value: str) -> str:
    """``prefix`` + each line of ``value`` + LF, splitting on CRLF, CR and LF alone."""
    value = str.__str__(value)  # a str subclass's __str__/__format__ must not change the bytes
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" not in value:
        return f"{prefix} {value}\n" if value else f"{prefix}\n"
    if "\n\n" in value or value[0] == "\n" or value[-1] == "\n":
        # An empty line is written bare ("data:"), so a value's leading space survives:
        # the parser strips one space after the colon, and we always write exactly one.
        return "".join(
            [f"{prefix} {line}\n" if line else f"{prefix}\n" for line in value.split("\n")]
        )
    return f"{prefix} " + value.replace("\n", f"\n{prefix} ") + "\n"  # no empty line: same bytes


def _single_line(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    value = str.__str__(value)  # a str subclass's __str__/__format__ must not change the bytes
    if "\n" in value or "\r" in value:
        raise ValueError(f"{field} must not contain CR or LF (it would start a field): {value!r}")
    return value


def _data_text(data: Any, json_dumps: JSONDumps | None) -> str:
    if isinstance(data, str):
        return data
    try:
        text = (json_dumps or json_compact)(data)
    except ValueError as exc:  # NaN, infinities, circular references
        raise ValueError(f"data cannot be sent as JSON: {exc}") from exc
    except (TypeError, OverflowError) as exc:
        raise TypeError(f"data is not JSON serialisable ({type(data).__name__}): {exc}") from exc
    if isinstance(text, bytes):  # orjson and friends return bytes
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"data was serialised to bytes that are not UTF-8: {exc}") from None
    if not isinstance(text, str):
        raise TypeError(f"data was serialised to {type(text).__name__}, not str or bytes")
    return text


def encode(
    data: Any = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
    json_dumps: JSONDumps | None = None,
) -> bytes:
    """Encode one event as the bytes of one SSE frame (ending in a blank line).

    ``data`` is a ``str`` (sent as is), ``None`` (no data field: browsers dispatch nothing),
    or any JSON-serialisable value, sent as compact JSON (``json_dumps`` overrides the
    encoder; it may return ``str`` or ``bytes``). Raises ``ValueError``/``TypeError``
    naming the field for anything that cannot be sent faithfully.
    """
    # Hot path: a plain str with no CR or LF is checked inline, skipping _single_line and
    # _lines (which give the same result for it); anything else goes through them. The
    # frame is assembled by one f-string from its (possibly empty) lines.
    # The id line comes first: a channel that assigns ids prefixes it to a stored frame.
    if id is None:
        id_line = ""
    else:
        if type(id) is not str or "\n" in id or "\r" in id:
            id = _single_line("id", id)
        if "\0" in id:
            raise ValueError(f"id must not contain NUL (browsers ignore such an id): {id!r}")
        id_line = _id_text(id)
    if comment is None:
        comment_lines = ""
    elif isinstance(comment, str):
        comment_lines = _lines(":", comment)
    else:
        raise TypeError(f"comment must be a str, not {type(comment).__name__}")
    if event is None:
        event_line = ""
    elif type(event) is str and "\n" not in event and "\r" not in event:
        event_line = f"event: {event}\n"
    else:
        event_line = f"event: {_single_line('event', event)}\n"
    if retry is None:
        retry_line = ""
    elif type(retry) is not int:
        raise TypeError(f"retry must be an int (milliseconds), not {type(retry).__name__}")
    elif retry < 0:
        raise ValueError(f"retry must be >= 0 (milliseconds), not {retry!r}")
    else:
        retry_line = f"retry: {retry}\n"
    if data is None:
        data_lines = ""
    else:
        value = data if type(data) is str else _data_text(data, json_dumps)
        if type(value) is str and "\n" not in value and "\r" not in value:
            data_lines = f"data: {value}\n" if value else "data:\n"
        else:
            data_lines = _lines("data:", value)
    try:
        return f"{id_line}{comment_lines}{event_line}{retry_line}{data_lines}\n".encode()
    except UnicodeEncodeError:
        fields = {"comment": comment, "event": event, "id": id, "data": data}
        bad = next(name for name, value in fields.items() if not _is_utf8(value, json_dumps))
        raise ValueError(f"{bad} must be valid Unicode text (it holds a lone surrogate)") from None


def _id_text(event_id: str) -> str:
    # Every frame starts with its id line, so that giving a stored frame an id (a channel
    # numbering its events, a backend's stream id, a merged stream's composite id) is a
    # prefix and taking it away is a slice: see `id_line`.
    return f"id: {event_id}\n" if event_id else "id:\n"


def id_line(event_id: str) -> bytes:
    """The first line of a frame whose id is ``event_id`` (already validated)."""
    return _id_text(event_id).encode()


def _is_utf8(value: Any, json_dumps: JSONDumps | None) -> bool:
    if value is None:
        return True
    try:
        _data_text(value, json_dumps).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ServerSentEvent:
    """One immutable event; its frame is encoded (and validated) once, at construction."""

    __slots__ = ("_json_dumps", "comment", "data", "event", "frame", "id", "retry")

    data: Any
    event: str | None
    id: str | None
    retry: int | None
    comment: str | None
    frame: bytes
    """The event's frame, encoded once (what `encode()` returns)."""
    _json_dumps: JSONDumps | None

    def __init__(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
        json_dumps: JSONDumps | None = None,
    ) -> None:
        encoded = encode(
            data, event=event, id=id, retry=retry, comment=comment, json_dumps=json_dumps
        )
        self._assign(encoded, data, event, id, retry, comment, json_dumps)

    def _assign(
        self,
        encoded: bytes,
        data: Any,
        event: str | None,
        id: str | None,
        retry: int | None,
        comment: str | None,
        json_dumps: JSONDumps | None,
    ) -> None:
        # The one way in (instances are immutable): the slots' own setters, which skip the
        # raising __setattr__ and cost half of object.__setattr__ on this hot path.
        _set_data(self, data)
        _set_event(self, event)
        _set_id(self, id)
        _set_retry(self, retry)
        _set_comment(self, comment)
        _set_frame(self, encoded)
        _set_json_dumps(self, json_dumps)

    @classmethod
    def from_frame(
        cls,
        frame: bytes,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> ServerSentEvent:
        """The event whose ``frame`` is given, not re-encoded: for stores (channels,
        backends) that hold frames this module encoded. The frame is trusted to be one
        event of these fields: nothing is checked."""
        self = cls.__new__(cls)
        self._assign(frame, data, event, id, retry, comment, None)
        return self

    def encode(self) -> bytes:
        """The frame's bytes (computed once, at construction)."""
        return self.frame

    def with_id(self, event_id: str) -> ServerSentEvent:
        """This id-less event with an id assigned by its store (a channel): the id line
        prefixed to its frame, not a re-encode. ``event_id`` is trusted to be one line."""
        if self.id is not None:
            raise ValueError(f"the event has an id already ({self.id!r}); use replace(id=...)")
        return ServerSentEvent.from_frame(
            id_line(event_id) + self.frame,
            self.data,
            event=self.event,
            id=event_id,
            retry=self.retry,
            comment=self.comment,
        )

    def replace(self, **changes: Any) -> ServerSentEvent:
        """A copy with some fields changed (``ev.replace(id="7")``), validated like a new one."""
        fields = {
            "data": self.data,
            "event": self.event,
            "id": self.id,
            "retry": self.retry,
            "comment": self.comment,
            "json_dumps": self._json_dumps,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown ServerSentEvent field(s): {', '.join(sorted(unknown))}")
        fields.update(changes)
        return ServerSentEvent(**fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"ServerSentEvent is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ServerSentEvent is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return self.frame == other.frame

    def __hash__(self) -> int:
        return hash(self.frame)

    def __repr__(self) -> str:
        fields = [f"{name}={getattr(self, name)!r}" for name in ("event", "id", "retry", "comment")]
        shown = ", ".join([f"data={self.data!r}"] + [f for f in fields if not f.endswith("=None")])
        return f"ServerSentEvent({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The frame travels as is: re-encoding would lose a custom json_dumps (often not
        # picklable itself, so it is not kept: replace() on the copy uses the default).
        fields = (self.data, self.event, self.id, self.retry, self.comment)
        return (_rebuild, (self.frame, *fields))


_set_data, _set_event, _set_id, _set_retry, _set_comment, _set_frame, _set_json_dumps = (
    ServerSentEvent.__dict__[name].__set__
    for name in ("data", "event", "id", "retry", "comment", "frame", "_json_dumps")
)


def _rebuild(
    encoded: bytes,
    data: Any,
    event: str | None,
    id: str | None,
    retry: int | None,
    comment: str | None,
) -> ServerSentEvent:
    return ServerSentEvent.from_frame(
        encoded, data, event=event, id=id, retry=retry, comment=comment
    )


#: The idle keep-alive frame, exactly ``: heartbeat\n\n``.
HEARTBEAT: Final[ServerSentEvent] = ServerSentEvent(comment="heartbeat")


_FIELDS: Final = frozenset({"data", "event", "id", "retry", "comment"})


def as_event(message: object) -> ServerSentEvent:
    """Coerce what users hand us into an event: an event, a ``str`` (data) or a field ``dict``."""
    if isinstance(message, ServerSentEvent):
        return message
    if isinstance(message, str):
        return ServerSentEvent(message)
    if isinstance(message, dict):
        unknown = message.keys() - _FIELDS
        if unknown:
            raise TypeError(
                f"unknown event field(s) {sorted(map(str, unknown))}; "
                "expected data, event, id, retry, comment"
            )
        return ServerSentEvent(**message)
    raise TypeError(
        f"an event must be a ServerSentEvent, str or dict, not {type(message).__name__}"
    )


def frame_bytes(item: object) -> bytes:
    """The bytes to write for one streamed item; ``bytes`` are taken as already encoded."""
    if isinstance(item, ServerSentEvent):
        return item.frame
    # A dict or str is encoded directly: the event object as_event would build around the
    # frame is thrown away at once (it costs more than the encoding itself).
    if type(item) is dict and item.keys() <= _FIELDS:
        return encode(**item)
    if type(item) is bytes:
        return item
    if type(item) is str:
        return encode(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return as_event(item).frame
