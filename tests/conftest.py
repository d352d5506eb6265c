"""Fixtures shared by every test tier (unit, integration, end_to_end).

- `mp4_bytes`: a real small H.264 MP4, made once per session.
- `fake_server`: a started FakePredictServer that answers with `mp4_bytes` (see tests/support/fakes.py).
- `apps`: two real Gradio apps on 127.0.0.1 (a 7-input I2V app and an SVD-like one), started once
  per session, only when a test asks (tests/support/gradio_apps.py).
- `redis_server`: a real redis-server on a free 127.0.0.1 port (skipped without one, failed under CI).
- `no_thread_leaks` (autouse): fails a test that leaves a thread running.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import FakePredictServer, make_test_mp4
from tests.support.redis_server import RedisServer

THREAD_GRACE_SECONDS = 2.0


@pytest.fixture(scope="session")
def mp4_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_test_mp4(tmp_path_factory.mktemp("media") / "video.mp4")


@pytest.fixture
def fake_server(mp4_bytes: bytes) -> Iterator[FakePredictServer]:
    with FakePredictServer(video=mp4_bytes) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port, killed after the test (tests/support/redis_server.py)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture(scope="session")
def apps(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.gradio_apps import start_apps  # imports gradio's client side only when a test needs the apps

    yield from start_apps(tmp_path_factory)


def _pooled_by_session_apps(thread: threading.Thread) -> bool:
    """The session's Gradio apps (fixture `apps`) run sync handlers on AnyIO's worker pool, which starts
    a thread when a call comes and ends it after 10 s idle: the pool's, not the test's."""
    return thread.name == "AnyIO worker thread" and "tests.support.gradio_apps" in sys.modules


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads behind, daemon or not (after watchdog's conftest).

    Threads get THREAD_GRACE_SECONDS to finish after the test: a stop() that has been
    asked for but not yet joined is fine, a thread nobody stops is not.
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    leftover = [
        thread for thread in threading.enumerate() if thread not in before and not _pooled_by_session_apps(thread)
    ]
    for thread in leftover:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    alive = [thread.name for thread in leftover if thread.is_alive()]
    if alive:
        pytest.fail(f"test left {len(alive)} thread(s) running: {', '.join(alive)}")
