"""The work loop: claim a job, wait for the GPU gate, call the backend, write the output.

One worker per server, one job at a time. Failures are sorted by whose fault they
are: the job's own (a bad reply, an HTTP 500) uses an attempt and backs off; a
server that cannot be reached, a full disk or a shutdown uses none. The loop is a
plain loop with a stop flag; `burst=True` drains the queue and returns, which is
what `i2vd batch` and the tests use instead of threads and sleeps.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from i2vd import __version__, mp4, output, received
from i2vd import failed_folder, schedule as schedules
from i2vd.backends.base import RESOLUTIONS, Backend, BackendError, BadInput, ServerOutOfMemory, ServerUnavailable, VideoRequest
from i2vd.clock import Clock
from i2vd.config import DONE_FOLDER, Config, ServerConfig, WatchRoot
from i2vd.gpu import VramGate
from i2vd.images import read_regular_file, sha256_of
from i2vd.follow import GONE, LOOKING, present_copy
from i2vd.journal import Job, JobState, Journal
from i2vd.liveness import Heartbeat
from i2vd.logs import job_fields
from i2vd.mounts import MountMemory
from i2vd.watcher import link_below

log = logging.getLogger("i2vd.worker")

IDLE_POLL_SECONDS = 1.0
LEASE_MARGIN_SECONDS = 120.0
GATE_READ_BOUND_SECONDS = 30.0  # a gpu.command (ssh nvidia-smi) may take this long
SERVER_DOWN_MAX_BACKOFF = 60.0


@dataclass
class WorkerState:
    """What the worker is doing, for `i2vd status` and sd_notify."""

    current_job: int | None = None
    current_file: str | None = None
    server_down_since: float | None = None
    server_error: str | None = None
    jobs_done: int = 0
    jobs_failed: int = 0
    progress: str | None = None  # the server's own word: queue position, percent


def build_workers(config: Config, journal: Journal, clock: Clock, *, backend: Backend | None = None, gpu_reader=None) -> list[Worker]:
    """One worker per configured server, each with its backend and its GPU's gate."""
    from i2vd.backends import make_backend

    received.clean(config.state_dir / received.INCOMING, journal)
    workers = []
    for entry in config.servers:
        shared = backend is not None and len(config.servers) == 1
        worker_backend = backend if shared else make_backend(entry.server, config.state_dir)
        # The built-in engine runs on the CPU: a busy GPU is no reason for it to wait.
        gpu = dataclasses.replace(entry.gpu, enabled=False) if entry.server.kind == "builtin" else entry.gpu
        gate = VramGate.from_config(gpu, clock, gpu_reader, server_url=entry.server.url)
        name = f"{socket.gethostname()}:{os.getpid()}:{entry.name}"
        workers.append(Worker(config, journal, worker_backend, gate, clock, name=name, server=entry.server))
    return workers


SHARE_OFFLINE_ERRORS = {errno.ESTALE, errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ETIMEDOUT}


