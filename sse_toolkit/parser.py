"""The Server-Sent Events wire format read back: bytes in, events out. No I/O, stdlib only.

The client-side sibling of frames.py. `EventParser` follows WHATWG HTML, "Server-sent
events", section "Interpreting an event stream", and is fed bytes as they arrive, in
chunks cut anywhere, so that a client can hand it whatever its socket returned:

* bytes are decoded as UTF-8 with replacement by an incremental decoder, so a character
  split between two chunks decodes as if it had arrived whole;
* one leading U+FEFF is dropped at the start of each connection (`EventParser.reset`);
* lines end with CRLF, LF or CR alone (never ``str.splitlines()``'s other breaks). A CR
  ends its line at once, so an event sent with CR line ends is not held back until more
  bytes arrive; a LF that then starts the next chunk is remembered to be the second half
  of that CRLF and skipped, not read as an empty line (which would dispatch);
* the unfinished last line of a chunk waits for the next one; an event cut off by the
  end of a connection is dropped by `EventParser.reset`, as the spec says.

Speed (about 3x httpx-sse on small events, benchmarks/bench_client_parser.py): the work is
on decoded ``str``: one C-level ``split`` per chunk, then per line one ``partition`` and a
few ``==``; a comment needs no test of its own (its field name is "": an unknown field).
A long line is kept in pieces until its end arrives, so it is copied once, not per chunk.
"""

from __future__ import annotations

import codecs
import json
from contextlib import suppress
from typing import Any, Final

__all__ = ["Event", "EventParser"]

_Utf8Decoder: Final = codecs.getincrementaldecoder("utf-8")


class Event:
    """One dispatched event (WHATWG "dispatch the event")."""

    __slots__ = ("data", "event", "id", "retry")

    data: str  # the data buffer, its one trailing LF removed
    event: str  # the event type: "message" when the block gave none (or an empty one)
    id: str  # the last event ID string at dispatch: ids persist across events
    retry: int | None  # the reconnection time (ms) this event's own block set, if any

    def __init__(
        self, data: str, event: str = "message", id: str = "", retry: int | None = None
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def json(self) -> Any:
        """``data`` read as JSON (``json.loads``: raises ``ValueError`` if it is not)."""
        return json.loads(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (
            self.data == other.data
            and self.event == other.event
            and self.id == other.id
            and self.retry == other.retry
        )

    def __repr__(self) -> str:
        return (
            f"Event(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"
        )


class EventParser:
    """WHATWG HTML "interpret an event stream", incremental: feed bytes as they arrive.

    One parser follows one event source over all its connections: call `reset` when a
    connection ends, and the next one starts clean while `last_event_id` (what to send
    as ``Last-Event-ID``) and `retry` (the server's reconnection time) carry over.
    """

    __slots__ = (
        "_block_retry",
        "_bom",
        "_cr",
        "_data",
        "_decode",
        "_decoder",
        "_event",
        "_id",
        "_last_id",
        "_more",
        "_pending",
        "_retry",
    )

    def __init__(self, last_event_id: str = "") -> None:
        self._decoder = _Utf8Decoder(errors="replace")
        self._decode = self._decoder.decode
        self._last_id = last_event_id  # the last event ID string: set on every empty line
        self._retry: int | None = None  # the reconnection time, once a server set one
        self.reset()

    @property
    def last_event_id(self) -> str:
        """The last event ID string: where a reconnect resumes (``Last-Event-ID``)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The latest valid ``retry`` field seen on any connection (ms); None if never."""
        return self._retry

    def reset(self) -> None:
        """Start a new connection: drop any partial line and event, expect a BOM again.

        `last_event_id` and `retry` are kept. The last event ID buffer goes back to the
        last event ID string (as browsers start each connection's parse), so an ``id``
        in the block the old connection cut off is dropped with the rest of that block.
        """
        self._decoder.reset()
        self._pending: list[str] = []  # the unfinished line, in pieces (no CR or LF)
        self._bom = True  # a U+FEFF may still come first on this connection
        self._cr = False  # the text so far ended in CR: a LF first is its CRLF's second half
        self._data: str | None = None  # the data buffer's first line (None: empty)
        self._more: list[str] = []  # and its further lines
        self._event = ""  # the event type buffer
        self._id = self._last_id  # the last event ID buffer
        self._block_retry: int | None = None  # a retry field in the current block

    def feed(self, chunk: bytes) -> list[Event]:
        """Every event ``chunk`` completes, in order (often none: they may span chunks)."""
        text = self._decode(chunk)
        if not text:
            return []
        if self._bom:
            self._bom = False
            if text[0] == "\ufeff":
                text = text[1:]
        elif self._cr:  # the last text ended in CR, which ended its line (nothing pending)
            self._cr = False
            if text[0] == "\n":  # the second half of a CRLF, not an empty line
                text = text[1:]
        if "\r" in text:
            self._cr = text[-1] == "\r"
            lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        elif "\n" in text:
            lines = text.split("\n")
        else:
            if text:  # no line end yet: keep the piece (a long line is joined once, at its end)
                self._pending.append(text)
            return []
        pending = self._pending
        if pending:  # the first line began in earlier chunks, which held no line end
            pending.append(lines[0])
            lines[0] = "".join(pending)
            pending.clear()
        tail = lines.pop()  # what follows the last line end: an unfinished line
        if tail:
            pending.append(tail)
        return self._interpret(lines)

    def _interpret(self, lines: list[str]) -> list[Event]:
        # The hot loop. The buffers live in locals and go back to self at the end; the data
        # buffer is its first line (None: empty) plus a list of any further lines, joined
        # at dispatch, which spares the common one-line event a list and a join.
        events: list[Event] = []
        append = events.append
        new = object.__new__
        data = self._data
        more = self._more
        event_type = self._event
        id_buffer = self._id
        last_id = self._last_id
        block_retry = self._block_retry
        retry = self._retry
        for line in lines:
            if not line:  # an empty line: dispatch the event
                last_id = id_buffer
                if data is not None:
                    if more:
                        data = "\n".join([data, *more])
                        more = []
                    event = new(Event)  # Event(...) without the Python-level __init__ call
                    event.data = data
                    event.event = event_type or "message"
                    event.id = last_id
                    event.retry = block_retry
                    append(event)
                    data = None
                event_type = ""
                block_retry = None
                continue
            # Servers put one space after the colon: splitting at the first ": " gives the
            # spec's name and value (one leading space off), unless the name then holds a
            # colon; a line with no colon is all name. The usual fields come first.
            name, _, value = line.partition(": ")
            if name == "data":
                if data is None:
                    data = value
                else:
                    more.append(value)
            elif name == "id":
                if "\0" not in value:
                    id_buffer = value
            elif name == "event":
                event_type = value
            else:
                if ":" in name:  # its first colon has no space after it: nothing to strip
                    name, _, value = line.partition(":")
                # A comment's name is "" (the line starts with ":"): ignored like any
                # unknown field.
                if name == "data":
                    if data is None:
                        data = value
                    else:
                        more.append(value)
                elif name == "id":
                    if "\0" not in value:
                        id_buffer = value
                elif name == "event":
                    event_type = value
                elif name == "retry" and value.isascii() and value.isdigit():
                    # More digits than int() reads (sys.set_int_max_str_digits): ignored, as
                    # browsers ignore a value that overflows.
                    with suppress(ValueError):
                        block_retry = retry = int(value)
        self._data = data
        self._more = more
        self._event = event_type
        self._id = id_buffer
        self._last_id = last_id
        self._block_retry = block_retry
        self._retry = retry
        return events
