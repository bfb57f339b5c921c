from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- Redis ---------------------------------------------------------------------------------

REDIS_URL_ENV = "SSE_TOOLKIT_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_redis_problems: dict[str, str | None] = {}


def redis_url() -> str:
    """The shared Redis the ``redis``-marked tests use (namespaced by a unique key prefix)."""
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _redis_problem() -> str | None:
    """Why the Redis tests cannot run here (None if they can); checked once per session."""
    url = redis_url()
    if url not in _redis_problems:
        problem: str | None = None
        try:
            import redis
        except ImportError:
            problem = "redis-py is not installed (pip install 'sse-toolkit[redis]')"
        else:
            client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
            try:
                client.ping()
            except Exception as exc:
                problem = (
                    f"no Redis answers at {url} ({type(exc).__name__}: {exc}); "
                    f"set {REDIS_URL_ENV} to use another one"
                )
            finally:
                client.close()
        _redis_problems[url] = problem
    return _redis_problems[url]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.redis`` tests when no Redis answers; with CI=true, fail them.

    Tests that start their own ``redis-server`` (the ``redis_server`` fixture) also need
    that binary on PATH.
    """
    if item.get_closest_marker("redis") is None:
        return
    problem = _redis_problem()
    own_server = "redis_server" in getattr(item, "fixturenames", ())
    if problem is None and own_server and shutil.which("redis-server") is None:
        problem = "redis-server is not on PATH (this test runs its own Redis)"
    if problem is None:
        return
    if _in_ci():
        pytest.fail(f"{problem}; CI=true, so Redis tests fail instead of skipping", pytrace=False)
    pytest.skip(problem)
