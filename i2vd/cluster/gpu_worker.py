"""`i2vd worker`: a GPU host takes render tasks from the Celery queue, one at a time per server.

A real Celery worker (threads pool, one thread per configured server, prefetch 1 each, acks late) runs the task
below. Each task takes a free server slot, waits for that GPU's own VRAM gate (at most a quarter of the
redelivery margin, else the task goes back to the queue for another host), calls the slot's backend (any kind,
make_backend) and returns the video, or the failure's class name and message (messages.py).

Exactly once, on this side: a task the ingest host no longer awaits (its job was done, given up, or retried
under a new task) is acknowledged without work, and so is a task whose result is already stored (delivered
again after its worker stored the result but died before acknowledging it).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2vd.cluster import messages
from i2vd.cluster.app import (
    TASK_NAME,
    Timings,
    awaited_key,
    config_timings,
    connection_errors,
    make_app,
    redis_client,
)
from i2vd.cluster.presence import PresenceBeacon, worker_description
from i2vd.config.executor import safe_url
from i2vd.config.load import ServerConfig
from i2vd.config.parameter_limits import range_problems, server_limits
from i2vd.config.parameters import PARAMETER_NAMES
from i2vd.config.worker import WorkerConfig
from i2vd.core.clock import Clock
from i2vd.core.notify import Notifier
from i2vd.render.backends.base import Backend, BackendError, BadInput, ServerUnavailable
from i2vd.render.gpu import Reader, VramGate

log = logging.getLogger("i2vd.cluster")

EX_UNAVAILABLE = 69
WORK_FOLDER = "worker"  # under state_dir: replies in transit, removed after each task


@dataclass
class Slot:
    """One server of this host, its GPU's gate, and the job it runs now."""

    name: str
    server: ServerConfig
    backend: Backend
    gate: VramGate
    job: dict[str, Any] | None = field(default=None)
    done: int = 0


class GpuHost:
    """What `i2vd worker` serves: its server slots, and the task's work (without Celery's own parts)."""

    def __init__(
        self,
        config: WorkerConfig,
        timing: Timings,
        redis: Any,
        *,
        clock: Clock | None = None,
        gpu_reader: Reader | None = None,
        backends: list[Backend] | None = None,
    ) -> None:
        from i2vd.render.backends import make_backend

        self.config = config
        self.timing = timing
        self.redis = redis
        self.clock = clock or Clock()
        self.stop = threading.Event()
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.jobs_done = self.jobs_failed = 0
        self.slots: list[Slot] = []
        for index, entry in enumerate(config.servers):
            backend = backends[index] if backends else make_backend(entry.server, config.state_dir)
            gpu = dataclasses.replace(entry.gpu, enabled=False) if entry.server.kind == "builtin" else entry.gpu
            gate = VramGate.from_config(gpu, self.clock, gpu_reader, server_url=entry.server.url)
            self.slots.append(Slot(entry.name, entry.server, backend, gate))
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in self.slots:
            self._free.put(slot)
        self._errors = connection_errors()

    def describe(self) -> dict[str, Any]:
        """This host for the presence beacon: host, each server with its gate reading and current job."""
        return {
            "host": self.host,
            "pid": os.getpid(),
            "queue": self.config.executor.queue,
            "started_at": self.started_at,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "servers": [
                {
                    "name": slot.name,
                    "kind": slot.server.kind,
                    "url": slot.server.url,  # not backend.describe(): that may ask the server, the beacon must not wait
                    "gate": slot.gate.detail,
                    "gate_state": slot.gate.state,
                    "current_job": dict(slot.job) if slot.job else None,
                }
                for slot in self.slots
            ],
        }

    def close(self) -> None:
        self.stop.set()
        for slot in self.slots:
            slot.backend.close()

    # -- the task -------------------------------------------------------------------------------
    def run_task(self, task_id: str, data: Any, stored_state: Callable[[], str], started: Callable[[dict], None]):
        """The task's body: a result dict, or a Skip/Requeue (the Celery task turns them into Ignore/Reject)."""
        key = data.get("key") if isinstance(data, dict) else None
        job_id = data.get("job_id") if isinstance(data, dict) else None
        try:
            if not self.redis.exists(awaited_key(self.config.executor, task_id)):
                why = "not awaited any more (done, or retried as another task): dropped"
                log.info("task %s (job %s): %s", task_id, job_id, why)
                return Skip()
            if stored_state() == "SUCCESS":
                log.info("task %s (job %s): its result is already stored: acknowledged without work", task_id, job_id)
                return Skip()
        except self._errors as error:
            log.warning("task %s: cannot reach the broker (%s): back to the queue", task_id, error)
            return Requeue()
        slot = self._free.get()  # prefetch is one per slot: a slot is free for every task this host holds
        try:
            if not self._gate_open(slot):
                log.info("task %s: %s: %s; back to the queue for another host", task_id, slot.name, slot.gate.detail)
                return Requeue()
            slot.job = {"key": key, "job_id": job_id, "task_id": task_id, "since": time.time()}
            try:
                started({"host": self.host, "server": slot.name, "run": uuid.uuid4().hex})
            except self._errors as error:
                log.warning("task %s: cannot reach the broker (%s): back to the queue", task_id, error)
                return Requeue()
            result = self._call(slot, task_id, data)
            if result["ok"]:
                self.jobs_done += 1
                slot.done += 1
            else:
                self.jobs_failed += 1
            return result
        finally:
            slot.job = None
            self._free.put(slot)

    def _gate_open(self, slot: Slot) -> bool:
        """This GPU's gate, waited for at most timing.gate_seconds (then another host may take the task)."""
        deadline = self.clock.monotonic() + self.timing.gate_seconds
        expired = threading.Event()

        def poll() -> None:
            if self.clock.monotonic() >= deadline:
                expired.set()

        return slot.gate.wait_open(self.stop, on_poll=poll, cancel=expired)

    def _call(self, slot: Slot, task_id: str, data: Any) -> dict[str, Any]:
        folder = self.config.state_dir / WORK_FOLDER / task_id.replace("/", "_")
        try:
            request = messages.video_request(data, folder)
            # The ingest host holds profiles to the widest range of any server kind: this server judges its own.
            values = {name: getattr(request, name) for name in PARAMETER_NAMES}
            unfit = range_problems(values, server_limits(slot.server.kind, slot.server.url, slot.name))
            if unfit:
                return messages.failure(BadInput(f"this server cannot take the job's {'; '.join(unfit)}"), self.host)
            image = data["image"].get("path") or "inline"
            log.info(
                "task %s: job %s on %s (%s, image %s)", task_id, request.job_id, slot.name, request.image_name, image
            )
            reply = slot.backend.generate(request)
            video = Path(reply.path) if reply.path is not None else reply.data or b""
            server = slot.backend.describe()
            return messages.success(video, server, reply.server_seconds, self.host, self.config.executor, task_id)
        except messages.PayloadError as error:
            return messages.failure(BadInput(str(error)), self.host)
        except BackendError as error:
            log.warning("task %s: %s: %s", task_id, type(error).__name__, error)
            return messages.failure(error, self.host)
        except OSError as error:  # this host's disk, not the job's fault
            problem = ServerUnavailable(f"worker {self.host}: cannot receive the video: {error.strerror or error}")
            return messages.failure(problem, self.host)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class Skip:
    """Acknowledge without work, and leave the stored result as it is."""


