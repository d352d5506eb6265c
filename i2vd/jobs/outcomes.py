"""What became of one turn of a job: the worker decides an outcome, `record` writes it to the journal.

`Worker.process` returns one of these values instead of writing to the journal itself; the decisions
that need no I/O are the functions below (which failure uses an attempt, when the next try is, what
server.oom asks for), so they are tested without SQLite (tests/jobs/test_outcomes.py). `record` is
the one place a job's outcome reaches the journal, and the log line that says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2vd.config.load import RESOLUTIONS, Config, RetryPolicy, ServerConfig
from i2vd.config.parameter_limits import range_problems, sending_limits
from i2vd.core.images import sha256_of
from i2vd.core.logs import job_fields
from i2vd.render.backends.base import BackendError, BadInput, ServerOutOfMemory, ServerUnavailable
from i2vd.store.journal import Job, Journal

log = logging.getLogger("i2vd.worker")


@dataclass(frozen=True)
class Done:
    """The video and its record are in place (or were, before a restart)."""

    server: dict[str, Any]
    server_seconds: float
    note: str
    written: Path | None = None  # the video this turn wrote (None: found written before a restart)


@dataclass(frozen=True)
class RetryAfter:
    """The job's own failure, attempts left: back to the queue after `wait` seconds, one attempt used."""

    error: str
    wait: float
    attempt: int  # the attempt that failed (1 = the first)


@dataclass(frozen=True)
class Failed:
    """Failed for good."""

    error: str
    count_attempt: bool = True
    note: str = ""


def refused(job: Job, image: bytes, server: ServerConfig, config: Config) -> Failed | None:
    """A job never sent: its source changed since it was queued, or its parameters (journaled under another
    config) are more than this server takes; `i2vd retry` resolves it again with the config as it is."""
    if sha256_of(image) != job.source_sha256:
        return Failed("source file changed after it was queued (the new content is a new job)", count_attempt=False)
    unfit = range_problems(job.params, sending_limits(config, server))
    if unfit:
        return Failed(f"this server cannot take the job's {'; '.join(unfit)}", count_attempt=False)
    return None


@dataclass(frozen=True)
class ServerDown:
    """The server could not take the job: back to the queue now, no attempt used; the queue pauses."""

    error: str


@dataclass(frozen=True)
class Downgrade:
    """Out of GPU memory with server.oom: downgrade: queued again one resolution lower."""

    params: dict[str, Any] = field(hash=False)
    note: str


@dataclass(frozen=True)
class WaitForDisk:
    """A file system's trouble, not the job's (a full disk, an offline share): back after `wait`, no attempt."""

    reason: str
    wait: float


@dataclass(frozen=True)
class WaitAndLook:
    """The source is not where it was: back after `wait`, no attempt, while the intake finds where it moved."""

    reason: str
    wait: float


@dataclass(frozen=True)
class Gone:
    """The source is nowhere the worker looked (`examined`): failed for good, no attempt used, unless the
    intake tied another place of its content to the job in the meantime (then it is a WaitAndLook again)."""

    error: str
    examined: frozenset[str]


Outcome = Done | RetryAfter | Failed | ServerDown | Downgrade | WaitForDisk | WaitAndLook | Gone


# -- decisions (no I/O) -------------------------------------------------------------------------------
def job_failure(error: str, attempts: int, retry: RetryPolicy) -> RetryAfter | Failed:
    """The job's own failure after `attempts` earlier ones: again after the backoff, or failed when none are left."""
    attempt = attempts + 1
    if attempt >= retry.attempts:
        return Failed(error, note=f"after {attempt} attempt(s)")
    return RetryAfter(error, retry.backoff_seconds(attempt), attempt)


