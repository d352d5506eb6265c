"""`i2vd retry` and `i2vd forget`: what an operator does with jobs that failed.

A failed job whose file was replaced since cannot succeed (its content is gone), yet it
must not stay failed for good: retrying it closes it as `superseded` (kept in history,
not counted as failed) and makes sure the file's current content is a job of its own.
`forget` drops failed jobs from the counts and touches no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from i2vd.config.load import Config
from i2vd.core.images import read_regular_file, sha256_of
from i2vd.ingest import failed_folder
from i2vd.ingest.intake import Intake, IntakeResult, Outcome
from i2vd.store.journal import Job, JobState, Journal


@dataclass(frozen=True)
class RetryResult:
    job: Job
    outcome: str  # an intake Outcome's value, or "superseded"
    reason: str = ""
    ok: bool = True


def current_sha256(job: Job) -> str | None:
    """The sha256 of what the job's file holds now; None when it cannot be read (gone, a FIFO, no permission)."""
    try:
        return sha256_of(read_regular_file(Path(job.source_path)))
    except OSError:
        return None


def retry(config: Config, journal: Journal, job_ids: list[int] | None) -> list[RetryResult]:
    """Failed (or named done) jobs run again with the settings as they are now; a replaced file supersedes its job."""
    intake = Intake(config, journal)
    results = []
    for job in journal.retryable(job_ids):
        job, moved = _from_failed_folder(config, journal, job)
        if moved is not None:
            results.append(moved)
            continue
        sha256 = current_sha256(job) if job.state is JobState.FAILED else None
        if sha256 is not None and sha256 != job.source_sha256:
            results.append(_supersede(intake, journal, job, sha256))
        else:
            result = intake.reresolve(job, fresh_start=True)
            ok = result.outcome is Outcome.QUEUED
            results.append(RetryResult(result.job or job, result.outcome.value, result.reason, ok))
    return results


def _from_failed_folder(config: Config, journal: Journal, job: Job) -> tuple[Job, RetryResult | None]:
    """A failed job's source waiting in `<root>/.i2vd-failed/` goes back first (whatever on_failure says now).

    Back at its own name, the retry goes on as for any failed job. When that name was taken meanwhile
    the file comes back as `name-1.png` (never over the other file) and the job follows it there.
    """
    if job.state is not JobState.FAILED or not job.root:
        return job, None
    root = Path(job.root)
    try:
        back = failed_folder.move_back(root, job)
    except OSError as error:
        reason = f"cannot move it back from {failed_folder.FAILED_FOLDER}: {error.strerror or error}"
        return job, RetryResult(job, Outcome.FAILED.value, reason, ok=False)
    if back is None or back == Path(job.source_path):
        return job, None
    moved = journal.relocate(
        job.id, str(back), str(root), back.relative_to(root).as_posix(), from_states=(JobState.FAILED,)
    )
    if moved is None:
        return job, None
    result = Intake(config, journal).reresolve(moved)  # queued again; the settings of now
    current = result.job if result.job is not None else moved
    reason = f"{job.source_path} is taken by another file: back as {back}"
    return current, RetryResult(
        current,
        Outcome.QUEUED.value if current.state is JobState.QUEUED else result.outcome.value,
        reason,
        ok=current.state is JobState.QUEUED,
    )


def _supersede(intake: Intake, journal: Journal, job: Job, sha256: str) -> RetryResult:
    path = Path(job.source_path)
    current: IntakeResult = intake.consider(path, intake.config.root_for(path))
    new_id = current.job.id if current.job is not None and current.job.id != job.id else None
    journal.supersede(job.id, sha256, new_id)
    if new_id is None:
        reason = f"the file has new content, which could not be taken: {current.reason}"
    else:
        reason = f"the file has new content: job {new_id} ({current.job.state.value}) is that content"
    return RetryResult(journal.job(job.id) or job, JobState.SUPERSEDED.value, reason, ok=new_id is not None)


def forget(journal: Journal, job_ids: list[int] | None) -> tuple[list[Job], list[str]]:
    """Failed jobs out of the counts; returns the forgotten jobs and, for named jobs that were not failed, why."""
    forgotten = journal.forget(job_ids)
    problems = []
    for job_id in job_ids or []:
        if job_id not in forgotten:
            job = journal.job(job_id)
            why = "no such job" if job is None else f"it is {job.state.value} (only failed jobs are forgotten)"
            problems.append(f"cannot forget job {job_id}: {why}")
    return [journal.job(job_id) for job_id in forgotten], problems