class Requeue:
    """Hand the task back to the queue (a closed gate, an unreachable broker)."""


class _QuietHandBacks(logging.Filter):
    """Celery logs each task handed back to the queue as a warning with a traceback; i2vd's own line says why."""

    def __init__(self, reject: type[BaseException]) -> None:
        super().__init__()
        self.reject = reject

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.reject))


def register_task(app: Any, host: GpuHost) -> Any:
    from celery.exceptions import Ignore, Reject

    logging.getLogger("celery.app.trace").addFilter(_QuietHandBacks(Reject))

    # resultrepr_maxsize: Celery logs each result; the video's base64 is no log line
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, resultrepr_maxsize=120)
    def render(task: Any, data: Any) -> dict[str, Any]:
        task_id = task.request.id
        outcome = host.run_task(
            task_id,
            data,
            stored_state=lambda: app.AsyncResult(task_id).state,
            started=lambda meta: task.update_state(state="STARTED", meta=meta),
        )
        if isinstance(outcome, Skip):
            raise Ignore()
        if isinstance(outcome, Requeue):
            raise Reject(requeue=True)
        return outcome

    return render


def run_worker(config: WorkerConfig, *, gpu_reader: Reader | None = None) -> int:
    """The worker process's life: the Celery worker in this thread until SIGTERM/SIGINT (warm shutdown)."""
    timing = config_timings(config)
    app = make_app(config.executor, timing)
    host = GpuHost(config, timing, redis_client(config.executor.broker), gpu_reader=gpu_reader)
    register_task(app, host)
    beacon = PresenceBeacon(config.executor.broker, lambda: presence(host), queue=config.executor.queue)
    name = f"i2vd-{os.getpid()}@{host.host}"
    worker = app.Worker(
        hostname=name,
        queues=[config.executor.queue],
        pool_cls="threads",
        concurrency=len(host.slots),
        loglevel=config.log_level.upper(),
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        optimization="fair",
        quiet=True,
    )
    log.info(
        "i2vd worker %s: queue %s at %s, %d server(s): %s",
        name,
        config.executor.queue,
        safe_url(config.executor.broker),
        len(host.slots),
        ", ".join(f"{slot.name} ({slot.server.kind})" for slot in host.slots),
    )
    from celery import signals  # here: the config was checked first (celery missing is a config error, exit 78)

    notifier = Notifier()  # i2vd-worker.service is Type=notify: READY once set up, STATUS= says if it takes tasks
    on_ready = functools.partial(_notify, notifier, f"STATUS=taking tasks from {config.executor.queue}")
    on_stopping = functools.partial(_notify, notifier, "STOPPING=1")
    grace = StopGrace(config.stop_grace_seconds, beacon)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutting_down.connect(on_stopping, weak=False)
    signals.worker_shutting_down.connect(grace.start, weak=False)
    # READY now, not once the broker answers: a GPU host that boots before the queue host waits for the broker, and
    # waiting in "activating" would hold up multi-user.target (it waits for the units it wants) and time the unit
    # out. `systemctl status` says what it waits for until the consumer takes tasks.
    broker = safe_url(config.executor.broker)
    _notify(notifier, "READY=1", f"STATUS=waiting for the broker {broker} (queue {config.executor.queue})")
    beacon.start()
    try:
        worker.start()
    finally:
        grace.finished.set()
        signals.worker_ready.disconnect(on_ready)
        signals.worker_shutting_down.disconnect(on_stopping)
        signals.worker_shutting_down.disconnect(grace.start)
        beacon.stop()
        host.close()
    return worker.exitcode or 0


