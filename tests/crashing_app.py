"""An app that cannot start in a worker process (for the runner's supervisor tests): the
supervisor's own process imports it fine (it only checks the app can be imported)."""

import multiprocessing

if multiprocessing.parent_process() is not None:  # (a worker: spawned by the supervisor)
    raise RuntimeError("this worker cannot start")


async def app(scope: object, receive: object, send: object) -> None:
    return None