def out_of_memory(error: str, oom: str, params: dict[str, Any], attempts: int, retry: RetryPolicy) -> Outcome:
    """server.oom: fail at once, step the resolution down one level, or wait (the backoff, then the gate)."""
    if oom == "fail":
        return Failed(f"out of GPU memory: {error}", note="(server.oom: fail)")
    resolution = params["resolution"]
    if oom == "downgrade" and RESOLUTIONS.index(resolution) > 0:
        lower = RESOLUTIONS[RESOLUTIONS.index(resolution) - 1]
        return Downgrade({**params, "resolution": lower}, f"out of GPU memory at {resolution}: stepped down to {lower}")
    # Not again at once with the same settings: the attempt counts, the retry waits for its backoff and the gate.
    waiting = " (waiting for VRAM before the next try)" if attempts + 1 < retry.attempts else ""
    return job_failure(f"out of GPU memory{waiting}: {error}", attempts, retry)


def backend_failure(
    error: BackendError, oom: str, params: dict[str, Any], attempts: int, retry: RetryPolicy
) -> Outcome:
    """What a failed server call means for the job: by the error's class alone (backends/failures.py)."""
    if isinstance(error, ServerUnavailable):
        return ServerDown(str(error))
    if isinstance(error, BadInput):
        return Failed(str(error))
    if isinstance(error, ServerOutOfMemory):
        return out_of_memory(str(error), oom, params, attempts, retry)
    return job_failure(str(error), attempts, retry)


# -- the one place an outcome reaches the journal ------------------------------------------------------
def record(journal: Journal, job: Job, outcome: Outcome, now: float) -> Outcome:
    """Write `outcome` for `job` (claimed by this worker) to the journal, and log it; returns what was applied
    (a Gone becomes the Failed or the WaitAndLook that the journal decided in one transaction)."""
    where = job.source_path
    if isinstance(outcome, Gone):
        # The look and the verdict are two steps: the intake may have recorded the new place between them.
        if journal.fail_as_gone(job.id, outcome.error, outcome.examined):
            outcome = Failed(outcome.error, count_attempt=False)
            log.error("job %d: failed: %s", job.id, outcome.error, extra=job_fields(job.id, where, "failed"))
            return outcome
        log.info(
            "job %d: its content was just seen at another place; looking there",
            job.id,
            extra=job_fields(job.id, where, "queued"),
        )
        return WaitAndLook("its content was just seen at another place", 0.0)
    if isinstance(outcome, Done):
        journal.mark_done(job.id, outcome.server, outcome.server_seconds, note=outcome.note)
    elif isinstance(outcome, RetryAfter):
        log.warning(
            "job %d: attempt %d failed (%s); retrying in %.0f s",
            job.id,
            outcome.attempt,
            outcome.error,
            outcome.wait,
            extra=job_fields(job.id, where, "queued"),
        )
        journal.requeue(job.id, outcome.error, now + outcome.wait, count_attempt=True)
    elif isinstance(outcome, Failed):
        note = f" {outcome.note}" if outcome.note else ""
        log.error("job %d: failed%s: %s", job.id, note, outcome.error, extra=job_fields(job.id, where, "failed"))
        journal.mark_failed(job.id, outcome.error, count_attempt=outcome.count_attempt)
    elif isinstance(outcome, ServerDown):
        journal.requeue(job.id, outcome.error, now, count_attempt=False)
    elif isinstance(outcome, Downgrade):
        log.warning("job %d: %s", job.id, outcome.note, extra=job_fields(job.id, where, "queued"))
        journal.downgrade(job.id, outcome.params, outcome.note)
    elif isinstance(outcome, WaitForDisk):
        log.warning("job %d: %s; will retry", job.id, outcome.reason, extra=job_fields(job.id, where, "queued"))
        journal.requeue(job.id, outcome.reason, now + outcome.wait, count_attempt=False)
    elif isinstance(outcome, WaitAndLook):
        journal.requeue(job.id, outcome.reason, now + outcome.wait, count_attempt=False)
    else:
        raise TypeError(f"not an outcome: {outcome!r}")
    return outcome
