"""`i2vd check` and `i2vd status` given a GPU host's config (the one `i2vd worker` reads: no hot folder, no
output folder, `executor: celery`).

Such a host keeps no journal: its jobs are the ingest host's. So `check` validates the file as `i2vd worker`
does and says whether the broker answers; `status` says the same and lists the workers announced on its queue
(this host's among them), as the ingest host's status does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from i2vd.config.worker import WorkerConfig, load_worker_config


def gpu_host_config(path: Path) -> WorkerConfig | None:
    """The file as a GPU host's config when it reads as one (no watch, no output_dir, executor.kind celery);
    None when it does not (the ingest config's own problems are then the ones to report). A GPU host's config
    with problems raises its ConfigError: those, not a missing hot folder, are what to fix."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "watch" in data or "output_dir" in data:
        return None
    executor = data.get("executor")
    if not isinstance(executor, dict) or executor.get("kind") != "celery":
        return None
    return load_worker_config(path)


def broker_and_workers(config: WorkerConfig) -> dict[str, Any]:
    """What the broker says now: reachable or not (and why), and the workers announced on the queue."""
    from i2vd.cluster.presence import BrokerUnreachable, read_presence, redact_url

    executor = config.executor
    broker: dict[str, Any] = {"url": redact_url(executor.broker), "queue": executor.queue, "reachable": True}
    workers: list[dict[str, Any]] = []
    try:
        workers = [{**seen.as_dict(), "state": "alive"} for seen in read_presence(executor.broker, executor.queue)]
    except BrokerUnreachable as error:
        broker.update(reachable=False, error=error.reason, since=time.time())
    return {"role": "gpu host", "config": config.source, "broker": broker, "workers": workers}


def _servers(config: WorkerConfig) -> list[str]:
    named = [(entry, "" if entry.name == entry.server.url else f"{entry.name}: ") for entry in config.servers]
    return [f"  {name}{entry.server.kind} {entry.server.url}" for entry, name in named]


def _broker_line(broker: dict[str, Any]) -> str:
    where = f"queue {broker['queue']} at {broker['url']}"
    if broker["reachable"]:
        return f"broker:  {where}: reachable"
    return f"broker:  {where}: unreachable: {broker['error']}"


def run_gpu_host_check(config: WorkerConfig, out: TextIO) -> int:
    """The config is valid (else ConfigError was raised): 0, whether the broker answers or not (said)."""
    state = broker_and_workers(config)
    lines = [
        f"config {config.source}: ok (a GPU host's config for `i2vd worker`: no hot folders or outputs here)",
        _broker_line(state["broker"]),
        f"server(s), one job at a time each (gate: {'on' if config.gpu.enabled else 'off'}):",
        *_servers(config),
    ]
    print("\n".join(lines), file=out)
    return 0


def render_gpu_host_status(state: dict[str, Any]) -> str:
    from i2vd.store.status import _broker_and_workers

    lines = [
        f"GPU host ({state['config']}, `i2vd worker`): jobs and outputs are the ingest host's (`i2vd status` there)",
        _broker_line(state["broker"]),
    ]
    listed = _broker_and_workers({"workers": state["workers"]})
    return "\n".join(lines + (listed or ["workers: none announced on this queue"]))