class Worker:
    def __init__(self, config: Config, journal: Journal, backend: Backend, gate: VramGate, clock: Clock | None = None, *, name: str | None = None, wake: threading.Event | None = None, server: ServerConfig | None = None, mounts: MountMemory | None = None):
        self.config = config
        self.server = server or config.server
        self.journal = journal
        self.backend = backend
        self.gate = gate
        self.clock = clock or Clock()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{backend.kind}"
        self.wake = wake or threading.Event()
        self.state = WorkerState()
        self.heartbeat = Heartbeat("worker", self.clock)
        if hasattr(backend, "on_progress"):  # Gradio reports queue position and progress
            backend.on_progress = self.note_progress
        self._down_failures = 0
        self.mounts = mounts or MountMemory(config.state_dir)  # was each root ever a mount point?
        self._note_mount_roots(config)
        self._pending_setup: tuple[Config, ServerConfig, Backend | None, VramGate | None] | None = None
        self._setup_lock = threading.Lock()
        self._tidied_at = float("-inf")
        self._held_back = False  # the last look found due work it may not take (a schedule): idle, not spin

    def reconfigure(self, config: Config, server: ServerConfig, backend: Backend | None = None, gate: VramGate | None = None) -> None:
        """Take a new config (and backend or gate, when they changed) between jobs, never during one."""
        with self._setup_lock:
            self._pending_setup = (config, server, backend, gate)
        self.interrupt()

    def _apply_setup(self) -> None:
        with self._setup_lock:
            pending, self._pending_setup = self._pending_setup, None
        if pending is None:
            return
        config, server, backend, gate = pending
        self.config, self.server = config, server
        self._note_mount_roots(config)
        if backend is not None:
            self.backend.close()
            self.backend = backend
            self.state.server_down_since = self.state.server_error = None
            self._down_failures = 0
        if gate is not None:
            self.gate = gate

    @property
    def incoming(self) -> Path:
        """Replies in transit and received videos not yet written (kept across retries and restarts)."""
        return self.config.state_dir / received.INCOMING

    @property
    def lease_seconds(self) -> float:
        return self.server.timeout_seconds + LEASE_MARGIN_SECONDS

    def run(self, stop: threading.Event, *, burst: bool = False) -> None:
        """Work until `stop` is set; with burst, return once nothing is queued."""
        while not stop.is_set():
            try:
                if self._round(stop, burst):
                    return
            except Exception:  # noqa: BLE001 - a journal error (busy, disk full) must not end the worker for good
                log.exception("worker round failed; trying again shortly")
                self.clock.wait(stop, IDLE_POLL_SECONDS)

    def _round(self, stop: threading.Event, burst: bool) -> bool:
        """One pass of the loop; True when a burst run is finished."""
        self._apply_setup()
        self.heartbeat.beat(IDLE_POLL_SECONDS + self._server_down_pause())
        if self.state.server_down_since is not None and self.clock.wait(stop, self._server_down_pause()):
            return True  # stopped while the server is down: the next claim is the probe, after a growing pause
        if self.run_once(stop):
            return False
        if burst and self.journal.next_attempt_at() is None:
            return True
        self._idle()
        return False

    def _idle(self) -> None:
        self.wake.clear()
        due = self.journal.next_attempt_at()
        pause = IDLE_POLL_SECONDS if due is None else min(IDLE_POLL_SECONDS, max(0.0, due - self.clock.now()))
        if self._held_back:
            pause = IDLE_POLL_SECONDS
        self.clock.wait(self.wake, pause)  # the intake, and stop(), set `wake`

    def interrupt(self) -> None:
        """Wake the loop now (new work, or stop was set)."""
        self.wake.set()

    def _server_down_pause(self) -> float:
        return min(SERVER_DOWN_MAX_BACKOFF, 0.5 * 2 ** min(self._down_failures, 10))

    def _tidy(self) -> None:
        """Once a poll interval: expired leases (no outcome recorded) back to the queue, no wait past max_backoff."""
        if 0 <= self.clock.monotonic() - self._tidied_at < IDLE_POLL_SECONDS:
            return
        self._tidied_at = self.clock.monotonic()
        returned, _ = self.journal.tidy(self.config.retry.max_backoff_seconds)
        for job_id in returned:
            log.warning("job %d: its lease expired with no outcome recorded; back in the queue", job_id)

    def run_once(self, stop: threading.Event) -> bool:
        """Process at most one job; True if one was taken."""
        self._tidy()
        due = self.journal.next_attempt_at()
        if due is None or due > self.clock.now():
            return False
        gate_bound = self.gate.config.poll_seconds + GATE_READ_BOUND_SECONDS
        # A reload (a new gate, say min_free_mb instead of max_used_mb) must reach a worker waiting here.
        reconfigured = threading.Event()

        def poll() -> None:
            self.heartbeat.beat(gate_bound, "waiting for the GPU gate")
            if self._pending_setup is not None:
                reconfigured.set()

        self._held_back = self.paused_by_schedule() is not None
        if self._held_back:
            return False  # outside this server's windows: nothing is claimed, a running job was let finish
        if not self.gate.wait_open(stop, on_poll=poll, cancel=reconfigured):
            return False
        if self.paused_by_schedule() is not None:
            return False
        job = self.journal.claim_next(self.name, self.lease_seconds,
                                      skip_roots=schedules.closed_roots(self.config, self.clock.now()))
        self._held_back = job is None  # due jobs, all under roots outside their windows: poll, do not spin
        if job is None:
            return False
        self.state.current_job, self.state.current_file = job.id, job.rel_path
        try:
            self.process(job)
        except Exception as error:  # noqa: BLE001 - one job's surprise must not end the worker
            log.exception("job %d: unexpected error", job.id)
            self._job_failed(job, f"internal error: {type(error).__name__}: {error}")
        finally:
            self.state.current_job = self.state.current_file = self.state.progress = None
            self.journal.release(job.id)  # an outcome that could not be recorded is the lease's to settle now
        return True

    def process(self, job: Job) -> None:
        try:
            destination = self._destination(job)
            output.remove_temp_files(destination.parent, job.id)
            # Done before a crash (the path was recorded on this job), or before the journal was lost (a record
            # with this key that another job row wrote): either way, no second render.
            already_written = output.is_complete(destination, job.idem_key) and (
                bool(job.output_path) or not output.recorded_by(destination, job.id, job.queued_at))
        except OSError as error:
            self._wait_for_disk(job, f"output folder unavailable: {error.strerror or error}")
            return
        except output.OutputCollision as error:
            self._fail(job, str(error), count_attempt=False)
            return
        if already_written:
            log.info("job %d: %s was already written before a restart; marking done", job.id, destination)
            self.journal.mark_done(job.id, job.server, job.server_seconds, note=f"found finished output {destination}")
            self.state.jobs_done += 1
            received.discard(self.incoming, job.idem_key)
            self._after(job)
            return
        try:
            image = self._read_source(job)
        except OSError as error:
            if error.errno in SHARE_OFFLINE_ERRORS or (isinstance(error, FileNotFoundError) and self._root_offline(job.root)):
                # An unmounted share is not a deletion: the job waits, using no attempt, until the files are back.
                self._wait_for_disk(job, f"waiting: the share {job.root} is offline ({error.strerror})")
                return
            if not isinstance(error, FileNotFoundError):
                self._job_failed(job, f"cannot read source: {error.strerror or error}")
                return
            followed = self._follow_content(job)
            if followed is None and not (job.last_error or "").startswith(LOOKING):
                # Moved a moment ago (a renamed folder)? The intake finds the new place within a settle window.
                root = self._root(job)
                wait = 2 * (root.settle_seconds if root else 0.0) + 1.0
                log.info("job %d: %s is not there: %s", job.id, job.source_path, LOOKING, extra=job_fields(job.id, job.source_path, "queued"))
                self.journal.requeue(job.id, f"{LOOKING}: {job.source_path}", self.clock.now() + wait, count_attempt=False)
                return
            if followed is None:
                self._fail(job, f"{GONE}: {job.source_path}", count_attempt=False)
                return
            job, image = followed
            try:
                destination = self._destination(job)  # the video mirrors the new place
            except OSError as problem:
                self._wait_for_disk(job, f"output folder unavailable: {problem.strerror or problem}")
                return
            except output.OutputCollision as problem:
                self._fail(job, str(problem), count_attempt=False)
                return
        if sha256_of(image) != job.source_sha256:
            self._fail(job, "source file changed after it was queued (the new content is a new job)", count_attempt=False)
            return
        kept = received.kept(self.incoming, job.idem_key, job.params)
        if kept is not None:  # received before, but the output could not be written then: not asked again
            log.info("job %d: writing the video received before (kept in %s)", job.id, self.incoming, extra=job_fields(job.id, job.source_path, "running"))
            self._write_output(job, destination, *kept)
            return
        request = VideoRequest(image=image, image_name=Path(job.rel_path).name, prompt=job.prompt,
                               reply_dir=self.incoming, **job.params, job_id=job.id, key=job.idem_key)
        log.info("job %d: sending %s to %s (%s, %d frames, %d fps)", job.id, job.rel_path, self.backend.kind, request.resolution, request.frames, request.fps, extra=job_fields(job.id, job.source_path, "running"))
        self.heartbeat.beat(self.server.timeout_seconds, f"job {job.id} on the server")
        try:
            reply = self.backend.generate(request)
        except ServerUnavailable as error:
            self._server_down(job, str(error))
            return
        except BadInput as error:
            self._fail(job, str(error))
            return
        except ServerOutOfMemory as error:
            self._out_of_memory(job, str(error))
            return
        except BackendError as error:
            self._job_failed(job, str(error))
            return
        except OSError as error:  # the reply could not be spooled under state_dir: not the job's fault
            self._wait_for_disk(job, f"cannot receive the video into {self.incoming}: {error.strerror or error}")
            return
        self._server_up()
        server = self.backend.describe()
        try:
            video = received.keep(self.incoming, job, reply, server)
        except OSError as error:
            received.discard_reply(reply)
            self._wait_for_disk(job, f"cannot keep the video under state_dir: {error.strerror or error}")
            return
        self._write_output(job, destination, video, server, reply.server_seconds)

    def _write_output(self, job: Job, destination: Path, video: Path, server: dict, server_seconds: float) -> None:
        """Place the received video (kept under state_dir until then) and its record; done."""
        self.heartbeat.beat(0, f"job {job.id} writing output")
        finished = self.clock.now()
        record = self._record(job, destination, server_seconds, finished, server)
        try:
            output.write_video(destination, job.id, video, record, comment=self._comment(job))
        except mp4.VideoError as error:
            received.discard(self.incoming, job.idem_key)  # the server's fault: the next attempt asks again
            self._job_failed(job, f"server sent an unusable video: {error}")
            return
        except OSError as error:
            # The video stays kept under state_dir: written once there is room, never rendered twice.
            self._wait_for_disk(job, f"cannot write output: {error.strerror or error}")
            return
        self.journal.mark_done(job.id, server, server_seconds, note=f"video {destination}")
        received.discard(self.incoming, job.idem_key)
        self.state.jobs_done += 1
        log.info("job %d: done -> %s (%.1f s on the server)", job.id, destination, server_seconds, extra=job_fields(job.id, job.source_path, "done"))
        self._after(job)

    def _read_source(self, job: Job) -> bytes:
        """The job's image; a path through a linked folder is refused (links are never followed)."""
        source = Path(job.source_path)
        link = link_below(Path(job.root) if job.root else None, source)
        if link is not None:
            # As good as gone: what lies behind a link is never read (it may be outside every root).
            raise FileNotFoundError(errno.ENOENT, f"{link} is a symbolic link, never followed", str(source))
        return read_regular_file(source)

    def _follow_content(self, job: Job) -> tuple[Job, bytes] | None:
        """The job's file is gone: the same content elsewhere under a root (a copy, a move) is used instead."""
        found = present_copy(self.config, self.journal, job)
        if found is None:
            return None
        path, root, data = found
        moved = self.journal.relocate(job.id, str(path), str(root.path), path.relative_to(root.path).as_posix(), from_states=(JobState.RUNNING,))
        if moved is None:
            return None
        log.info("job %d: %s is gone; its content is at %s", job.id, job.rel_path, moved.rel_path, extra=job_fields(job.id, moved.source_path, "running"))
        return moved, data

    def _root_offline(self, root: str) -> bool:
        """A watch root that is missing, or a mount point (when first seen) that is no longer mounted."""
        if not root:
            return False
        path = Path(root)
        if not path.is_dir():
            return True
        if self.mounts.is_mount_point(path):
            self.mounts.observe([path])
            return False
        return self.mounts.was_mount_point(path)

    def _note_mount_roots(self, config: Config) -> None:
        self.mounts.observe([root.path for root in config.watch if root.path.is_dir()])

    def _root(self, job: Job) -> WatchRoot | None:
        return self.config.root_for(Path(job.root)) if job.root else None

    def _destination(self, job: Job) -> Path:
        if job.output_path:
            return Path(job.output_path)
        root = self._root(job)
        output_dir = root.output_dir if root else self.config.output_dir
        first = output.default_video_path(output_dir, job.rel_path, job.output_name)
        return output.choose_path(first, job.idem_key, lambda candidate: self.journal.set_output_path(job.id, str(candidate)), job=(job.id, job.source_sha256),
                                  policy=(job.profile.get("fields") or {}).get("collision", "suffix"),
                                  take_over=lambda candidate: self.journal.take_output_path(job.id, str(candidate)))

    def _comment(self, job: Job) -> str:
        return f"i2vd {__version__}; profile={job.profile_name}; source_sha256={job.source_sha256}; prompt={job.prompt}"

    def _record(self, job: Job, destination: Path, server_seconds: float, finished: float, server: dict | None = None) -> dict:
        return {
            "idempotency_key": job.idem_key,
            "job_id": job.id,
            "video": str(destination),
            "source": {"path": job.source_path, "relative_path": job.rel_path, "sha256": job.source_sha256, "size": job.source_size},
            "profile": job.profile_name,
            "profile_hash": job.profile.get("hash"),
            "profile_fields": job.profile.get("fields"),
            "sidecars": job.profile.get("sidecars", []),
            "prompt": job.prompt,
            "parameters": job.params,
            "downgraded_from": job.profile.get("downgraded_from"),
            "server": server or self.backend.describe(),
            "timings": {"queued": job.queued_at, "started": job.started_at, "finished": finished, "server_seconds": round(server_seconds, 3)},
            "attempts": job.attempts + 1,
            "i2vd_version": __version__,
        }

    def _job_failed(self, job: Job, error: str) -> None:
        """The job's own failure: uses an attempt; backs off, or fails for good when none are left."""
        attempts = job.attempts + 1
        if attempts >= self.config.retry.attempts:
            self._fail(job, error, note=f"after {attempts} attempt(s)")
            return
        wait = self.config.retry.backoff_seconds(attempts)
        log.warning("job %d: attempt %d failed (%s); retrying in %.0f s", job.id, attempts, error, wait, extra=job_fields(job.id, job.source_path, "queued"))
        self.journal.requeue(job.id, error, self.clock.now() + wait, count_attempt=True)

    def _fail(self, job: Job, error: str, *, count_attempt: bool = True, note: str = "") -> None:
        """Failed for good: the one place that records it, counts it and says it."""
        log.error("job %d: failed%s: %s", job.id, f" {note}" if note else "", error, extra=job_fields(job.id, job.source_path, "failed"))
        self.journal.mark_failed(job.id, error, count_attempt=count_attempt)
        self.state.jobs_failed += 1
        root = self._root(job)
        if root is not None and root.on_failure == "move":
            try:
                failed_folder.move_in(root.path, job, error, self.clock.now())
            except OSError as problem:
                log.warning("job %d: could not move %s into %s: %s", job.id, job.source_path, failed_folder.FAILED_FOLDER, problem)

    def _wait_for_disk(self, job: Job, reason: str) -> None:
        """A file system's trouble, not the job's: back to the queue after the first backoff, no attempt used."""
        log.warning("job %d: %s; will retry", job.id, reason, extra=job_fields(job.id, job.source_path, "queued"))
        self.journal.requeue(job.id, reason, self.clock.now() + self.config.retry.initial_backoff_seconds, count_attempt=False)

    def _out_of_memory(self, job: Job, error: str) -> None:
        """server.oom: fail at once, step the resolution down one level, or wait (the backoff, then the gate)."""
        if self.server.oom == "fail":
            self._fail(job, f"out of GPU memory: {error}", note="(server.oom: fail)")
            return
        resolution = job.params["resolution"]
        if self.server.oom == "downgrade" and RESOLUTIONS.index(resolution) > 0:
            lower = RESOLUTIONS[RESOLUTIONS.index(resolution) - 1]
            note = f"out of GPU memory at {resolution}: stepped down to {lower}"
            log.warning("job %d: %s", job.id, note, extra=job_fields(job.id, job.source_path, "queued"))
            self.journal.downgrade(job.id, {**job.params, "resolution": lower}, note)
            return
        # Not again at once with the same settings: the attempt counts, the retry waits for its backoff and the gate.
        waiting = " (waiting for VRAM before the next try)" if job.attempts + 1 < self.config.retry.attempts else ""
        self._job_failed(job, f"out of GPU memory{waiting}: {error}")

    def _server_down(self, job: Job, error: str) -> None:
        """Not the job's fault: back to the queue with no attempt used, and pause the queue."""
        if self.state.server_down_since is None:
            self.state.server_down_since = self.clock.now()
            log.error("server down: %s; pausing the queue", error)
        self._down_failures += 1
        self.state.server_error = error
        self.journal.requeue(job.id, error, self.clock.now(), count_attempt=False)

    def _server_up(self) -> None:
        if self.state.server_down_since is not None:
            log.info("server is back")
            self.state.server_down_since = None
            self.state.server_error = None
            self._down_failures = 0

    def paused_by_schedule(self) -> str | None:
        """'paused by schedule until Mon 20:00' while this server is outside its `schedule:` windows."""
        return schedules.server_paused(self.config, self.server, self.clock.now())

    def _server_status(self) -> dict:
        return {**self.backend.describe(), "down_since": self.state.server_down_since, "error": self.state.server_error}

    def note_progress(self, message: str) -> None:
        self.state.progress = message
        log.info("job %s: %s", self.state.current_job, message)

    def status(self) -> dict:
        """This worker's server, gate and job, for `i2vd status`."""
        return {
            "name": self.name.rsplit(":", 1)[-1],
            **self._server_status(),
            "gate": self.gate.detail,
            "gate_state": self.gate.state,
            "schedule": schedules.describe(self.config, self.server.schedule, self.clock.now()),
            "current_job": self.state.current_job,
            "current_file": self.state.current_file,
            "progress": self.state.progress,
            "jobs_done": self.state.jobs_done,
            "jobs_failed": self.state.jobs_failed,
        }

    def _after(self, job: Job) -> None:
        """`after: move`: the source moves into <root>/.i2vd-done/ only once its video is safe."""
        root = self._root(job)
        if root is None or root.after != "move":
            return
        source = Path(job.source_path)
        wanted = root.path / DONE_FOLDER / job.rel_path
        try:
            if not source.exists():
                return  # moved already (a job recovered after a crash), or the user took it away
            hashed = _content_stamp(source)
            if hashed is None or hashed[0] != job.source_sha256:
                # A newer version saved while the job ran: it stays in place and becomes its own job.
                log.info("job %d: %s changed since it was sent: left in place for its own job", job.id, source)
                return
            wanted.parent.mkdir(parents=True, exist_ok=True)
            # never replace an earlier original of the same name: the "-N" suffix scheme of the videos
            target = next(candidate for candidate in output.candidates(wanted) if not candidate.exists())
            shutil.move(source, target)
            if _content_stamp(target, hash_it=False) != (None, *hashed[1:]) and not source.exists():
                shutil.move(target, source)  # saved again between the hash and the move: put it back
                log.info("job %d: %s changed while being moved: left in place for its own job", job.id, source)
        except OSError as error:
            log.warning("job %d: could not move %s into %s: %s", job.id, job.source_path, wanted.parent, error)


def _content_stamp(path: Path, *, hash_it: bool = True) -> tuple[str | None, int, int, int] | None:
    """(sha256, inode, size, mtime_ns) of a regular file, from one open; None when it is no regular file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return None
        digest = None
        if hash_it:
            hasher = hashlib.sha256()
            while chunk := os.read(descriptor, 1 << 20):
                hasher.update(chunk)
            digest = hasher.hexdigest()
        return digest, info.st_ino, info.st_size, info.st_mtime_ns
    finally:
        os.close(descriptor)
