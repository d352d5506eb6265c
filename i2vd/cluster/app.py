"""The Celery app both sides build from `executor:`, its timing rules, and the Redis keys i2vd keeps beside it.

Celery is imported here only, and only when `executor.kind: celery` is used: a local config never imports it.

Timing (SPEC "More than one machine"), from the longest job T (`job_timeout_seconds`, by default the longest
`timeout_seconds` of the config's servers) and the margin M (`redelivery_margin_seconds`, 60 s):
- a worker waits at most M/4 for its VRAM gate before handing the task back to the queue;
- the visibility timeout is T + M/2: a task still unacknowledged that long (its worker died) is delivered again;
  a live task never runs that long (gate M/4 + call T);
- every worker sweeps for such tasks every M/4, so a killed worker's task is delivered again within T + 3M/4;
- the ingest host waits for a task nobody has started at most T + M (then the job goes back to its queue, no
  attempt used, and the queue pauses as for a server that is down), and for one that started at most
  2(T + M): a run killed at its very end, delivered again and run in full.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from i2vd.config.executor import CELERY_MISSING, ExecutorConfig, safe_url
from i2vd.config.load import Config, ServerConfig
from i2vd.config.worker import WorkerConfig

TASK_NAME = "i2vd.render"
PAYLOAD_VERSION = 1
MARKER_TTL_SECONDS = 7 * 24 * 3600  # an awaited-task marker nobody removed (the ingest host's journal was lost)
SOCKET_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Timings:
    job_seconds: float  # T: the longest one job may take on a GPU host
    margin_seconds: float  # M

    @property
    def gate_seconds(self) -> float:
        return self.margin_seconds / 4

    @property
    def visibility_timeout(self) -> float:
        return self.job_seconds + self.margin_seconds / 2

    @property
    def sweep_seconds(self) -> float:
        return self.margin_seconds / 4

    @property
    def unstarted_wait(self) -> float:
        """How long the ingest host waits for a task no worker has started."""
        return self.job_seconds + self.margin_seconds

    @property
    def started_wait(self) -> float:
        """How long the ingest host waits for one call's result at most."""
        return 2 * (self.job_seconds + self.margin_seconds)


def timings(executor: ExecutorConfig, servers: Iterable[ServerConfig]) -> Timings:
    longest = executor.job_timeout_seconds or max(server.timeout_seconds for server in servers)
    return Timings(job_seconds=longest, margin_seconds=executor.redelivery_margin_seconds)


def config_timings(config: Config | WorkerConfig) -> Timings:
    """timings() of a host's config (the ingest host's or a GPU host's): its executor and every server it names."""
    return timings(config.executor, [entry.server for entry in config.servers])


def result_url(executor: ExecutorConfig) -> str:
    return executor.result_backend or executor.broker


def awaited_key(executor: ExecutorConfig, task_id: str) -> str:
    """Set by the ingest host before it publishes a task; gone once it no longer waits for it."""
    return f"i2vd:{executor.queue}:awaited:{task_id}"


def key_digest(idem_key: str) -> str:
    return hashlib.sha256(idem_key.encode("utf-8", "surrogateescape")).hexdigest()


def make_app(executor: ExecutorConfig, timing: Timings) -> Any:
    """The Celery app: JSON only, acks late, one task at a time per slot, the visibility timeout above."""
    try:
        from celery import Celery
    except ImportError:
        raise RuntimeError(CELERY_MISSING) from None
    app = Celery("i2vd", broker=executor.broker, backend=result_url(executor), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=executor.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=CONNECT_TIMEOUT_SECONDS,
        broker_transport_options={
            "visibility_timeout": timing.visibility_timeout,
            "unacked_restore_interval": timing.sweep_seconds,
            "unacked_restore_throttle": 1,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        redis_socket_timeout=SOCKET_TIMEOUT_SECONDS,
        redis_socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        result_backend_always_retry=False,
        result_expires=MARKER_TTL_SECONDS,
    )
    return app


def redis_client(url: str) -> Any:
    """A plain Redis client for i2vd's markers (redis-py comes with celery[redis])."""
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS
    )


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a broker or result store that cannot be reached raises (kombu, redis-py, the socket)."""
    import kombu.exceptions
    import redis.exceptions

    return (
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
        OSError,
    )


def unreachable(executor: ExecutorConfig, error: BaseException) -> str:
    return f"cannot reach the broker {safe_url(executor.broker)}: {str(error)[:200] or type(error).__name__}"
