"""The client in sync code (a script, a thread): the same, with ``connect_sync``.

``python examples/client_sync.py http://127.0.0.1:8000/sse/jobs``
"""

import sys

from sse_toolkit import LAGGED_EVENT, RESET_EVENT, client


def follow(url: str, *, stop_after: int | None = None) -> list[str]:
    seen: list[str] = []
    with client.connect_sync(url, read_timeout=40.0) as events:
        for event in events:
            if event.event == RESET_EVENT:  # the server cannot replay: refetch your state
                seen.clear()
            elif event.event == LAGGED_EVENT:  # skipped events, counted
                print("missed", event.json()["missed"])
            else:
                seen.append(event.data)
                print(events.last_event_id, event.data)
            if stop_after is not None and len(seen) >= stop_after:
                break
    return seen


if __name__ == "__main__":
    follow(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/sse/jobs")
