"""The ingest host's side of `executor: celery`: a Backend that sends each job to the GPU hosts as a Celery task.

The whole worker machinery of the ingest host stays as it is (claims, leases, outcomes, kept videos, outputs,
retries, the circuit breaker); only the server call becomes "publish a task, wait for its result":
- the task's id is chosen here and written under state_dir/celery/ before the publish, so a restarted ingest
  host reattaches to the task in flight instead of publishing it again (as the ComfyUI backend does with its
  prompt ids); a marker in Redis says the task is awaited, and a worker drops a task that is not;
- a broker that cannot be reached raises ServerUnavailable: no attempt used, the queue pauses, status names the
  broker; the task published before the outage stays recorded and is waited for again;
- a failure comes back as the same BackendError class, so attempts are decided exactly as for a local server;
- the wait is bounded (app.py): a task nobody starts ends this try as ServerUnavailable (no attempt: no GPU host
  took it); a task that started and brought no result in time (its worker died and no other took it back, or it
  hangs) is a timed-out call, one attempt, like a connection dropped mid-job, so an image that kills workers
  cannot be sent forever. A worker killed mid-job whose task another worker redoes within the wait costs nothing.
Once the job's try is over (done, failed, retried), `try_finished` removes the record, the marker and the result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from i2vd.cluster import messages
from i2vd.cluster.app import (
    MARKER_TTL_SECONDS,
    TASK_NAME,
    Timings,
    awaited_key,
    connection_errors,
    key_digest,
    unreachable,
)
from i2vd.config.executor import ExecutorConfig, safe_url
from i2vd.config.load import Config
from i2vd.core.clock import Clock
from i2vd.jobs import received
from i2vd.jobs.worker import Worker
from i2vd.render.backends.base import (
    BackendError,
    CallTimedOut,
    ServerUnavailable,
    VideoReply,
    VideoRequest,
    reply_folder,
    video_reply,
)
from i2vd.render.gpu import VramGate
from i2vd.store.journal import Journal

log = logging.getLogger("i2vd.cluster")

POLL_SECONDS = 0.2


class TaskRecords:
    """state_dir/celery/<sha256 of the key>.json: the task a job's try is waiting for (written before publish)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key_digest(key)}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("key") == key else None

    def put(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(record["key"])
        part = path.with_name(f"{path.name}.part")
        with open(part, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class CeleryBackend:
    kind = "celery"

    def __init__(
        self,
        executor: ExecutorConfig,
        app: Any,
        redis: Any,
        state_dir: Path,
        timing: Timings,
        *,
        poll_seconds: float = POLL_SECONDS,
        stop: threading.Event | None = None,
    ) -> None:
        self.executor = executor
        self.app = app
        self.redis = redis
        self.records = TaskRecords(state_dir / "celery")
        self.timing = timing
        self.poll_seconds = poll_seconds
        self.stop = stop or threading.Event()  # the daemon's: a stop ends the wait, the task stays recorded
        self.url = safe_url(executor.broker)
        self._last_server: dict[str, str] | None = None
        self._errors = connection_errors()

    def describe(self) -> dict[str, str]:
        """The last job's server (its GPU host's describe(), for the audit record), else the broker."""
        if self._last_server is not None:
            return dict(self._last_server)
        return {"kind": "celery", "url": self.url, "version": f"queue {self.executor.queue}"}

    def close(self) -> None:
        pass  # the app and the Redis client are shared by every worker of the daemon

    def generate(self, request: VideoRequest) -> VideoReply:
        if request.key is None:
            raise ValueError("a celery task needs the job's key")
        record = self.records.get(request.key)
        wanted = messages.fingerprint(request)
        if record is not None and record.get("fingerprint") != wanted:
            self._forget(record)  # the job's settings changed (a downgrade): that task is not this one
            record = None
        if record is None or not record.get("published"):
            record = record or {
                "key": request.key,
                "job_id": request.job_id,
                "task_id": f"i2vd-{request.job_id}-{uuid.uuid4().hex}",
                "fingerprint": wanted,
                "published": False,
            }
            self._publish(record, request)
        else:
            log.info("job %s: task %s was sent before; waiting for its result again", request.job_id, record["task_id"])
        return self._await(record, request)

    def _publish(self, record: dict[str, Any], request: VideoRequest) -> None:
        body = messages.payload(request, self.executor)
        self.records.put(record)  # before the publish: a restart finds the task instead of sending another
        try:
            self.redis.set(awaited_key(self.executor, record["task_id"]), "1", ex=MARKER_TTL_SECONDS)
            self.app.send_task(TASK_NAME, args=[body], task_id=record["task_id"], queue=self.executor.queue)
        except self._errors as error:
            raise ServerUnavailable(unreachable(self.executor, error)) from error
        self.records.put({**record, "published": True})
        log.info("job %s: sent to queue %s as task %s", request.job_id, self.executor.queue, record["task_id"])

    def _await(self, record: dict[str, Any], request: VideoRequest) -> VideoReply:
        started = time.monotonic()
        seen_running = False
        while True:
            try:
                result = self.app.AsyncResult(record["task_id"])
                state = result.state
                value = result.result if state in ("SUCCESS", "FAILURE") else None
            except self._errors as error:
                raise ServerUnavailable(unreachable(self.executor, error)) from error
            if state == "SUCCESS":
                return self._take(record, value, request)
            if state == "FAILURE":
                self._forget(record)
                raise BackendError(f"the worker failed on task {record['task_id']}: {value}")
            seen_running = seen_running or state == "STARTED"
            waited = time.monotonic() - started
            if not seen_running and waited > self.timing.unstarted_wait:
                self._forget(record)
                raise ServerUnavailable(
                    f"no GPU worker took job {request.job_id} from queue {self.executor.queue} at {self.url} "
                    f"within {waited:.0f} s (are `i2vd worker` hosts running, their gates open?)"
                )
            if waited > self.timing.started_wait:
                self._forget(record)
                raise CallTimedOut(f"task {record['task_id']} brought no result within {waited:.0f} s")
            if self.stop.wait(self.poll_seconds):  # the GPU host goes on; the next start takes the result
                raise ServerUnavailable(f"i2vd is stopping: task {record['task_id']} stays at the broker")

    def _take(self, record: dict[str, Any], result: Any, request: VideoRequest) -> VideoReply:
        if isinstance(result, dict) and result.get("ok") is False:
            self._forget(record)  # the next try is a new task
            messages.raise_failure(result)
        with reply_folder(request) as folder:
            try:
                target = folder / f"celery-{key_digest(request.key)}.mp4.part"
                video = messages.write_video(result, target, self.executor)
            except messages.PayloadError as error:
                self._forget(record)
                raise BackendError(f"task {record['task_id']}: {error}") from None
            server = {**result.get("server", {}), "worker": str(result.get("host"))}
            self._last_server = server
            carried = (result.get("video") or {}).get("path") or "inline"
            log.info(
                "job %s: task %s: video from %s (%s)", request.job_id, record["task_id"], result.get("host"), carried
            )
            return video_reply(request, video, float(result.get("server_seconds") or 0.0))

    def try_finished(self, key: str) -> None:
        """The job's try is recorded (done, failed, to be retried): its task is not waited for any more."""
        record = self.records.get(key)
        if record is not None:
            self._forget(record)

    def _forget(self, record: dict[str, Any]) -> None:
        """No longer await this task: a worker that gets it drops it; its stored result goes."""
        try:
            self.records.remove(record["key"])
        except OSError as error:
            log.warning("task %s: cannot remove its record: %s", record["task_id"], error.strerror or error)
        try:
            self.redis.delete(awaited_key(self.executor, record["task_id"]))
            self.app.AsyncResult(record["task_id"]).forget()
        except self._errors as error:  # the marker expires by itself; a late worker's result is then ignored
            log.warning("task %s: cannot clear its marker: %s", record["task_id"], unreachable(self.executor, error))


def build_cluster_workers(
    config: Config, journal: Journal, clock: Clock, stop: threading.Event | None = None
) -> list[Worker]:
    """`executor: celery` on the ingest host: `executor.concurrency` workers, each sending its jobs as tasks.

    The VRAM gate lives on the GPU hosts (off here). A worker's lease and heartbeat cover the longest wait for
    one task's result (app.Timings.started_wait), which stands in for the server's timeout_seconds. `stop` (the
    daemon's) ends a wait at once: the task stays recorded, and the next start waits for it again.
    """
    from i2vd.cluster.app import config_timings, make_app, redis_client

    received.clean(config.state_dir / received.INCOMING, journal)
    timing = config_timings(config)
    app = make_app(config.executor, timing)
    redis = redis_client(config.executor.broker)
    server = dataclasses.replace(config.server, timeout_seconds=timing.started_wait)
    gpu = dataclasses.replace(config.gpu, enabled=False)
    workers = []
    for index in range(config.executor.concurrency):
        backend = CeleryBackend(config.executor, app, redis, config.state_dir, timing, stop=stop)
        gate = VramGate.from_config(gpu, clock)
        name = f"{socket.gethostname()}:{os.getpid()}:celery-{index}"
        workers.append(Worker(config, journal, backend, gate, clock, name=name, server=server))
    return workers
