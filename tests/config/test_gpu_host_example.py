"""examples/gpu-host.yaml, the GPU host's worker config the README walks through, stays valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from i2vd.config.load import load_config
from i2vd.config.worker import load_worker_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gpu-host.yaml"
# SPEC "More than one machine": a worker's config needs only these keys.
WORKER_KEYS = {"state_dir", "server", "servers", "gpu", "retry", "executor"}


def test_the_worker_config_loader_takes_it():
    config = load_worker_config(EXAMPLE)
    assert config.executor.kind == "celery" and config.executor.queue == "i2vd"


def test_the_gpu_host_example_has_only_worker_keys_and_a_celery_executor():
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert set(config) <= WORKER_KEYS, f"not a worker key: {sorted(set(config) - WORKER_KEYS)}"
    assert "state_dir" in config and ("server" in config) != ("servers" in config)
    executor = config["executor"]
    assert executor["kind"] == "celery" and executor["queue"] == "i2vd"
    assert executor["broker"].startswith("redis://")
    assert config["server"]["url"].startswith("http://127.0.0.1:")  # nobody but its worker reaches the server
    assert config["gpu"]["min_free_mb"] > 0


def test_the_sections_it_shares_with_the_daemon_config_are_valid(tmp_path: Path):
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    shared = {key: config[key] for key in ("server", "gpu", "retry")}
    daemon_side = {
        "state_dir": str(tmp_path / "state"),
        "output_dir": str(tmp_path / "out"),
        "watch": [{"path": str(tmp_path / "in")}],
        **shared,
    }
    (tmp_path / "in").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(daemon_side), encoding="utf-8")
    loaded = load_config(path)  # raises ConfigError with every problem
    assert loaded.server.kind == "predict" and loaded.servers[0].gpu.min_free_mb == 12000
