"""The frame encoder, checked against a spec-exact parser (tests/sse_parser.py).

Every frame is decoded the way a browser's ``EventSource`` would decode it, so these tests
pin what clients receive, not just which bytes we happen to write.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sse_toolkit import frames
from sse_toolkit.frames import (
    HEARTBEAT,
    ServerSentEvent,
    as_event,
    encode,
    frame_bytes,
    json_compact,
)

from .sse_parser import Event, ParsedStream, parse

# Characters str.splitlines() treats as line breaks but the SSE spec keeps inside a line.
NOT_LINE_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
MEGABYTE = 1_000_000


def normalise(text: str) -> str:
    """What the spec turns a data string into: CRLF and CR read as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def only_event(frame: bytes) -> Event:
    """The single event a frame dispatches (failing if it dispatches none or several)."""
    events = parse(frame).events
    assert len(events) == 1, events
    return events[0]


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def bytes_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def sorted_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def with_default(value: Any) -> str:
    return json.dumps(value, default=str)


class Shady(str):
    """A str subclass whose str()/format() disagree with its contents."""

    def __str__(self) -> str:
        return "x\n\ndata: injected"

    def __format__(self, spec: str) -> str:
        return "x\n\ndata: injected"


# --------------------------------------------------------------------------------------
# The parser itself: a few fixed streams, so a parser bug cannot hide an encoder bug.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"data: a\n\n", ParsedStream([Event("a")]), id="lf"),
        pytest.param(b"data: a\r\n\r\n", ParsedStream([Event("a")]), id="crlf"),
        pytest.param(b"data: a\r\r", ParsedStream([Event("a")]), id="cr"),
        pytest.param(b"data:a\n\n", ParsedStream([Event("a")]), id="no-space"),
        pytest.param(b"data:  a\n\n", ParsedStream([Event(" a")]), id="one-space-stripped"),
        pytest.param(b"data\n\n", ParsedStream([Event("")]), id="bare-field-name"),
        pytest.param(b"data: a\ndata: b\n\n", ParsedStream([Event("a\nb")]), id="two-lines"),
        pytest.param(b"\xef\xbb\xbfdata: a\n\n", ParsedStream([Event("a")]), id="bom-stripped"),
        pytest.param(b"data: a\n", ParsedStream(), id="unterminated-event-dropped"),
        pytest.param(b"data: a\n\ndata: b", ParsedStream([Event("a")]), id="partial-line"),
        pytest.param(b"event: x\n\n", ParsedStream(), id="no-data-no-dispatch"),
        pytest.param(
            b"event: x\n\ndata: a\n\n", ParsedStream([Event("a")]), id="type-reset-on-blank"
        ),
        pytest.param(
            b"id: 1\ndata: a\n\ndata: b\n\n",
            ParsedStream(
                [Event("a", last_event_id="1"), Event("b", last_event_id="1")], [], [], "1"
            ),
            id="id-persists",
        ),
        pytest.param(
            b"id: 1\n\nid: a\0b\ndata: x\n\n",
            ParsedStream([Event("x", last_event_id="1")], [], [], "1"),
            id="nul-id-ignored",
        ),
        pytest.param(
            b"retry: 10\nretry: x1\nretry: -1\nretry:\nretry: 1.5\nretry: \xc2\xb2\n\n",
            ParsedStream([], [10], [], ""),
            id="retry-digits-only",
        ),
        pytest.param(
            b": c\n:\n::x\n:x\n:  y\n\n",
            ParsedStream([], [], ["c", "", ":x", "x", " y"]),
            id="comments",
        ),
        pytest.param(b"foo: bar\ndata: a\n\n", ParsedStream([Event("a")]), id="unknown-field"),
        pytest.param(b"data: a\xffb\n\n", ParsedStream([Event("a\ufffdb")]), id="bad-utf8"),
        pytest.param(b"data: a\x0bb\xe2\x80\xa8c\n\n", ParsedStream([Event("a\x0bb\u2028c")])),
    ],
)
def test_parser_follows_the_spec(stream: bytes, expected: ParsedStream) -> None:
    assert parse(stream) == expected


# --------------------------------------------------------------------------------------
# Spec edge cases: encoded, then decoded by the parser.
# --------------------------------------------------------------------------------------

