"""A real `redis-server` (Debian's package) on a free 127.0.0.1 port, in its own temp directory.

Tests of the Celery executor use it as the broker and result backend. It keeps an append-only file
(`appendfsync always`), so `restart()` is a broker restart that keeps what was queued, and `kill()` is
an outage (SIGKILL) that `start()` ends on the same port. Without `redis-server` the tests that ask for
it are skipped, except under CI=true, where `.ci/run` installs it and a missing one fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
START_SECONDS = 10.0


def require_redis() -> str:
    """The redis-server binary, or skip (fail under CI) with how to get it."""
    if REDIS_SERVER:
        return REDIS_SERVER
    if os.environ.get("CI"):
        pytest.fail("redis-server is missing under CI (.ci/run installs it)")
    pytest.skip("no redis-server here: apt-get install redis-server (CI installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """One redis-server process; `url` stays the same across stop/start/restart."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = require_redis()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.process is not None:
            raise RuntimeError("redis-server is already running")
        arguments = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._wait_until_answering()
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on {self.url} within {START_SECONDS} s")

    def ping(self) -> bool:
        """True when the server answers PING (a raw RESP exchange: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: redis flushes its append-only file)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """An outage: SIGKILL, as when the broker host dies."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, how: signal.Signals) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(how)
        try:
            process.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.kill()
