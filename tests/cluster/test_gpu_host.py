"""A GPU host's task body (i2vd/cluster/gpu_worker.py GpuHost) against a real redis-server and the fake I2V server:
what is dropped without work, what waits for the VRAM gate, and what describe() tells the presence beacon.
The Celery worker around it is exercised end to end in test_cluster_daemon.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2vd.cluster.app import awaited_key, config_timings, make_app, redis_client
from i2vd.cluster.gpu_worker import GpuHost, Requeue, Skip
from i2vd.cluster.messages import payload
from i2vd.config.worker import load_worker_config
from i2vd.render.backends.base import VideoRequest
from i2vd.render.gpu import MemoryReading
from tests.support.fakes import wait_for, write_image
from tests.support.gpu_workers import write_worker_config


class Rig:
    def __init__(self, tmp_path: Path, redis_url: str, server_url: str, gpu: dict | None = None, used_mb: int = 0):
        path = write_worker_config(tmp_path / "gpu-host", redis_url, server_url, **({"gpu": gpu} if gpu else {}))
        self.config = load_worker_config(path)
        self.used_mb = used_mb
        timing = config_timings(self.config)
        self.app = make_app(self.config.executor, timing)
        self.redis = redis_client(redis_url)
        self.host = GpuHost(self.config, timing, self.redis, gpu_reader=lambda: MemoryReading(self.used_mb, 24000))
        self.started: list[dict] = []
        self.image = write_image(tmp_path / "beach.jpg")

    def body(self, job_id: int = 1, frames: int = 16) -> dict:
        request = VideoRequest(
            image=self.image,
            image_name="beach.jpg",
            prompt="Waves",
            resolution="512p",
            frames=frames,
            fps=8,
            steps=50,
            guidance=9.0,
            job_id=job_id,
            key=f"key-{job_id}",
        )
        return payload(request, self.config.executor)

    def await_task(self, task_id: str) -> None:
        """What the ingest host does before it publishes."""
        self.redis.set(awaited_key(self.config.executor, task_id), "1")

    def run(self, task_id: str, job_id: int = 1, frames: int = 16):
        return self.host.run_task(
            task_id,
            self.body(job_id, frames),
            stored_state=lambda: self.app.AsyncResult(task_id).state,
            started=self.started.append,
        )

    def close(self) -> None:
        self.host.close()
        self.app.close()
        self.redis.close()


@pytest.fixture
def rig(tmp_path: Path, redis_server, fake_server) -> Iterator[Rig]:
    made = Rig(tmp_path, redis_server.url, fake_server.url)
    yield made
    made.close()


def test_an_awaited_task_is_rendered_by_the_hosts_server(rig: Rig, fake_server):
    rig.await_task("t-1")
    result = rig.run("t-1")
    assert result["ok"] and result["server"]["kind"] == "predict" and result["video"]
    assert len(fake_server.requests) == 1 and fake_server.requests[0].prompt == "Waves"
    assert rig.started and rig.started[0]["server"] == rig.config.servers[0].name


def test_a_job_the_hosts_server_cannot_take_fails_unsent_as_bad_input(rig: Rig, fake_server):
    """The ingest host holds profiles to the widest range (a ComfyUI GPU host takes 81 frames); a GPU host whose
    server is a /predict one (8-32 frames) fails such a job naming its server, and never sends it."""
    rig.await_task("t-81")
    result = rig.run("t-81", frames=81)
    assert not result["ok"] and result["error"] == "BadInput", result
    assert "frames: 81 is above 32" in result["message"]
    assert fake_server.requests == []


def test_a_task_nobody_awaits_is_dropped_without_calling_the_server(rig: Rig, fake_server):
    assert isinstance(rig.run("t-gone"), Skip)  # its job was done, or retried as another task
    assert fake_server.requests == [] and rig.started == []


def test_a_task_whose_result_is_already_stored_is_acknowledged_without_work(rig: Rig, fake_server):
    rig.await_task("t-2")
    rig.app.backend.store_result("t-2", {"version": 1, "ok": True, "video": ""}, "SUCCESS")
    assert isinstance(rig.run("t-2"), Skip)
    assert fake_server.requests == []


def test_a_closed_gate_hands_the_task_back_to_the_queue(tmp_path: Path, redis_server, fake_server):
    gate = {"enabled": True, "source": "nvml", "max_used_mb": 8000, "poll_seconds": 0.05}
    rig = Rig(tmp_path, redis_server.url, fake_server.url, gpu=gate, used_mb=20000)
    try:
        rig.await_task("t-3")
        assert isinstance(rig.run("t-3"), Requeue)  # after at most a quarter of the margin: another host may take it
        assert fake_server.requests == []
        assert "waiting for VRAM: 20,000 MB used > 8,000 MB" in rig.host.describe()["servers"][0]["gate"]
        rig.used_mb = 1000
        assert rig.run("t-3")["ok"]
    finally:
        rig.close()


def test_describe_tells_the_host_its_server_gate_and_current_job(rig: Rig, fake_server):
    described = rig.host.describe()
    assert described["host"] and described["queue"] == "i2vd-test"
    [server] = described["servers"]
    assert server["kind"] == "predict" and server["url"].startswith(fake_server.url)
    assert server["gate"] == "gate off" and server["current_job"] is None
    fake_server.hang(times=1)
    rig.await_task("t-4")
    worker = threading.Thread(target=rig.run, args=("t-4", 4), name="test-task")
    worker.start()
    try:
        job = wait_for(lambda: rig.host.describe()["servers"][0]["current_job"])
        assert (job["key"], job["job_id"], job["task_id"]) == ("key-4", 4, "t-4")
    finally:
        fake_server.clear_faults()
        worker.join(timeout=30)
    assert rig.host.describe()["servers"][0]["current_job"] is None
    assert rig.host.describe()["jobs_done"] == 1