class StopGrace:
    """On SIGTERM (Celery's warm shutdown) the running jobs may finish within stop_grace_seconds, kept below the
    unit's TimeoutStopSec; a job still running then goes back to the head of the queue (for another host, or
    this one restarted: not after the visibility timeout) and the process ends, its call abandoned."""

    def __init__(self, grace_seconds: float, beacon: PresenceBeacon) -> None:
        self.grace_seconds = grace_seconds
        self.beacon = beacon
        self.finished = threading.Event()  # the Celery worker returned by itself: nothing to hand back

    def start(self, **_signal: Any) -> None:
        threading.Thread(target=self._run, name="i2vd-stop-grace", daemon=True).start()

    def _run(self) -> None:
        if self.finished.wait(self.grace_seconds):
            return
        from celery.worker import state

        for request in {*state.reserved_requests, *state.active_requests}:  # received: running or next
            if request.message.acknowledged:
                continue
            try:  # the message itself: request.reject() would wait for the event loop, stopped by now
                request.message.reject(requeue=True)
            except Exception as error:  # noqa: BLE001 - its message is then redelivered after the visibility timeout
                log.warning("task %s: cannot hand it back (%s): delivered again later", request.id, error)
                continue
            log.warning("task %s did not finish within %g s: handed back to the queue", request.id, self.grace_seconds)
        if self.finished.is_set():
            return
        self.beacon.stop()
        logging.shutdown()
        os._exit(0)  # the task threads are blocked in their server calls: Celery would wait them out


def _notify(notifier: Notifier, *fields: str, **_signal: Any) -> None:
    notifier.send(*fields)


def presence(host: GpuHost) -> dict[str, Any]:
    """What the beacon says of this host (i2vd status on the ingest host lists it): each server with its gate
    and the job it is on. Read off the host's own state: it asks no server and waits for nothing."""
    servers = [
        {
            "name": slot.name,
            "kind": slot.server.kind,
            "url": slot.server.url,
            "gate": slot.gate.detail,
            "current_job": (slot.job or {}).get("job_id"),
            "current_key": (slot.job or {}).get("key"),
            "jobs_done": slot.done,
        }
        for slot in host.slots
    ]
    return worker_description(
        servers,
        started_at=host.started_at,
        worker_id=worker_name(host.config, host.host),
        job_seconds=host.timing.job_seconds,
    )


def worker_name(config: WorkerConfig, host: str) -> str:
    """The name status lists this worker by, the same across restarts: its host, and its config's name when that
    is not the default gpu-host.yaml (i2vd-worker@gpu0 reads /etc/i2vd/gpu0.yaml: `gpu-a/gpu0`), so that two
    workers of one host are two entries and a restarted one is its old entry, alive again."""
    stem = Path(config.source).stem
    return host if stem in ("gpu-host", "") else f"{host}/{stem}"


def main_worker(path: Path) -> int:
    """`i2vd worker -c CONFIG`: exit 78 on a bad config (ConfigError, raised to the CLI), 69 on an unreadable GPU."""
    import sys

    from i2vd.config.worker import load_worker_config
    from i2vd.core.logs import configure
    from i2vd.render.gpu import GpuReadError

    config = load_worker_config(path)
    configure(config.log_level)
    try:
        return run_worker(config)
    except GpuReadError as error:
        print(f"i2vd worker: gpu: {error}", file=sys.stderr)
        return EX_UNAVAILABLE
