"""Read a stream from Python, reconnecting with ``Last-Event-ID`` as a browser would.

``python examples/client_read.py http://127.0.0.1:8000/sse/news``
(``pip install "sse-toolkit[client]"``).
"""

import sys

import anyio

from sse_toolkit import client


async def main(url: str = "http://127.0.0.1:8000/sse/news") -> None:
    # --8<-- [start:read]
    async with client.connect(url) as events:
        async for event in events:  # .data, .event ("message" by default), .id, .retry, .json()
            print(event.event, event.id, event.data)
    # --8<-- [end:read]


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
