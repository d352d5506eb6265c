"""The daemon with `executor: {kind: celery}` mirrors the GPU hosts' workers from a real redis-server into its
journal: `i2vd status` lists a worker alive, then gone; a broker outage is said in status and STATUS=, and
`i2vd status` never waits on the broker (it reads only the journal)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from i2vd.cluster.presence import PresenceBeacon, worker_description
from i2vd.config.load import Config, load_config
from i2vd.service.daemon import Daemon
from i2vd.store.journal import Journal, journal_path
from i2vd.store.status import gather_status
from tests.end_to_end.harness import run_cli, write_config
from tests.support.fakes import wait_for


def celery_config(tmp_path: Path, broker: str) -> Config:
    return load_config(write_config(tmp_path, None, executor={"kind": "celery", "broker": broker, "queue": "studio"}))


def gpu_host() -> dict:
    server = {"name": "gpu0", "kind": "comfyui", "url": "http://127.0.0.1:8188", "jobs_done": 0}
    server.update(gate="open: 3120 MiB used of 24576", current_job=None)
    return worker_description([server], started_at=1_770_000_000.0, worker_id="gpu-b")


def workers(config: Config) -> list[dict]:
    journal = Journal(journal_path(config), read_only=True)  # as `i2vd status` opens it
    try:
        return gather_status(config, journal)["workers"]
    finally:
        journal.close()


def test_the_daemon_mirrors_workers_alive_then_gone_and_says_when_the_broker_is_down(tmp_path, redis_server):
    config = celery_config(tmp_path, redis_server.url)
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.presence is not None and daemon.presence.queue == "studio"
        with PresenceBeacon(redis_server.url, gpu_host, 0.1, queue="studio"):
            wait_for(lambda: [w["state"] for w in workers(config)] == ["alive"], timeout=15, message="worker alive")
            shown = json.loads(run_cli(tmp_path / "config.yaml", "status", "--json").stdout)
            assert [(w["worker_id"], w["server"], w["state"]) for w in shown["workers"]] == [
                ("gpu-b", "comfyui http://127.0.0.1:8188", "alive")
            ]
            text = run_cli(tmp_path / "config.yaml", "status").stdout
            assert "workers: 1 alive, 0 gone" in text
            assert f"gpu-b on {socket.gethostname()} (comfyui http://127.0.0.1:8188) — alive" in text
        wait_for(lambda: [w["state"] for w in workers(config)] == ["gone"], timeout=30, message="worker gone")

        redis_server.kill()
        wait_for(lambda: daemon.presence.reachable is False, timeout=15, message="the outage noticed")
        assert f"broker unreachable: {redis_server.url}" in daemon.status_line()
        text = run_cli(tmp_path / "config.yaml", "status").stdout  # answers from the journal: no broker read
        assert f"broker unreachable: {redis_server.url} since" in text
        assert "workers: 0 alive, 1 gone" in text and "GONE, last seen" in text
    finally:
        daemon.shutdown(grace_seconds=10)
    assert not any(thread.is_alive() for thread in daemon._threads)