EDGE_CASES = [
    pytest.param([{"data": ""}], [Event("")], id="empty-data"),
    pytest.param([{"data": "\n"}], [Event("\n")], id="lone-lf"),
    pytest.param([{"data": "\r"}], [Event("\n")], id="lone-cr"),
    pytest.param([{"data": "\r\n"}], [Event("\n")], id="lone-crlf"),
    pytest.param([{"data": "\n\n\n"}], [Event("\n\n\n")], id="only-lfs"),
    pytest.param([{"data": "a\rb"}], [Event("a\nb")], id="cr-inside"),
    pytest.param([{"data": "a\r\nb"}], [Event("a\nb")], id="crlf-inside"),
    pytest.param([{"data": "a\n\rb"}], [Event("a\n\nb")], id="lf-cr-is-two-breaks"),
    pytest.param([{"data": "a\r\r\nb"}], [Event("a\n\nb")], id="cr-crlf"),
    pytest.param([{"data": "x\n"}], [Event("x\n")], id="trailing-lf-kept"),
    pytest.param([{"data": "\nx"}], [Event("\nx")], id="leading-lf-kept"),
    pytest.param([{"data": " x"}], [Event(" x")], id="leading-space-kept"),
    pytest.param([{"data": "  x  "}], [Event("  x  ")], id="spaces-kept"),
    pytest.param([{"data": "a\n b"}], [Event("a\n b")], id="leading-space-on-later-line"),
    pytest.param([{"data": ":x"}], [Event(":x")], id="colon-first"),
    pytest.param([{"data": "\t"}], [Event("\t")], id="tab"),
    *(
        pytest.param([{"data": f"a{ch}b"}], [Event(f"a{ch}b")], id=f"not-a-break-U+{ord(ch):04X}")
        for ch in NOT_LINE_BREAKS
    ),
    pytest.param([{"data": "a\0b"}], [Event("a\0b")], id="nul-in-data"),
    pytest.param([{"data": "\ufeffx"}], [Event("\ufeffx")], id="bom-in-data-kept"),
    pytest.param([{"data": "x" * MEGABYTE}], [Event("x" * MEGABYTE)], id="1MB-one-line"),
    pytest.param(
        [{"data": "0123456789\n" * (MEGABYTE // 11)}],
        [Event("0123456789\n" * (MEGABYTE // 11))],
        id="1MB-many-lines",
    ),
    pytest.param(
        [{"data": "a", "id": "1"}, {"data": "b"}, {"data": "c", "id": ""}, {"data": "d"}],
        [
            Event("a", last_event_id="1"),
            Event("b", last_event_id="1"),
            Event("c", last_event_id=""),
            Event("d", last_event_id=""),
        ],
        id="empty-id-resets",
    ),
    pytest.param([{"id": "5"}, {"data": "x"}], [Event("x", last_event_id="5")], id="id-only-frame"),
    pytest.param([{"retry": 3000}], [], id="retry-only"),
    pytest.param([{"data": None, "event": "e", "id": "1"}], [], id="none-data-not-dispatched"),
    pytest.param([{"comment": "a\nb\r\nc\rd"}], [], id="multi-line-comment"),
    pytest.param([{"event": "user joined", "data": "x"}], [Event("x", "user joined")]),
    pytest.param([{"event": " lead", "data": "x"}], [Event("x", " lead")], id="event-lead-space"),
    pytest.param([{"event": "", "data": "x"}], [Event("x", "message")], id="empty-event"),
    pytest.param([{"event": "a:b", "data": "x"}], [Event("x", "a:b")], id="event-colon"),
    pytest.param([{"event": "a\0b", "data": "x"}], [Event("x", "a\0b")], id="event-nul"),
    pytest.param(
        [{"event": "a\u2028b", "id": "c\x85d", "data": "x"}],
        [Event("x", "a\u2028b", "c\x85d")],
        id="event-id-unicode-breaks",
    ),
    pytest.param([{"id": " 7 ", "data": "x"}], [Event("x", last_event_id=" 7 ")], id="id-spaces"),
    pytest.param(
        [{"data": "héllo wörld 🎉 中文 𝔘", "event": "🎉", "id": "ключ"}],
        [Event("héllo wörld 🎉 中文 𝔘", "🎉", "ключ")],
        id="unicode-emoji",
    ),
    pytest.param([{"data": {"a": 1, "b": [1, 2]}}], [Event('{"a":1,"b":[1,2]}')], id="dict"),
    pytest.param([{"data": {}}], [Event("{}")], id="empty-dict"),
    pytest.param([{"data": [1, "two", None]}], [Event('[1,"two",null]')], id="list"),
    pytest.param([{"data": []}], [Event("[]")], id="empty-list"),
    pytest.param([{"data": 42}], [Event("42")], id="int"),
    pytest.param([{"data": 0}], [Event("0")], id="zero"),
    pytest.param([{"data": -1.5}], [Event("-1.5")], id="float"),
    pytest.param([{"data": 10**30}], [Event(str(10**30))], id="big-int"),
    pytest.param([{"data": True}], [Event("true")], id="true"),
    pytest.param([{"data": False}], [Event("false")], id="false"),
    pytest.param([{"data": {"a": None}}], [Event('{"a":null}')], id="null-inside"),
    pytest.param([{"data": "null"}], [Event("null")], id="json-null-as-str"),
    pytest.param([{"data": None}], [], id="none-is-missing"),
    pytest.param(
        [{"data": {"msg": "héllo 🎉", "s": "a\nb\r"}}],
        [Event('{"msg":"héllo 🎉","s":"a\\nb\\r"}')],
        id="compact-non-ascii-json",
    ),
    pytest.param(
        [{"data": {"b": 2, "a": 1}, "json_dumps": sorted_json}],
        [Event('{"a": 1, "b": 2}')],
        id="custom-json-dumps",
    ),
    pytest.param(
        [{"data": {"k": "é"}, "json_dumps": bytes_json}],
        [Event('{"k":"\\u00e9"}')],
        id="json-dumps-returning-bytes",
    ),
    pytest.param(
        [{"data": {"k": "\ud800"}, "json_dumps": json.dumps}],
        [Event('{"k": "\\ud800"}')],
        id="ascii-json-escapes-surrogate",
    ),
    pytest.param(
        [{"data": {"b": [1, 2], "a": {"c": None}}, "json_dumps": pretty_json}],
        [Event(pretty_json({"b": [1, 2], "a": {"c": None}}))],
        id="pretty-json-many-lines",
    ),
    pytest.param(
        [{"data": "a\nb", "json_dumps": pretty_json}], [Event("a\nb")], id="str-skips-json"
    ),
    pytest.param(
        [{"comment": "c", "event": "e", "id": "1", "retry": 5, "data": "d"}],
        [Event("d", "e", "1")],
        id="all-fields",
    ),
]


@pytest.mark.parametrize(("frames_kwargs", "expected"), EDGE_CASES)
def test_edge_cases_round_trip(frames_kwargs: list[dict[str, Any]], expected: list[Event]) -> None:
    stream = b"".join(encode(**kwargs) for kwargs in frames_kwargs)
    parsed = parse(stream)
    assert parsed.events == expected
    # The same frames through the class, and each frame alone ends any event it starts.
    assert stream == b"".join(ServerSentEvent(**kwargs).encode() for kwargs in frames_kwargs)
    assert parsed.retries == [kw["retry"] for kw in frames_kwargs if "retry" in kw]


def test_empty_data_is_a_bare_data_line() -> None:
    assert encode("") == b"data:\n\n"
    assert only_event(encode("")) == Event("")


def test_retry_only_is_seen_but_dispatches_nothing() -> None:
    parsed = parse(encode(retry=3000))
    assert parsed.events == []
    assert parsed.retries == [3000]


def test_multi_line_comment_prefixes_every_line() -> None:
    frame = encode(comment="a\nb\r\nc\rd\n")
    lines = frame.split(b"\n")
    assert lines[-2:] == [b"", b""]
    assert len(lines) == 7
    assert all(line.startswith(b":") for line in lines[:-2])
    parsed = parse(frame)
    assert parsed.comments == ["a", "b", "c", "d", ""]
    assert parsed.events == []


@pytest.mark.parametrize("char", NOT_LINE_BREAKS)
def test_splitlines_separators_stay_on_one_data_line(char: str) -> None:
    frame = encode(f"a{char}b{char}")
    assert frame.count(b"data:") == 1
    assert frame == f"data: a{char}b{char}\n\n".encode()
    assert only_event(frame).data == f"a{char}b{char}"


def test_pretty_json_round_trips_as_json() -> None:
    value = {"nested": {"list": [1, 2, {"x": None}]}, "text": "multi\nline"}
    frame = encode(value, json_dumps=pretty_json)
    assert frame.count(b"data:") == pretty_json(value).count("\n") + 1
    assert json.loads(only_event(frame).data) == value


# --------------------------------------------------------------------------------------
# Exact bytes.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hi"}, b"data: hi\n\n"),
        ({"data": ""}, b"data:\n\n"),
        ({"data": " x"}, b"data:  x\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": "\n"}, b"data:\ndata:\n\n"),
        ({"data": "a\n\nb"}, b"data: a\ndata:\ndata: b\n\n"),
        ({"data": "é🎉"}, "data: é🎉\n\n".encode()),
        ({"data": "é"}, b"data: \xc3\xa9\n\n"),
        ({"data": {"a": 1, "b": [True, None]}}, b'data: {"a":1,"b":[true,null]}\n\n'),
        ({"data": {"é": "🎉"}}, 'data: {"é":"🎉"}\n\n'.encode()),
        ({"data": 3}, b"data: 3\n\n"),
        ({"event": "e", "data": "d"}, b"event: e\ndata: d\n\n"),
        ({"event": "", "data": "d"}, b"event: \ndata: d\n\n"),
        ({"id": "42", "data": "d"}, b"id: 42\ndata: d\n\n"),
        ({"id": ""}, b"id:\n\n"),
        ({"retry": 0}, b"retry: 0\n\n"),
        ({"retry": 1500}, b"retry: 1500\n\n"),
        ({"comment": "c"}, b": c\n\n"),
        ({"comment": ""}, b":\n\n"),
        ({"comment": "a\nb"}, b": a\n: b\n\n"),
        ({"comment": "a\n\nb"}, b": a\n:\n: b\n\n"),
        (
            {"data": "d", "event": "e", "id": "1", "retry": 5, "comment": "c"},
            b"id: 1\n: c\nevent: e\nretry: 5\ndata: d\n\n",  # the id line first
        ),
    ],
)
def test_exact_bytes(kwargs: dict[str, Any], expected: bytes) -> None:
    assert encode(**kwargs) == expected
    assert ServerSentEvent(**kwargs).encode() == expected


def test_heartbeat_bytes() -> None:
    assert HEARTBEAT.encode() == b": heartbeat\n\n"
    assert HEARTBEAT.comment == "heartbeat"
    assert HEARTBEAT.data is None
    parsed = parse(HEARTBEAT.encode())
    assert parsed.events == []
    assert parsed.comments == ["heartbeat"]


def test_an_empty_event_dispatches_nothing() -> None:
    assert parse(encode()) == ParsedStream()
    assert b"\r" not in encode()


def test_json_compact() -> None:
    assert json_compact({"a": [1, 2.5], "é": "🎉"}) == '{"a":[1,2.5],"é":"🎉"}'
    assert json_compact("a\nb") == '"a\\nb"'
    with pytest.raises(ValueError, match="JSON"):
        json_compact(float("nan"))


def test_public_names() -> None:
    import sse_toolkit

    assert sse_toolkit.ServerSentEvent is ServerSentEvent
    assert sse_toolkit.encode is encode
    assert sse_toolkit.HEARTBEAT is HEARTBEAT
    assert set(frames.__all__) <= set(dir(frames))


# --------------------------------------------------------------------------------------
# Bad input raises at construction, naming the field.
# --------------------------------------------------------------------------------------

_circular: list[Any] = []
_circular.append(_circular)

BAD_INPUT = [
    pytest.param({"event": "a\nb"}, ValueError, r"^event must not contain CR or LF", id="lf-event"),
    pytest.param({"event": "a\rb"}, ValueError, r"^event must not contain CR or LF", id="cr-event"),
    pytest.param({"event": "\r\n"}, ValueError, r"^event must not contain CR or LF", id="crlf-ev"),
    pytest.param({"event": "x\n"}, ValueError, r"^event must not", id="trailing-lf-event"),
    pytest.param({"id": "1\n2"}, ValueError, r"^id must not contain CR or LF", id="lf-id"),
    pytest.param({"id": "1\r"}, ValueError, r"^id must not contain CR or LF", id="cr-id"),
    pytest.param({"id": "a\0b"}, ValueError, r"^id must not contain NUL", id="nul-id"),
    pytest.param({"id": "\0"}, ValueError, r"^id must not contain NUL", id="only-nul-id"),
    pytest.param({"retry": True}, TypeError, r"^retry must be an int", id="bool-retry"),
    pytest.param({"retry": False}, TypeError, r"^retry must be an int", id="false-retry"),
    pytest.param({"retry": 1.0}, TypeError, r"^retry must be an int", id="float-retry"),
    pytest.param({"retry": "5"}, TypeError, r"^retry must be an int", id="str-retry"),
    pytest.param({"retry": -1}, ValueError, r"^retry must be >= 0", id="negative-retry"),
    pytest.param({"data": "\ud800"}, ValueError, r"^data must be valid Unicode", id="surr-data"),
    pytest.param(
        {"data": ["ok", "\udfff"]}, ValueError, r"^data must be valid Unicode", id="surr-json"
    ),
    pytest.param(
        {"data": "x", "event": "\udc80"}, ValueError, r"^event must be valid", id="surr-event"
    ),
    pytest.param({"data": "x", "id": "a\ud800"}, ValueError, r"^id must be valid", id="surr-id"),
    pytest.param(
        {"data": "x", "comment": "\ud800"}, ValueError, r"^comment must be valid", id="surr-comm"
    ),
    pytest.param({"data": object()}, TypeError, r"^data is not JSON serialisable", id="object"),
    pytest.param({"data": {1, 2}}, TypeError, r"^data is not JSON serialisable", id="set"),
    pytest.param({"data": b"x"}, TypeError, r"^data is not JSON serialisable", id="bytes-data"),
    pytest.param({"data": {(1,): 2}}, TypeError, r"^data is not JSON serialisable", id="key"),
    pytest.param({"data": float("nan")}, ValueError, r"^data cannot be sent as JSON", id="nan"),
    pytest.param({"data": float("inf")}, ValueError, r"^data cannot be sent as JSON", id="inf"),
    pytest.param(
        {"data": {"x": [float("-inf")]}}, ValueError, r"^data cannot be sent as JSON", id="-inf"
    ),
    pytest.param({"data": _circular}, ValueError, r"^data cannot be sent as JSON", id="circular"),
    pytest.param({"event": 1}, TypeError, r"^event must be a str, not int", id="int-event"),
    pytest.param({"event": b"e"}, TypeError, r"^event must be a str, not bytes", id="bytes-ev"),
    pytest.param({"id": 7}, TypeError, r"^id must be a str, not int", id="int-id"),
    pytest.param({"comment": 1}, TypeError, r"^comment must be a str, not int", id="int-comm"),
    pytest.param({"comment": ["a"]}, TypeError, r"^comment must be a str", id="list-comment"),
    pytest.param(
        {"data": {"a": 1}, "json_dumps": lambda v: b"\xff"},
        ValueError,
        r"^data ",
        id="json-dumps-bad-utf8",
    ),
    pytest.param(
        {"data": {"a": 1}, "json_dumps": lambda v: 5}, TypeError, r"^data ", id="json-dumps-int"
    ),
]


@pytest.mark.parametrize(("kwargs", "exc_type", "message"), BAD_INPUT)
def test_bad_input_raises_naming_the_field(
    kwargs: dict[str, Any], exc_type: type[Exception], message: str
) -> None:
    with pytest.raises(exc_type, match=message):
        encode(**kwargs)
    with pytest.raises(exc_type, match=message):
        ServerSentEvent(**kwargs)
    if "json_dumps" not in kwargs:
        with pytest.raises(exc_type, match=message):
            as_event(kwargs)
        with pytest.raises(exc_type, match=message):
            frame_bytes(kwargs)


def test_surrogate_names_the_bad_field_among_good_ones() -> None:
    good = {"data": "d", "event": "e", "id": "i", "comment": "c"}
    for name in good:
        with pytest.raises(ValueError, match=rf"^{name} must be valid Unicode"):
            ServerSentEvent(**{**good, name: "ok\ud800"})


def test_subclass_of_str_cannot_inject_a_frame() -> None:
    for name in ("data", "event", "id", "comment"):
        frame = encode(**{"data": "d", name: Shady("ok")})
        assert b"injected" not in frame
        parsed = parse(frame)
        assert len(parsed.events) == 1
    assert only_event(encode(Shady("ok"), event=Shady("e"), id=Shady("1"))) == Event("ok", "e", "1")
    with pytest.raises(ValueError, match=r"^event"):
        encode("d", event=Shady("a\nb"))


def test_as_event_rejects_unknown_keys_and_types() -> None:
    with pytest.raises(TypeError, match=r"unknown event field\(s\) \['bogus'\]"):
        as_event({"data": "x", "bogus": 1})
    with pytest.raises(TypeError, match="json_dumps"):
        as_event({"data": {"a": 1}, "json_dumps": json.dumps})
    with pytest.raises(TypeError, match="not int"):
        as_event(5)
    with pytest.raises(TypeError, match="not NoneType"):
        as_event(None)
    with pytest.raises(TypeError, match="not bytes"):
        as_event(b"data: x\n\n")


def test_as_event_coerces() -> None:
    ev = ServerSentEvent("x", id="1")
    assert as_event(ev) is ev
    assert as_event("hi") == ServerSentEvent("hi")
    assert as_event("hi").encode() == b"data: hi\n\n"
    assert as_event({}) == ServerSentEvent()
    assert as_event({"data": {"a": 1}, "event": "e", "id": "2", "retry": 3, "comment": "c"}) == (
        ServerSentEvent({"a": 1}, event="e", id="2", retry=3, comment="c")
    )


# --------------------------------------------------------------------------------------
# Immutability, caching, equality, replace, pickle, frame_bytes.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data", "event", "id", "retry", "comment", "frame", "other"])
def test_immutable(name: str) -> None:
    ev = ServerSentEvent("x", event="e", id="1", retry=2, comment="c")
    before = ev.encode()
    with pytest.raises(AttributeError, match="immutable"):
        setattr(ev, name, "y")
    with pytest.raises(AttributeError, match="immutable"):
        delattr(ev, name)
    assert ev.encode() == before
    assert not hasattr(ev, "__dict__")


def test_fields_are_kept() -> None:
    data = {"a": [1]}
    ev = ServerSentEvent(data, event="e", id="1", retry=2, comment="c")
    assert (ev.data, ev.event, ev.id, ev.retry, ev.comment) == (data, "e", "1", 2, "c")
    assert ev.data is data
    empty = ServerSentEvent()
    assert (empty.data, empty.event, empty.id, empty.retry, empty.comment) == (None,) * 5


def test_encode_is_cached() -> None:
    ev = ServerSentEvent({"a": 1}, event="e")
    first = ev.encode()
    assert isinstance(first, bytes)
    assert ev.encode() is first
    assert ev.encode() is ev.encode()


def test_equality_and_hash_follow_the_frame() -> None:
    a, b = ServerSentEvent("x", id="1"), ServerSentEvent("x", id="1")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != ServerSentEvent("x", id="2")
    assert a != ServerSentEvent("x")
    assert ServerSentEvent("1") == ServerSentEvent(1)  # the same bytes on the wire
    assert ServerSentEvent("a\r\nb") == ServerSentEvent("a\nb")
    assert ServerSentEvent(retry=1) != ServerSentEvent(retry=2)
    assert a != a.encode()
    assert a.__eq__(a.encode()) is NotImplemented


def test_repr() -> None:
    assert repr(ServerSentEvent("x")) == "ServerSentEvent(data='x')"
    assert repr(ServerSentEvent({"a": 1}, event="e", retry=3)) == (
        "ServerSentEvent(data={'a': 1}, event='e', retry=3)"
    )


def test_replace_returns_a_new_validated_event() -> None:
    ev = ServerSentEvent("d", event="e", comment="c")
    new = ev.replace(id="7")
    assert new is not ev
    assert isinstance(new, ServerSentEvent)
    assert (new.data, new.event, new.id, new.comment) == ("d", "e", "7", "c")
    assert ev.id is None
    assert ev.encode() == b": c\nevent: e\ndata: d\n\n"
    assert new.encode() == encode("d", event="e", id="7", comment="c")
    assert only_event(new.encode()) == Event("d", "e", "7")
    assert ev.replace() == ev
    assert ev.replace(data=None).data is None
    assert parse(ev.replace(data=None).encode()).events == []
    with pytest.raises(ValueError, match=r"^id must not contain CR or LF"):
        ev.replace(id="7\n")
    with pytest.raises(TypeError, match=r"^retry"):
        ev.replace(retry=True)
    with pytest.raises(TypeError, match="bogus"):
        ev.replace(bogus=1)


def test_replace_keeps_the_json_encoder() -> None:
    ev = ServerSentEvent({"b": 1, "a": [2]}, json_dumps=pretty_json)
    new = ev.replace(id="7")
    assert new.encode() == encode({"b": 1, "a": [2]}, id="7", json_dumps=pretty_json)
    # An encoder that makes non-JSON data sendable must keep doing so.
    dated = ServerSentEvent({"when": complex(1, 2)}, json_dumps=with_default)
    assert only_event(dated.replace(event="tick").encode()) == Event('{"when": "(1+2j)"}', "tick")
    # Switching encoders is explicit.
    assert ev.replace(json_dumps=json_compact).encode() == b'data: {"b":1,"a":[2]}\n\n'


PICKLED = [
    ServerSentEvent("x"),
    ServerSentEvent({"a": [1, None]}, event="e", id="1", retry=5, comment="c\nd"),
    ServerSentEvent("a\r\nb"),
    ServerSentEvent(id=""),
    ServerSentEvent(),
    HEARTBEAT,
    ServerSentEvent({"b": 1, "a": 2}, json_dumps=pretty_json),
    ServerSentEvent({"z": complex(0, 1)}, json_dumps=with_default),
]


@pytest.mark.parametrize("ev", PICKLED, ids=repr)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(ev: ServerSentEvent, protocol: int) -> None:
    back = pickle.loads(pickle.dumps(ev, protocol))
    assert type(back) is ServerSentEvent
    assert back == ev
    assert back.encode() == ev.encode()
    assert (back.data, back.event, back.id, back.retry, back.comment) == (
        ev.data,
        ev.event,
        ev.id,
        ev.retry,
        ev.comment,
    )
    with pytest.raises(AttributeError):
        back.data = "y"  # type: ignore[misc]


@pytest.mark.parametrize("ev", PICKLED, ids=repr)
def test_copy(ev: ServerSentEvent) -> None:
    assert copy.copy(ev) == ev
    assert copy.deepcopy(ev) == ev


def test_frame_bytes() -> None:
    ev = ServerSentEvent("x", id="1")
    assert frame_bytes(ev) is ev.encode()
    raw = b"data: raw\n\n"
    assert frame_bytes(raw) is raw
    for buffer in (bytearray(raw), memoryview(raw)):
        out = frame_bytes(buffer)
        assert type(out) is bytes
        assert out == raw

    class MyBytes(bytes):
        pass

    assert type(frame_bytes(MyBytes(raw))) is bytes
    assert frame_bytes(MyBytes(raw)) == raw
    assert frame_bytes("hi") == b"data: hi\n\n"
    assert frame_bytes({"data": {"a": 1}, "id": "2"}) == b'id: 2\ndata: {"a":1}\n\n'
    assert frame_bytes({}) == encode()
    for bad in (5, None, 1.5, ["data"]):
        with pytest.raises(TypeError):
            frame_bytes(bad)
    with pytest.raises(TypeError, match="unknown"):
        frame_bytes({"nope": 1})


def test_from_frame_skips_reencoding() -> None:
    raw = encode("x", id="9")
    ev = ServerSentEvent.from_frame(raw, "x", id="9")
    assert ev.encode() is raw
    assert ev.frame is raw
    assert ev == ServerSentEvent("x", id="9")
    assert frame_bytes(ev) is raw


# --------------------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------------------

# Arbitrary text (no lone surrogates) with line breaks of every kind mixed in.
texts = st.lists(
    st.one_of(st.text(), st.sampled_from(["\r", "\n", "\r\n", "\n\r", "\0", *NOT_LINE_BREAKS])),
    max_size=12,
).map("".join)
# Anything a caller could pass as a str: lone surrogates, CR, LF, NUL included.
any_strings = st.lists(
    st.one_of(
        st.text(st.characters(exclude_categories=())),
        st.sampled_from(["\r", "\n", "\r\n", "\0", "\ud800", "\udfff", ":", " "]),
    ),
    max_size=8,
).map("".join)
single_lines = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
ids = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"))
retries = st.integers(min_value=0, max_value=10**12)
json_values = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# A str is sent as is and None means "no data": only other values go through JSON.
json_documents = json_values.filter(lambda v: not isinstance(v, (str, type(None))))
datas = st.one_of(st.none(), texts, json_documents)


@given(texts)
@example("")
@example("\r\n\r\n")
@example("a\r\n\rb\n\r")
@example("\u2028\x85\x0b\x0c")
def test_any_text_round_trips(text: str) -> None:
    frame = encode(data=text)
    parsed = parse(frame)
    assert parsed.events == [Event(normalise(text))]
    assert parsed.retries == []
    assert parsed.comments == []
    assert ServerSentEvent(text).encode() == frame


@given(event=single_lines, id=ids, data=texts)
def test_single_line_event_and_id_round_trip(event: str, id: str, data: str) -> None:
    parsed = parse(encode(data, event=event, id=id))
    assert parsed.events == [Event(normalise(data), event or "message", id)]
    assert parsed.last_event_id == id


@given(retries)
def test_retry_round_trips(retry: int) -> None:
    parsed = parse(encode(retry=retry))
    assert parsed.retries == [retry]
    assert parsed.events == []


@given(texts)
def test_any_comment_round_trips(comment: str) -> None:
    parsed = parse(encode(comment=comment))
    expected = normalise(comment).split("\n")
    assert parsed.comments == expected
    assert parsed.events == []


@given(json_documents)
def test_json_round_trips(value: Any) -> None:
    event = only_event(encode(value))
    assert event.data == json_compact(value)
    assert "\n" not in event.data
    assert json.loads(event.data) == value
    pretty = only_event(encode(value, json_dumps=pretty_json))
    assert json.loads(pretty.data) == value


@given(event=any_strings, id=any_strings, comment=any_strings, data=texts)
@example(event="x\n\ndata: injected", id="1", comment="c", data="d")
@example(event="x", id="1\r\rdata: injected", comment="c", data="d")
@example(event="x", id="1", comment="\n\ndata: injected", data="d")
def test_no_field_can_inject_a_frame(event: str, id: str, comment: str, data: str) -> None:
    try:
        frame = encode(data, event=event, id=id, comment=comment)
    except ValueError:
        bad_event = "\r" in event or "\n" in event
        bad_id = "\r" in id or "\n" in id or "\0" in id
        has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in event + id + comment)
        assert bad_event or bad_id or has_surrogate
        return
    parsed = parse(frame)
    assert parsed.events == [Event(normalise(data), event or "message", id)]
    assert parsed.retries == []


@given(
    st.dictionaries(
        st.sampled_from(["data", "event", "id", "retry", "comment", "json_dumps", "nope"]),
        st.none() | any_strings | retries | st.just(b"x"),
        max_size=4,
    )
)
def test_frame_bytes_of_a_dict_is_the_event_path(fields: dict[str, Any]) -> None:
    """frame_bytes encodes a dict (or str) without building the event: same bytes, same
    error (type and message) as going through as_event."""
    for item in (fields, fields.get("data") if isinstance(fields.get("data"), str) else "s"):
        try:
            expected: bytes | BaseException = as_event(item).encode()
        except (TypeError, ValueError) as exc:
            expected = exc
        try:
            got: bytes | BaseException = frame_bytes(item)
        except (TypeError, ValueError) as exc:
            got = exc
        if isinstance(expected, BaseException):
            assert type(got) is type(expected)
            assert str(got) == str(expected)
        else:
            assert got == expected


@given(
    data=datas,
    event=st.none() | single_lines,
    id=st.none() | ids,
    retry=st.none() | retries,
    comment=st.none() | texts,
)
def test_frame_shape(
    data: Any, event: str | None, id: str | None, retry: int | None, comment: str | None
) -> None:
    frame = encode(data, event=event, id=id, retry=retry, comment=comment)
    assert ServerSentEvent(data, event=event, id=id, retry=retry, comment=comment).encode() == frame
    assert b"\r" not in frame
    assert not frame.startswith(b"\xef\xbb\xbf")
    frame.decode("utf-8")  # strict: valid UTF-8
    if (data, event, id, retry, comment) == (None,) * 5:
        assert frame == b"\n"
        return
    # One blank line, at the very end: the frame is exactly one event.
    assert frame.endswith(b"\n\n")
    assert frame.find(b"\n\n") == len(frame) - 2
    for line in frame[:-2].split(b"\n"):
        assert re.match(rb"(:|data(:$|: )|event: |id(:$|: )|retry: [0-9]+$)", line), line
    parsed = parse(frame)
    assert len(parsed.events) == (0 if data is None else 1)
    assert parsed.retries == ([] if retry is None else [retry])
    assert len(parsed.comments) == (0 if comment is None else normalise(comment).count("\n") + 1)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"data": texts}, optional={"event": single_lines, "id": ids, "retry": retries}
        ),
        max_size=6,
    )
)
def test_a_stream_of_frames_parses_to_the_same_events(messages: list[dict[str, Any]]) -> None:
    stream = b"".join(frame_bytes(message) for message in messages)
    expected, last_id = [], ""
    for message in messages:
        last_id = message.get("id", last_id)
        expected.append(
            Event(normalise(message["data"]), message.get("event") or "message", last_id)
        )
    parsed = parse(stream + HEARTBEAT.encode())
    assert parsed.events == expected
    assert parsed.retries == [m["retry"] for m in messages if "retry" in m]
    assert parsed.comments == ["heartbeat"]


@given(data=texts, event=st.none() | single_lines, id=ids)
def test_with_id_is_replace_without_reencoding(data: str, event: str | None, id: str) -> None:
    """A store's id on an id-less event: the same event as replace(id=...) gives."""
    ev = ServerSentEvent(data, event=event)
    assert ev.with_id(id) == ev.replace(id=id)
    assert ev.with_id(id).id == id
    with pytest.raises(ValueError, match="has an id already"):
        ev.with_id(id).with_id(id)
