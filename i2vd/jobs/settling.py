"""What a worker records: a job's outcome and what follows it, the server down and back up, its status for
`i2vd status`. A mixin of Worker."""

from __future__ import annotations

import dataclasses
import logging

from i2vd.config import schedule as schedules
from i2vd.core.logs import job_fields
from i2vd.jobs import outcomes, received
from i2vd.jobs.outcomes import Done, Downgrade, Failed, Outcome, RetryAfter, ServerDown, WaitForDisk
from i2vd.store.journal import Job

log = logging.getLogger("i2vd.worker")


class Settling:
    def _job_failed(self, job: Job, error: str) -> Outcome:
        """The job's own failure: uses an attempt; backs off, or fails for good when none are left."""
        return outcomes.job_failure(error, job.attempts, self.config.retry)

    def _wait_for_disk(self, reason: str) -> WaitForDisk:
        """A file system's trouble, not the job's: back to the queue after the first backoff, no attempt used."""
        return WaitForDisk(reason, self.config.retry.initial_backoff_seconds)

    def _settle(self, job: Job, outcome: Outcome) -> None:
        """Record `outcome` (outcomes.record, the one place that writes it) and do what follows it here."""
        with self._settle_lock:
            self._settle_locked(job, outcome)

    def _settle_locked(self, job: Job, outcome: Outcome) -> None:
        if isinstance(outcome, WaitForDisk):
            outcome = self._disk_backoff(job, outcome)
        else:
            self._disk_waits.pop(job.id, None)
        if isinstance(outcome, ServerDown):  # not the job's fault: the queue pauses, no attempt used
            if self.state.server_down_since is None:
                self.state.server_down_since = self.clock.now()
                log.error("server down: %s; pausing the queue", outcome.error)
            self._down_failures += 1
            self.state.server_error = outcome.error
        outcome = outcomes.record(self.journal, job, outcome, self.clock.now())
        try_finished = getattr(self.backend, "try_finished", None)  # executor: celery forgets the job's task
        if try_finished is not None and isinstance(outcome, (Done, Failed, RetryAfter, Downgrade)):
            try_finished(job.idem_key)
        if isinstance(outcome, Failed):
            self.state.jobs_failed += 1
            self._move_failed(job, outcome.error)
        elif isinstance(outcome, Done):
            received.discard(self.incoming, job.idem_key)
            self.state.jobs_done += 1
            if outcome.written is not None:
                log.info(
                    "job %d: done -> %s (%.1f s on the server)",
                    job.id,
                    outcome.written,
                    outcome.server_seconds,
                    extra=job_fields(job.id, job.source_path, "done"),
                )
            self._after(job)

    def _disk_backoff(self, job: Job, outcome: WaitForDisk) -> WaitForDisk:
        """A disk unavailable for a night is asked (and logged) less and less often, as any retry, using no attempt.

        The streak lives in memory: a restart starts it again, which is also when a disk may have come back."""
        streak = self._disk_waits.get(job.id, 0) + 1
        self._disk_waits[job.id] = streak
        return dataclasses.replace(outcome, wait=max(outcome.wait, self.config.retry.backoff_seconds(streak)))

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
