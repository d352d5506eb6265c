"""Fixtures for the Celery executor's tests: a real redis-server (tests/conftest.py), real `i2vd worker`
processes and a real `i2vd run` ingest daemon, every one killed after the test."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.end_to_end.harness import DaemonProcess, write_config
from tests.support.gpu_workers import TIMEOUT_SECONDS, WorkerProcess, executor, write_worker_config
from tests.support.redis_server import RedisServer


@dataclass
class Cluster:
    """An ingest host and GPU hosts around one broker, all under tmp_path."""

    tmp_path: Path
    redis: RedisServer
    started: list = field(default_factory=list)
    timeout_seconds: float = TIMEOUT_SECONDS  # the GPU hosts' server timeout, and job_timeout_seconds

    @property
    def state_dir(self) -> Path:
        return self.tmp_path / "state"

    @property
    def output_dir(self) -> Path:
        return self.tmp_path / "out"

    @property
    def inbox(self) -> Path:
        return self.tmp_path / "in"

    def ingest_config(self, **executor_overrides) -> Path:
        settings = executor(self.redis.url, self.timeout_seconds, **executor_overrides)
        return write_config(self.tmp_path, None, executor=settings)

    def daemon(self, wait_ready: bool = True, **executor_overrides) -> DaemonProcess:
        config = self.ingest_config(**executor_overrides)
        daemon = DaemonProcess(config, self.tmp_path / f"daemon-{len(self.started)}.log")
        self.started.append(daemon)
        return daemon.start(wait_ready=wait_ready)

    def worker(
        self,
        server_url: str | list[str] | None,
        name: str = "gpu-host",
        wait_ready: bool = True,
        environment: dict[str, str] | None = None,
        **settings,
    ) -> WorkerProcess:
        config = write_worker_config(self.tmp_path / name, self.redis.url, server_url, self.timeout_seconds, **settings)
        worker = WorkerProcess(config, f"worker-{len(self.started)}", environment)
        self.started.append(worker)
        return worker.start(wait_ready=wait_ready)

    def logs(self) -> str:
        return "\n".join(f"--- {item.log_path.name}\n{item.log()[-4000:]}" for item in self.started)


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer):
    made = Cluster(tmp_path, redis_server)
    yield made
    for item in made.started:
        item.close()
