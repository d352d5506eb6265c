"""`i2vd worker` as real subprocesses (GPU hosts), and the ingest host's config, for the Celery executor's tests.

Timing for tests: a short server timeout (T) and redelivery margin (M) make the visibility timeout T + M/2
(i2vd/cluster/app.py), so a killed worker's task comes back in seconds, by the same rule as in production.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.fakes import wait_for
from tests.support.processes import I2vdProcess

TIMEOUT_SECONDS = 3.0  # T: the fake server's calls take no time unless held
MARGIN_SECONDS = 2.0  # M: visibility timeout T + 1 s, sweeps every 0.5 s


def executor(redis_url: str, timeout_seconds: float = TIMEOUT_SECONDS, **overrides) -> dict:
    return {
        "kind": "celery",
        "broker": redis_url,
        "queue": "i2vd-test",
        "redelivery_margin_seconds": MARGIN_SECONDS,
        "job_timeout_seconds": timeout_seconds,
        **overrides,
    }


def predict_server(url: str, timeout_seconds: float = TIMEOUT_SECONDS, **settings) -> dict:
    return {"kind": "predict", "url": url, "timeout_seconds": timeout_seconds, "connect_timeout_seconds": 2, **settings}


def write_worker_config(
    folder: Path,
    redis_url: str,
    server_url: str | list[str] | None,
    timeout_seconds: float = TIMEOUT_SECONDS,
    **overrides,
) -> Path:
    """A GPU host's config: state_dir, server (or servers, given several URLs), gpu, executor only (no watch,
    output_dir or profiles)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(server_url, list):
        servers = {
            "servers": [
                predict_server(url, timeout_seconds, name=f"gpu{index}") for index, url in enumerate(server_url)
            ]
        }
    else:
        servers = {"server": predict_server(server_url, timeout_seconds) if server_url else {"kind": "builtin"}}
    config = {
        "state_dir": str(folder / "state"),
        "log_level": "info",
        **servers,
        "gpu": {"enabled": False},
        "executor": executor(redis_url, timeout_seconds),
        **overrides,
    }
    path = folder / f"{folder.name}.yaml"  # as i2vd-worker@<name> reads: status names the worker <host>/<name>
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class WorkerProcess(I2vdProcess):
    """One `python -m i2vd worker -c CONFIG`; its log in the config's folder."""

    what = "worker"
    stop_seconds = 30.0  # Celery's warm shutdown

    def __init__(self, config: Path, name: str, environment: dict[str, str] | None = None) -> None:
        super().__init__(config.parent / f"{name}.log", environment)
        self.config = config

    def start(self, wait_ready: bool = True) -> WorkerProcess:
        self._launch("worker", "-c", str(self.config))
        if wait_ready:
            wait_for(
                lambda: " ready." in self.log() or self.process.poll() is not None,
                timeout=30,
                message=f"the worker never said ready; log:\n{self.log()}",
            )
            assert self.process.poll() is None, f"the worker exited early: {self.log()}"
        return self
