"""The README runs as written: its quick start over a real server and stopped by the runner,
its Python blocks copies of files in examples/ (which tests/test_examples.py runs), its
commands accepted by the command line, the hub's demo as its first command says, and its
links pointing at files that exist. The docs' commands and dotted names are checked too."""

from __future__ import annotations

import asyncio
import importlib
import re
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from .raw_streams import PYTHON, RawStream, ServerProcess, free_port, stop_one_stream
from .servers import serve
from .test_examples import sections, without_markers

README = Path(__file__).resolve().parent.parent / "README.md"
WAIT = 10.0


def python_block(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_quick_start_channels_example() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_block("Quick start: a channel in your app"), "README", "exec"), namespace)
    channel = namespace["notifications"]
    with serve(namespace["app"]) as url, httpx.Client(timeout=WAIT) as client:
        with connect_sse(client, "GET", f"{url}/events") as source:
            deadline = time.monotonic() + WAIT
            while channel.subscriber_count < 1:
                assert time.monotonic() < deadline
                threading.Event().wait(0.01)
            sent = client.post(f"{url}/send").json()
            event = next(e for e in source.iter_sse() if e.data)
        assert (event.event, event.data, event.id) == ("notice", "Hello, world!", sent["id"])


def test_quick_start_served_by_the_runner_stops_cleanly(tmp_path: Path) -> None:
    """``python -m sse_toolkit run app:app``, then Ctrl+C: the stream ends cleanly with a
    retry hint after the event it got, and the process exits 0 with no traceback."""
    (tmp_path / "app.py").write_text(python_block("Quick start: a channel in your app"))
    port = free_port()
    command = [PYTHON, "-m", "sse_toolkit", "run", "app:app", "--port", str(port)]
    process = ServerProcess(command, tmp_path / "server.log", cwd=tmp_path)

    async def event_arrived(stream: RawStream) -> None:
        async with httpx.AsyncClient(timeout=WAIT) as client:
            for _ in range(int(WAIT / 0.02)):  # until the subscription is live
                await client.post(f"http://127.0.0.1:{port}/send")
                if stream.events:
                    return
                await asyncio.sleep(0.02)

    stopped = stop_one_stream(process, port, "/events", signal.SIGINT, before=event_arrived)
    stream = stopped.stream
    assert stream.complete and stream.error is None, stream.error
    assert stream.events[0] == "Hello, world!"
    assert stream.retry_at_end is not None
    assert stopped.code == 0, stopped.log
    assert "Traceback" not in stopped.log, stopped.log


# -- every block a tested example; the commands the CLI's ------------------------------------

ROOT = README.parent
DOCS = ROOT / "docs"
SET_UP_HUB = 'pip install -e ".[server]" && python -m sse_toolkit --demo'
SET_UP_TESTS = 'pip install -e ".[test]" && pytest'


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_every_python_block_is_a_tested_example_file() -> None:
    """A README block cannot be included from a file, so it must be a copy of one: the
    whole of an example (section markers aside) or one of its sections."""
    known = set()
    for path in (ROOT / "examples").glob("*.py"):
        known.add(without_markers(path).strip())
        known.update(body.strip() for body in sections(path).values())
    blocks = code_blocks(README.read_text(), "python")
    assert len(blocks) >= 2
    for block in blocks:
        assert block.strip() in known, f"a README block that is no example file:\n{block}"


def test_the_two_set_up_commands_are_exact() -> None:
    shell = [line.strip() for b in code_blocks(README.read_text(), "sh") for line in b.split("\n")]
    assert SET_UP_HUB in shell
    assert SET_UP_TESTS in shell
    assert shell.index(SET_UP_HUB) < shell.index(SET_UP_TESTS)


def sse_toolkit_commands(text: str) -> list[str]:
    """The ``python -m sse_toolkit ...`` commands of shell blocks and inline code."""
    pieces = [line for block in code_blocks(text, "sh") for line in block.split("\n")]
    pieces += [" ".join(span.split()) for span in re.findall(r"`([^`\n]*(?:\n[^`\n]*)?)`", text)]
    found = []
    for piece in pieces:
        for match in re.finditer(r"python -m sse_toolkit\b([^#|&)]*)", piece):
            found.append(match.group(1).strip())
    return found


def documented_commands() -> list[tuple[str, str]]:
    pages = [README, *sorted(DOCS.glob("*.md"))]
    return [(p.name, c) for p in pages for c in sse_toolkit_commands(p.read_text())]


def test_documented_commands_are_accepted_by_the_command_line() -> None:
    """Each command's flags and sub-command parse (``...`` stands for a value)."""
    from sse_toolkit.cli import build_parser

    commands = documented_commands()
    assert any(command == "--demo" for _, command in commands)
    refused = []
    for page, command in commands:
        args = shlex.split(command.replace("...", "value"))
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:  # argparse: 0 after --help/--version, 2 on a mistake
            if exc.code != 0:
                refused.append(f"{page}: python -m sse_toolkit {command}")
    assert refused == []


def test_dotted_names_in_the_readme_and_docs_exist() -> None:
    """Every ``sse_toolkit.x.y`` the pages name imports (a module, or a name in one)."""
    pages = [README, *sorted(DOCS.glob("*.md"))]
    names = {n for p in pages for n in re.findall(r"`(sse_toolkit(?:\.\w+)+)", p.read_text())}
    assert names
    for name in sorted(names):
        module, _, attr = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            assert hasattr(importlib.import_module(module), attr), name


def test_readme_links_point_at_files() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_the_hub_demo_as_the_readme_says(tmp_path: Path) -> None:
    """The README's first command (on a free port): the dashboard at /, the demo's
    channels moving, and the README's curl commands answered."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [PYTHON, "-m", "sse_toolkit", *SET_UP_HUB.split(" -m sse_toolkit ")[1].split()]
    process = ServerProcess([*command, "--port", str(port)], tmp_path / "hub.log")
    try:
        process.wait_listening(port)
        with httpx.Client(timeout=WAIT) as client:
            page = client.get(f"{base}/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            for channel, event in (("clock", "tick"), ("jobs", "progress"), ("metrics", "metric")):
                with connect_sse(client, "GET", f"{base}/sse/{channel}") as source:
                    got = next(e for e in source.iter_sse() if e.data)
                assert got.event == event, (channel, got)
            # The README's curl commands, as httpx requests.
            shell = "\n".join(code_blocks(README.read_text(), "sh"))
            (subscribe,) = re.findall(r"curl -N (\S+)", shell)
            (post,) = re.findall(r"curl -X POST .* -d '(.*)' (\S+)", shell)
            with connect_sse(client, "GET", subscribe.replace(":8000", f":{port}")) as source:
                assert next(e for e in source.iter_sse() if e.data).data
            body, url = post
            sent = client.post(
                url.replace(":8000", f":{port}"),
                content=body,
                headers={"content-type": "application/json"},
            )
            assert sent.status_code == 202, sent.text
    finally:
        process.stop()
