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
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from i2vd.config.load import Config, ServerConfig
from i2vd.core.clock import Clock
from i2vd.core.liveness import Heartbeat
from i2vd.core.logs import job_fields
from i2vd.core.mounts import MountMemory
from i2vd.ingest.follow import GONE, LOOKING
from i2vd.jobs import finished, outcomes, received
from i2vd.jobs.outcomes import Done, Failed, Gone, Outcome, WaitAndLook
from i2vd.jobs.overlap import Finisher, Finishing, Keeping
from i2vd.jobs.prepare import Preparing
from i2vd.jobs.settling import Settling
from i2vd.jobs.sources import SourceFiles
from i2vd.render import mp4, output
from i2vd.render.backends.base import Backend, BackendError, VideoRequest, request_parameters
from i2vd.render.gpu import VramGate
from i2vd.store.journal import Job, Journal

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


def build_workers(
    config: Config, journal: Journal, clock: Clock, *, backend: Backend | None = None, gpu_reader=None
) -> list[Worker]:
    """One worker per configured server, each with its backend and its GPU's gate."""
    from i2vd.render.backends import make_backend

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


class Worker(Preparing, Keeping, SourceFiles, Settling):
    def __init__(
        self,
        config: Config,
        journal: Journal,
        backend: Backend,
        gate: VramGate,
        clock: Clock | None = None,
        *,
        name: str | None = None,
        wake: threading.Event | None = None,
        server: ServerConfig | None = None,
        mounts: MountMemory | None = None,
    ):
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
        self._disk_waits: dict[int, int] = {}  # job id -> waits in a row on a file system's trouble (settling.py)
        self.mounts = mounts or MountMemory(config.state_dir)  # was each root ever a mount point?
        self._note_mount_roots(config)
        self._pending_setup: tuple[Config, ServerConfig, Backend | None, VramGate | None] | None = None
        self._setup_lock = threading.Lock()
        self._tidied_at = float("-inf")
        self._held_back = False  # the last look found due work it may not take (a schedule): idle, not spin
        # run() writes each video beside the next call (overlap.py); run_once() alone stays one job, start to end.
        self.overlap = False
        self._finisher = Finisher(f"i2vd-finishing-{self.name.rsplit(':', 1)[-1]}")
        self._settle_lock = threading.Lock()  # the finishing thread records too

    def reconfigure(
        self, config: Config, server: ServerConfig, backend: Backend | None = None, gate: VramGate | None = None
    ) -> None:
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
        self.overlap = True
        try:
            while not stop.is_set():
                try:
                    if self._round(stop, burst):
                        return
                except Exception:  # noqa: BLE001 - a journal error (busy, disk full) must not end the worker for good
                    log.exception("worker round failed; trying again shortly")
                    self.clock.wait(stop, IDLE_POLL_SECONDS)
        finally:
            self._wait_finishing()  # the last video written and recorded before the worker ends
            self._finisher.close()
            self._stop_preparing()
            self.overlap = False

    def _wait_finishing(self) -> None:
        if self._finisher.busy:
            self.heartbeat.beat(2 * mp4.FFMPEG_TIMEOUT_SECONDS, "writing the previous video")
        self._finisher.wait()

    def _round(self, stop: threading.Event, burst: bool) -> bool:
        """One pass of the loop; True when a burst run is finished."""
        self._apply_setup()
        self.heartbeat.beat(IDLE_POLL_SECONDS + self._server_down_pause())
        if self.state.server_down_since is not None and self.clock.wait(stop, self._server_down_pause()):
            return True  # stopped while the server is down: the next claim is the probe, after a growing pause
        if self.run_once(stop):
            return False
        self._wait_finishing()  # nothing to send meanwhile: its outcome (a retry, say) may queue it again
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
        prepared = self._take_prepared(stop)  # claimed and read beside the last call (prepare.py)
        due = self.journal.next_attempt_at()
        if prepared is None and (due is None or due > self.clock.now()):
            return False
        gate_bound = self.gate.config.poll_seconds + GATE_READ_BOUND_SECONDS
        # A reload (a new gate, say min_free_mb instead of max_used_mb) must reach a worker waiting here.
        reconfigured = threading.Event()

        def poll() -> None:
            self.heartbeat.beat(gate_bound, "waiting for the GPU gate")
            if self._pending_setup is not None:
                reconfigured.set()

        # Outside this server's windows: nothing is claimed (a prepared job given back), a running job was let finish.
        self._held_back = self.paused_by_schedule() is not None
        if self._held_back or not self.gate.wait_open(stop, on_poll=poll, cancel=reconfigured):
            return self._give_back(prepared)
        if self.paused_by_schedule() is not None:
            return self._give_back(prepared)
        job = self._claim(prepared)  # the prepared job sent now, or the next one claimed now
        self._held_back = job is None  # due jobs, all under roots outside their windows: poll, do not spin
        if job is None:
            return False
        self.state.current_job, self.state.current_file = job.id, job.rel_path
        handed_over = False
        try:
            job, outcome = self.process(job)
            if isinstance(outcome, Finishing):
                self._wait_finishing()
                self._finisher.start(lambda: self._finish(job, outcome), after=self._finish_after_next_request())
                handed_over = True
            else:
                self._settle(job, outcome)
        except Exception as error:  # noqa: BLE001 - one job's surprise must not end the worker
            log.exception("job %d: unexpected error", job.id)
            self._settle(job, self._job_failed(job, f"internal error: {type(error).__name__}: {error}"))
        finally:
            self.state.current_job = self.state.current_file = self.state.progress = None
            if not handed_over:
                self.journal.release(job.id)  # an outcome that could not be recorded is the lease's to settle now
        return True

    def _finish(self, job: Job, finishing: Finishing) -> None:
        """On the finishing thread: the kept video checked, tagged, written and recorded (overlap.py)."""
        try:
            self._settle(
                job,
                self._keep_and_write(job, finishing.destination, finishing.reply, finishing.server, beat=False),
            )
        except Exception as error:  # noqa: BLE001 - as in run_once: this job fails, the worker goes on
            log.exception("job %d: unexpected error", job.id)
            try:
                self._settle(job, self._job_failed(job, f"internal error: {type(error).__name__}: {error}"))
            except Exception:  # noqa: BLE001 - the journal's trouble: the lease settles it
                log.exception("job %d: its outcome could not be recorded", job.id)
        finally:
            self.journal.release(job.id)

    def process(self, job: Job) -> tuple[Job, Outcome | Finishing]:
        """One turn of a claimed job, decided, not recorded: the job as the turn ends (it may have followed its
        content to a new place) and its outcome, which `_settle` records."""
        try:
            destination = self._destination(job)
            output.remove_temp_files(destination.parent, job.id)
            # Done before a crash (the path was recorded on this job), or before the journal was lost (a record
            # with this key that another job row wrote): either way, no second render.
            already_written = output.is_complete(destination, job.idem_key) and (
                bool(job.output_path) or not output.recorded_by(destination, job.id, job.queued_at)
            )
        except OSError as error:
            return job, self._wait_for_disk(f"output folder unavailable: {error.strerror or error}")
        except output.OutputCollision as error:
            return job, Failed(str(error), count_attempt=False)
        if already_written:
            log.info("job %d: %s was already written before a restart; marking done", job.id, destination)
            return job, Done(job.server, job.server_seconds, f"found finished output {destination}")
        try:
            image = self._read_source(job)
        except OSError as error:
            if error.errno in SHARE_OFFLINE_ERRORS or (
                # A root taken out of the config is no share to wait for: its jobs are looked for, then gone.
                isinstance(error, FileNotFoundError) and self._root(job) is not None and self._root_offline(job.root)
            ):
                # An unmounted share is not a deletion: the job waits, using no attempt, until the files are back.
                return job, self._wait_for_disk(f"waiting: the share {job.root} is offline ({error.strerror})")
            if not isinstance(error, FileNotFoundError):
                return job, self._job_failed(job, f"cannot read source: {error.strerror or error}")
            followed, examined = self._follow_content(job)
            if followed is None and not (job.last_error or "").startswith(LOOKING):
                # Moved a moment ago (a renamed folder)? The intake finds the new place within a settle window.
                root = self._root(job)
                wait = 2 * (root.settle_seconds if root else 0.0) + 1.0
                log.info(
                    "job %d: %s is not there: %s",
                    job.id,
                    job.source_path,
                    LOOKING,
                    extra=job_fields(job.id, job.source_path, "queued"),
                )
                return job, WaitAndLook(f"{LOOKING}: {job.source_path}", wait)
            if followed is None:
                return job, Gone(f"{GONE}: {job.source_path}", examined)
            job, image = followed
            try:
                destination = self._destination(job)  # the video mirrors the new place
            except OSError as problem:
                return job, self._wait_for_disk(f"output folder unavailable: {problem.strerror or problem}")
            except output.OutputCollision as problem:
                return job, Failed(str(problem), count_attempt=False)
        return job, self._render(job, image, destination)

    def _render(self, job: Job, image: bytes, destination: Path) -> Outcome | Finishing:
        """The source is read: the video from the server (or kept from before), written to `destination`."""
        if (refused := outcomes.refused(job, image, self.server, self.config)) is not None:
            return refused
        kept = received.kept(self.incoming, job.idem_key, job.params)
        if kept is not None:  # received before, but the output could not be written then: not asked again
            log.info(
                "job %d: writing the video received before (kept in %s)",
                job.id,
                self.incoming,
                extra=job_fields(job.id, job.source_path, "running"),
            )
            return self._write_output(job, destination, *kept)
        request = VideoRequest(
            image=image,
            image_name=Path(job.rel_path).name,
            prompt=job.prompt,
            reply_dir=self.incoming,
            **request_parameters(job.params),
            job_id=job.id,
            key=job.idem_key,
            source_path=job.source_path,
        )
        log.info(
            "job %d: sending %s to %s (%s, %d frames, %d fps)",
            job.id,
            job.rel_path,
            self.backend.kind,
            request.resolution,
            request.frames,
            request.fps,
            extra=job_fields(job.id, job.source_path, "running"),
        )
        self.heartbeat.beat(self.server.timeout_seconds, f"job {job.id} on the server")
        left = self._prepare_beside_call()  # set once the request has left (prepare.py)
        try:
            reply = self.backend.generate(dataclasses.replace(request, on_sent=left.set))
        except BackendError as error:  # by its class alone: no attempt, one, or failed (outcomes.backend_failure)
            return outcomes.backend_failure(error, self.server.oom, job.params, job.attempts, self.config.retry)
        except OSError as error:  # the reply could not be spooled under state_dir: not the job's fault
            return self._wait_for_disk(f"cannot receive the video into {self.incoming}: {error.strerror or error}")
        finally:
            left.set()
        self._server_up()
        server = self.backend.describe()
        if self.overlap:  # kept and written beside the next call (overlap.py)
            return Finishing(destination, reply, server)
        return self._keep_and_write(job, destination, reply, server)

    def _write_output(
        self, job: Job, destination: Path, video: Path, server: dict, server_seconds: float, *, beat: bool = True
    ) -> Outcome:
        """Place the received video (kept under state_dir until then) and its record; done.

        `beat` False on the finishing thread: the worker's heartbeat is then its call's promise, not this.
        """
        if beat:
            self.heartbeat.beat(0, f"job {job.id} writing output")
        now = self.clock.now()
        record = finished.audit_record(job, destination, server_seconds, now, server or self.backend.describe())
        try:
            output.write_video(destination, job.id, video, record, comment=finished.mp4_comment(job))
        except mp4.VideoError as error:
            received.discard(self.incoming, job.idem_key)  # the server's fault: the next attempt asks again
            return self._job_failed(job, f"server sent an unusable video: {error}")
        except OSError as error:
            # The video stays kept under state_dir: written once there is room, never rendered twice.
            return self._wait_for_disk(f"cannot write output: {error.strerror or error}")
        return Done(server, server_seconds, f"video {destination}", written=destination)
