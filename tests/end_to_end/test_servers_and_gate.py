"""The VRAM gate and several servers, through the real daemon.

The gate reads a real command (a script printing "used MiB" from a file the test
rewrites), the way `ssh gpu-box nvidia-smi ...` would; NVML itself is the one
thing that cannot run here. Several fake servers pull from one journal.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.end_to_end.harness import journal_counts, run_cli, videos, write_config
from tests.support.fakes import FakePredictServer, wait_for, write_image


@pytest.fixture
def servers(mp4_bytes: bytes):
    started = [FakePredictServer(video=mp4_bytes, latency_seconds=0.2).start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def gpu_script(tmp_path: Path, used: str) -> tuple[Path, Path]:
    """A stand-in for nvidia-smi over ssh: prints what the test writes into `used`."""
    reading = tmp_path / "used-mib"
    reading.write_text(used)
    script = tmp_path / "fake-nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{reading}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, reading


def test_nothing_is_sent_while_the_gate_is_closed_and_the_job_runs_once_it_opens(tmp_path, fake_server, daemon_factory):
    script, reading = gpu_script(tmp_path, "10540\n")
    config = write_config(
        tmp_path,
        fake_server.url,
        gpu={"enabled": True, "source": "command", "command": str(script), "max_used_mb": 10000, "poll_seconds": 0.2},
    )
    daemon = daemon_factory(config).start()
    write_image(tmp_path / "in" / "gated.png", color=(1, 1, 1))
    wait_for(
        lambda: "waiting for VRAM: 10,540 MB used > 10,000 MB" in run_cli(config, "status").stdout,
        timeout=30,
        message="status shows the closed gate",
    )
    assert "waiting for VRAM: 10,540 MB used > 10,000 MB" in daemon.log()
    assert journal_counts(tmp_path / "state")["queued"] == 1
    assert fake_server.requests == []

    reading.write_text("3000\n")
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 1,
        timeout=30,
        message=f"done once the gate opened; log:\n{daemon.log()}",
    )
    assert len(fake_server.requests) == 1
    assert daemon.stop() == 0


def test_a_gate_that_cannot_read_the_gpu_waits_and_says_why(tmp_path, fake_server, daemon_factory):
    script, reading = gpu_script(tmp_path, "not a number\n")
    config = write_config(
        tmp_path,
        fake_server.url,
        gpu={"enabled": True, "source": "command", "command": str(script), "poll_seconds": 0.2},
    )
    daemon = daemon_factory(config).start()
    write_image(tmp_path / "in" / "blind.png", color=(2, 2, 2))
    wait_for(
        lambda: "cannot read GPU memory" in run_cli(config, "status").stdout,
        timeout=30,
        message="status says the GPU cannot be read",
    )
    assert fake_server.requests == []
    reading.write_text("100\n")
    wait_for(lambda: journal_counts(tmp_path / "state").get("done") == 1, timeout=30)
    assert daemon.stop() == 0


def test_three_servers_share_one_journal_one_job_each_at_a_time(tmp_path, servers, daemon_factory):
    config = write_config(
        tmp_path,
        None,
        server=None,
        servers=[
            {"name": f"gpu{index}", "kind": "predict", "url": server.url, "timeout_seconds": 30}
            for index, server in enumerate(servers)
        ],
    )
    daemon = daemon_factory(config).start()
    for index in range(12):
        write_image(tmp_path / "in" / f"img_{index:02}.png", color=(index, 30, 60))
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 12,
        timeout=60,
        message=f"12 done; log:\n{daemon.log()}",
    )
    requests = [request for server in servers for request in server.requests]
    assert len(requests) == 12
    assert len({request.image_sha256 for request in requests}) == 12, "an image went to two servers"
    assert all(server.max_concurrent == 1 for server in servers)
    assert all(len(server.requests) >= 1 for server in servers), [len(server.requests) for server in servers]
    status = wait_for(
        lambda: (
            (published := json.loads(run_cli(config, "status", "--json").stdout))
            and sum(server["jobs_done"] for server in published["servers"]) == 12
            and published
        ),
        timeout=10,
        message="status (published every second) counts every server's jobs",
    )
    assert [server["name"] for server in status["servers"]] == ["gpu0", "gpu1", "gpu2"]
    assert len(videos(tmp_path / "out")) == 12
    assert daemon.stop() == 0


def test_a_server_that_is_down_takes_no_jobs_while_the_others_go_on(tmp_path, servers, daemon_factory):
    servers[1].go_down()
    config = write_config(
        tmp_path,
        None,
        server=None,
        servers=[
            {
                "name": f"gpu{index}",
                "kind": "predict",
                "url": server.url,
                "timeout_seconds": 30,
                "connect_timeout_seconds": 1,
            }
            for index, server in enumerate(servers)
        ],
    )
    daemon = daemon_factory(config).start()
    for index in range(8):
        write_image(tmp_path / "in" / f"img_{index}.png", color=(index, 90, 9))
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 8, timeout=60, message=f"8 done; log:\n{daemon.log()}"
    )
    assert servers[1].requests == []
    jobs = json.loads(run_cli(config, "jobs", "--json").stdout)
    assert all(job["attempts"] == 0 for job in jobs), "a down server used up attempts"
    status = run_cli(config, "status").stdout
    assert "gpu1" in status and "DOWN since" in status
    assert daemon.stop() == 0
