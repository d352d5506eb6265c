"""`i2vd check` and `i2vd status` given a GPU host's config (`i2vd worker`'s: no watch, no output_dir), as an
operator runs them on that host after following the README's walkthrough."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.end_to_end.harness import run_cli
from tests.support.fakes import wait_for
from tests.support.gpu_workers import WorkerProcess, write_worker_config


def test_check_on_a_gpu_host_validates_its_config_and_reaches_the_broker(tmp_path: Path, redis_server, fake_server):
    config = write_worker_config(tmp_path / "gpu-a", redis_server.url, fake_server.url)
    result = run_cli(config, "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a GPU host's config" in result.stdout
    assert f"queue i2vd-test at {redis_server.url}: reachable" in result.stdout
    assert f"  predict {fake_server.url}" in result.stdout

    redis_server.kill()
    result = run_cli(config, "check", check=False)
    assert result.returncode == 0 and "unreachable" in result.stdout  # the config is fine; the broker is said
    assert "Traceback" not in result.stderr


def test_check_on_a_bad_gpu_host_config_names_the_worker_s_problems(tmp_path: Path, redis_server):
    config = write_worker_config(tmp_path / "gpu-a", redis_server.url, "http://127.0.0.1:9")
    settings = yaml.safe_load(config.read_text())
    settings["executor"]["job_timeout_seconds"] = 1  # below the server's timeout_seconds
    config.write_text(yaml.safe_dump(settings))
    result = run_cli(config, "check", check=False)
    assert result.returncode == 78
    assert "above executor.job_timeout_seconds" in result.stderr
    assert "output_dir" not in result.stderr and "hot folder" not in result.stderr


def test_status_on_a_gpu_host_shows_the_broker_and_the_workers_on_its_queue(tmp_path: Path, redis_server, fake_server):
    config = write_worker_config(tmp_path / "gpu-a", redis_server.url, fake_server.url)
    worker = WorkerProcess(config, "worker").start()
    try:

        def status() -> str | None:
            text = run_cli(config, "status").stdout
            return text if "alive" in text else None

        said = wait_for(status, timeout=30, message=worker.log())
        assert "GPU host" in said and f"queue i2vd-test at {redis_server.url}: reachable" in said
        assert f"(predict {fake_server.url})" in said
        data = json.loads(run_cli(config, "status", "--json").stdout)
        assert data["broker"]["reachable"] is True and data["workers"][0]["state"] == "alive"
    finally:
        worker.close()
