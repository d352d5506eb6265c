"""The next job claimed and read while the server renders the current one (a mixin of Worker).

SPEC "Performance targets": between two calls only what must come between them. While call k
runs, a preparing thread claims job k+1 (its lease taken, no `started_at` until it is sent), reserves
its output path and reads and hash-checks its image. Once call k is over the worker reads the
schedule and the VRAM gate as before any call, marks the job as being sent
(Journal.mark_sending: from then on a crash interrupts it) and sends it; that commit does not wait
for the disk (a crash of the process finds it; the preparing thread fsyncs it as the request leaves,
for a power cut). One job at a time on each server stays the rule: a prepared job is not on the server.

Exactly-once: a prepared job is a claimed job like any other. If i2vd dies before it is sent,
recover_running returns it to the queue, counting no interruption against it (the daemon did
not die of it: a file that crashes i2vd must not take the innocent next job down with it). A
prepared job that is not sent (stop, a reload, the gate or a schedule closed, the journal in
trouble) goes back to the queue at once, using no attempt. With several servers a worker
prepares only while every other server would still find a job due, so no server idles while
another holds a job it has not started. `run_once` alone (tests, `i2vd batch`) never prepares.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass

from i2vd.config import schedule as schedules
from i2vd.core.images import sha256_of
from i2vd.jobs.beside import BesideThread
from i2vd.store.journal import Job

log = logging.getLogger("i2vd.worker")

# A bigger image is read when it is sent: held beside the call it would add its size to the daemon's memory
# (SPEC: < 250 MB with a 40 MB image), and reading it is small beside uploading it.
PREPARED_IMAGE_MAX_BYTES = 8 << 20


@dataclass(frozen=True)
class Prepared:
    """A claimed job whose image is read (None: reading failed; its turn reads again and says why)."""

    job: Job
    image: bytes | None
    config: object = None  # the config it was prepared under: after a reload it is prepared again
    seen: tuple[int, int] | None = None  # the file's (size, mtime_ns) when it was read


def _seen(path: str) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class Preparer:
    """At most one job at a time being prepared beside a worker's call (on a thread kept between jobs)."""

    def __init__(self, name: str):
        self.name = name
        self._beside = BesideThread(name)
        self._result: Prepared | None = None

    @property
    def busy(self) -> bool:
        return self._beside.busy

    def start(self, work, after: threading.Event | None = None) -> None:
        self.take_result()

        def run() -> None:
            self._result = work()

        self._beside.submit(run, after)

    def take_result(self) -> Prepared | None:
        """The prepared job (if any), once its preparing is over; the preparer is empty afterwards."""
        self._beside.wait()
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self._beside.close()


class Preparing:
    """Worker's side: prepare beside the call, take the prepared job, give it back when it is not sent."""

    _prepared_image: tuple[int, bytes, tuple[int, int] | None] | None = None
    _start_unsynced = False  # a job's start committed without waiting for the disk, not synced yet
    _next_request_left: threading.Event | None = None  # set once the next request has left (beside.py)
    _preparing: Preparer | None = None

    @property
    def _preparer(self) -> Preparer:
        if self._preparing is None:
            self._preparing = Preparer(f"i2vd-preparing-{self.name.rsplit(':', 1)[-1]}")
        return self._preparing

    def _prepare_beside_call(self) -> threading.Event:
        """Called as a request is about to leave: once it has left (the event set: by a backend that says so,
        `signals_sent`, else at once), its start is put on the disk and the next job claimed and read while the
        server works, and the last video finished (`_finish_after_next_request`)."""
        left, self._next_request_left = self._next_request_left or threading.Event(), None
        if not getattr(self.backend, "signals_sent", False):
            left.set()
        if self.overlap:
            self._preparer.start(self._beside_call, after=left)
        return left

    def _finish_after_next_request(self) -> threading.Event:
        """What a video's finishing waits for: the next request to leave (not to compete with the sending)."""
        self._next_request_left = threading.Event()
        return self._next_request_left

    def _beside_call(self) -> Prepared | None:
        """On the preparing thread: the start mark_sending committed without waiting for the disk, synced now
        (a crash of the process found it already), then the next job prepared."""
        if self._start_unsynced:
            self._start_unsynced = False
            try:
                self.journal.sync()
            except OSError as error:  # the next commit syncs the WAL with it
                log.warning("could not sync the journal: %s", error)
        return self._prepare_next()

    def _prepare_next(self) -> Prepared | None:
        """On the preparing thread: claim the next due job and read its image, or None."""
        job, config = None, self.config
        try:
            if self._pending_setup is not None or self.paused_by_schedule() is not None:
                return None
            if self.journal.ready_count() < len(self.config.servers):
                return None  # leave every other server a job: none idles while this one holds one unsent
            now = self.clock.now()
            job = self.journal.claim_next(
                self.name, self.lease_seconds, skip_roots=schedules.closed_roots(self.config, now), prepared=True
            )
            if job is None:
                return None
            try:
                self._destination(job)  # the output path reserved now; its turn takes it from the job
            except Exception:  # noqa: BLE001 - its turn finds the same trouble and says so
                log.debug("job %d: no output path while preparing", job.id, exc_info=True)
            job = self.journal.job(job.id) or job
            try:
                seen = _seen(job.source_path)
                image = super()._read_source(job) if job.source_size <= PREPARED_IMAGE_MAX_BYTES else None
            except OSError:
                seen = image = None  # its turn reads again, and follows the file or waits for the share
            if image is not None and (sha256_of(image) != job.source_sha256 or _seen(job.source_path) != seen):
                image = None  # changed since it was queued, or while read: its turn says so
            return Prepared(job, image, config, seen)
        except Exception:  # noqa: BLE001 - preparing is an optimisation: its failure must not lose the job
            log.exception("preparing the next job failed")
            if job is not None:
                self._give_back(job)
            return None

    def _take_prepared(self, stop: threading.Event) -> Job | None:
        """The job prepared beside the last call, if it may be sent now; any other is given back."""
        prepared = self._preparer.take_result()
        if prepared is None:
            return None
        job = prepared.job
        closed = schedules.closed_roots(self.config, self.clock.now())
        if stop.is_set() or self._pending_setup is not None or prepared.config is not self.config or job.root in closed:
            self._give_back(job)
            return None
        if prepared.image is not None:
            self._prepared_image = (job.id, prepared.image, prepared.seen)
        return job

    def _claim(self, prepared: Job | None) -> Job | None:
        """The gate is open: the prepared job, being sent from now on, or the next due job claimed now."""
        if prepared is not None:
            return self._send_prepared(prepared)
        now = self.clock.now()
        return self.journal.claim_next(
            self.name, self.lease_seconds, skip_roots=schedules.closed_roots(self.config, now)
        )

    def _send_prepared(self, job: Job) -> Job | None:
        """The gate is open: from here the prepared job is being sent (a crash now interrupts it); it started now
        (its audit record's `started`), not when it was prepared."""
        started_at = self.journal.mark_sending(job.id, self.name)
        if started_at is not None:
            self._start_unsynced = True  # synced beside the call (_beside_call)
            return dataclasses.replace(job, started_at=started_at)
        self._prepared_image = None
        self.journal.release(job.id)  # no longer running (forgotten meanwhile): nothing to send
        return None

    def _give_back(self, job: Job | None) -> bool:
        """A prepared job that will not be sent now: back to the queue, no attempt used. False: none sent."""
        self._prepared_image = None
        if job is None:
            return False
        try:
            self.journal.give_back(job.id)
        except Exception:  # noqa: BLE001 - the journal's trouble: a restart's recovery returns it
            log.exception("job %d: could not give the prepared job back to the queue", job.id)
        finally:
            self.journal.release(job.id)
        return False

    def _read_source(self, job: Job) -> bytes:
        """The image read beside the last call (the same job, the file unchanged since), else read now."""
        prepared, self._prepared_image = self._prepared_image, None
        if prepared is not None and prepared[0] == job.id and _seen(job.source_path) == prepared[2]:
            return prepared[1]
        return super()._read_source(job)  # moved or deleted meanwhile: read (or followed) as without preparing

    def _stop_preparing(self) -> None:
        """The worker ends: a job prepared for a call that will not come goes back to the queue."""
        prepared = self._preparer.take_result()
        self._preparer.close()
        self._give_back(prepared.job if prepared is not None else None)
