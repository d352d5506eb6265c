"""From a settled file to a job in the journal.

The intake reads the file once: the same bytes are decoded (is it a complete
image?), hashed (the idempotency key) and described (EXIF for the prompt). A file
the journal already knows with the same size and mtime, or the same content, makes
no new job; a file that cannot become a video makes a *failed* job with the reason,
so the user sees it in `i2vd jobs --state failed` instead of it vanishing.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from i2vd.config.load import Config, WatchRoot
from i2vd.core.images import BadImage, ImageFacts, inspect_image, read_regular_file, sha256_of
from i2vd.core.listing import burst_listing
from i2vd.core.logs import job_fields
from i2vd.core.mounts import MountMemory
from i2vd.ingest import failed_folder
from i2vd.ingest.examine_pool import NOT_YET, Examined, ExaminePool, SettingsContext
from i2vd.ingest.follow import failed_as_gone, is_gone
from i2vd.ingest.reasons import describe_special, look_again, too_big
from i2vd.ingest.settings import job_settings
from i2vd.ingest.watcher import link_below
from i2vd.store.journal import Job, JobState, Journal, KnownFile, NewJob

log = logging.getLogger("i2vd.intake")

BULK_QUEUED = 20  # more new jobs than this in one burst: one line for them (a line each at debug level)
REVIEW_PAGE = 500  # unstarted jobs read at a time when sidecars are applied again


class Outcome(str, Enum):
    QUEUED = "queued"
    KNOWN = "known"  # the journal already has this file or this content with these settings
    FAILED = "failed"  # recorded as a failed job with the reason
    PARKED = "parked"  # recorded, waiting for a broken sidecar to be fixed
    NOT_READY = "not ready"  # could not be read or decoded yet: look again later


@dataclass(frozen=True)
class IntakeResult:
    outcome: Outcome
    job: Job | None = None
    reason: str = ""


class Intake:
    def __init__(self, config: Config, journal: Journal, on_queued: Callable[[Job], None] = lambda job: None):
        self.config = config
        self.journal = journal
        self.on_queued = on_queued
        self.mounts = MountMemory(config.state_dir)
        self.pool: ExaminePool | None = None  # the intake loop's, while it runs: bursts are read ahead in processes
        # Bumped by each sidecar event and new config: a job the pool worked out under an older one is worked out
        # again here (the pool reads a burst's sidecars a little ahead of the journal transaction).
        self.settings_generation = 0

    def settings_changed(self) -> None:
        """A sidecar changed (any thread may say so) or the config did."""
        self.settings_generation += 1

    def _job(self, job_id: int | None) -> Job | None:
        return self.journal.job(job_id) if job_id is not None else None

    def consider(
        self, path: Path, root: WatchRoot | None, *, profile_name: str = "default", bad_is_final: bool = True
    ) -> IntakeResult:
        """Look at one file; with bad_is_final=False an undecodable image is NOT_READY instead of FAILED."""
        return self.consider_many([(path, root, bad_is_final)], profile_name=profile_name)[0]

    def consider_many(
        self,
        files: list[tuple[Path, WatchRoot | None, bool]],
        *,
        profile_name: str = "default",
        enough: Callable[[], bool] | None = None,
        coming: list[tuple[Path, WatchRoot | None]] = (),
    ) -> list[IntakeResult]:
        """`consider` for a burst of files (path, root, bad_is_final), recorded in one journal transaction.

        With `enough`, examining stops once it says so (after at least one file): the results are
        those of the files taken, the first ones; the caller offers the others again later.
        `coming` are the next burst's files: the pool starts on them once this burst's are handed over.
        """
        with burst_listing():
            return self._consider_many(files, profile_name, enough, coming)

    def _consider_many(
        self,
        files: list[tuple[Path, WatchRoot | None, bool]],
        profile_name: str,
        enough: Callable[[], bool] | None,
        coming: list[tuple[Path, WatchRoot | None]],
    ) -> list[IntakeResult]:
        results: list[IntakeResult | None] = []
        to_record: list[tuple[int, NewJob, int]] = []
        known_files = self.journal.known_files_at([str(path) for path, _, _ in files])  # one query, not one per file
        ahead = None
        if self.pool is not None:
            context = SettingsContext.of(self.config, profile_name, self.settings_generation)
            ahead = self.pool.lookahead(self._new_files(files, known_files), context)
            if coming:
                known_next = self.journal.known_files_at([str(path) for path, _ in coming])
                self.pool.prefetch(self._new_files([(path, root, True) for path, root in coming], known_next), context)
        for path, root, bad_is_final in files:
            if results and enough is not None and enough():
                break
            try:
                pooled = ahead.get(str(path), enough) if ahead is not None else None
                if pooled is NOT_YET:
                    break  # the pool is still at it when the slice's time is up: offered again with the next
                examined = self._examine(path, root, profile_name, bad_is_final, known_files.get(str(path)), pooled)
            except sqlite3.Error:
                raise  # the journal's trouble, not this file's: the whole burst is offered again
            except Exception as error:  # noqa: BLE001 - whatever one file raises, only its own job fails
                log.exception("examining %s failed unexpectedly", path)
                reason = f"{path.name} cannot be taken: {type(error).__name__}: {error}"
                examined = job_settings(self.config, path, root, "", 0, None, profile_name, reason), None
            if isinstance(examined, IntakeResult):
                results.append(examined)
            else:
                to_record.append((len(results), *examined))
                results.append(None)
        if ahead is not None:
            ahead.cancel()
        followed = self._follow_moves(to_record)
        for index, result in followed.items():
            results[index] = result
        to_record = [item for item in to_record if item[0] not in followed]
        recorded = self.journal.add_jobs([(new, mtime_ns) for _, new, mtime_ns in to_record]) if to_record else []
        queued = [job for job, created in recorded if created and job.state is JobState.QUEUED]
        bulk = len(queued) > BULK_QUEUED
        if bulk:  # one line for a slice of a big drop: 100,000 lines would trip journald's rate limit
            log.info("%d jobs queued: %s ... %s (a line each at debug level)", len(queued), *_ends(queued))
        for (index, new, _), (job, created) in zip(to_record, recorded, strict=True):
            if not created and failed_as_gone(job) and job.source_path != new.source_path:
                # Failed as gone by the worker while this slice was read (it was running then): it follows now.
                states = (JobState.FAILED,)
                job = self.journal.relocate(job.id, new.source_path, new.root, new.rel_path, from_states=states) or job
                if job.state is JobState.QUEUED:
                    results[index] = self._report(job)
                    continue
            results[index] = (
                self._report(job, quiet=bulk)
                if created
                else IntakeResult(Outcome.KNOWN, job, reason=f"same content and settings as job {job.id}")
            )
            if created and job.state is JobState.FAILED:
                self._move_failed(job)
        return results

    @staticmethod
    def _new_files(files: list[tuple[Path, WatchRoot | None, bool]], known: dict) -> list[tuple[str, str | None]]:
        """The files of a burst the journal does not know by path: those a pool reads ahead (examine_pool.py)."""
        return [(str(path), str(root.path) if root else None) for path, root, _ in files if str(path) not in known]

    def _examine(
        self,
        path: Path,
        root: WatchRoot | None,
        profile_name: str,
        bad_is_final: bool,
        known: KnownFile | None,
        pooled: Examined | None = None,
    ) -> IntakeResult | tuple[NewJob, int | None]:
        """Read, hash and decode one file once (or take what the pool found in it, if it is still what the pool read):
        a result when nothing is to be recorded, else the job to record."""
        info = None
        link = link_below(root.path if root else None, path)
        if link is not None:
            # Never read: a folder linked into the hot folder (to /etc, say) is no way in.
            reason = f"{path.name} lies behind {link}, a symbolic link: links are never followed or uploaded"
            return job_settings(self.config, path, root, "", 0, None, profile_name, reason), None
        try:
            info = path.stat(follow_symlinks=False)
            if known and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
                return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="already in the journal")
            # Never opened: a FIFO would block, a link could lead outside the hot folder, a 2 GB TIFF fill memory.
            regular = stat.S_ISREG(info.st_mode)
            unread = too_big(path, info, root) if regular else describe_special(path, info, root)
            if unread is not None:
                unmade = job_settings(self.config, path, root, "", info.st_size, None, profile_name, unread)
                # A file too big is not remembered: once the limit is raised, the next rescan reads it.
                return unmade, None if regular else info.st_mtime_ns
            pooled = pooled if pooled is not None and pooled.fits(info) else None
            data = read_regular_file(path) if pooled is None or pooled.crashed else b""
        except FileNotFoundError:
            return IntakeResult(Outcome.NOT_READY, reason=f"{path} is gone")
        except OSError as error:
            if bad_is_final and error.errno in (errno.EACCES, errno.EPERM):
                # Not remembered as seen: once its permissions are fixed, a rescan takes it.
                size = info.st_size if info is not None else 0
                return job_settings(
                    self.config, path, root, "", size, None, profile_name, f"cannot read {path.name}: {error.strerror}"
                ), None
            return IntakeResult(Outcome.NOT_READY, reason=f"cannot read {path}: {error.strerror}")
        read_here = pooled is None or pooled.crashed
        sha256, size = (sha256_of(data), len(data)) if read_here else (pooled.sha256, pooled.size)
        if known and known.sha256 == sha256:
            self.journal.remember_file(str(path), info.st_size, info.st_mtime_ns, sha256, known.job_id)
            return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="same content as before")
        if pooled is not None and pooled.new_job is not None and self._still_current(pooled, profile_name):
            return pooled.new_job, info.st_mtime_ns
        error = facts = None
        try:
            facts = inspect_image(data, path.name) if pooled is None else pooled.facts_or_raise(path.name)
        except BadImage as problem:
            if not bad_is_final:
                return IntakeResult(Outcome.NOT_READY, reason=str(problem))
            error = str(problem)
        return job_settings(self.config, path, root, sha256, size, facts, profile_name, error), info.st_mtime_ns

    def _still_current(self, pooled: Examined, profile_name: str) -> bool:
        """No sidecar event and no new config since the pool worked this job out (an edit may have come after)."""
        return pooled.settings_key == (profile_name, self.settings_generation)

    def _follow_moves(self, to_record: list[tuple[int, NewJob, int | None]]) -> dict[int, IntakeResult]:
        """New files that are the content of a waiting job whose file is gone: that job follows them (no new job).

        A renamed folder, a file moved to another subfolder: the job moves to the new place, takes the
        sidecars there, and its video will mirror it. A job failed as "gone" comes back to the queue.
        """
        candidates = [
            (index, new, mtime_ns)
            for index, new, mtime_ns in to_record
            if new.source_sha256 and mtime_ns is not None and not new.error
        ]
        if not candidates:
            return {}
        waiting = self.journal.jobs_with_content(
            [new.source_sha256 for _, new, _ in candidates], (JobState.QUEUED, JobState.PARKED, JobState.FAILED)
        )
        orphans: dict[str, list[Job]] = {}
        for job in waiting:
            if (job.state is not JobState.FAILED or failed_as_gone(job)) and is_gone(job, self.mounts):
                orphans.setdefault(job.source_sha256, []).append(job)
        results: dict[int, IntakeResult] = {}
        for index, new, mtime_ns in candidates:
            if not orphans.get(new.source_sha256):
                continue
            job = orphans[new.source_sha256].pop(0)
            moved = self.journal.relocate(
                job.id,
                new.source_path,
                new.root,
                new.rel_path,
                from_states=(JobState.QUEUED, JobState.PARKED, JobState.FAILED),
            )
            if moved is None:
                continue
            self.journal.remember_file(new.source_path, new.source_size, mtime_ns, new.source_sha256, moved.id)
            log.info(
                "job %d follows its file: %s -> %s",
                moved.id,
                job.rel_path,
                moved.rel_path,
                extra=job_fields(moved.id, moved.source_path, moved.state.value),
            )
            result = self.reresolve(moved)  # the sidecars of the new place
            if result.outcome is Outcome.KNOWN and result.job is not None and result.job.id == moved.id:
                result = self._report(result.job)
            results[index] = result
        return results

    def _move_failed(self, job: Job) -> None:
        """`on_failure: move` for a file that failed here (not an image, say); a link or a FIFO is never moved."""
        root = self.config.root_for(Path(job.source_path))
        if root is None or root.on_failure != "move" or not job.source_sha256:
            return
        try:
            failed_folder.move_in(root.path, job, job.last_error or "", self.journal.clock.now())
        except OSError as error:
            log.warning(
                "job %d: could not move %s into %s: %s", job.id, job.source_path, failed_folder.FAILED_FOLDER, error
            )

    def _report(self, job: Job, *, quiet: bool = False) -> IntakeResult:
        """Say what became of a job (a queued one at debug level when `quiet`: a slice's summary said it)."""
        if job.state is JobState.FAILED:
            log.warning(
                "job %d %s failed: %s",
                job.id,
                job.rel_path,
                job.last_error,
                extra=job_fields(job.id, job.source_path, "failed"),
            )
            return IntakeResult(Outcome.FAILED, job, reason=job.last_error or "")
        if job.state is JobState.PARKED:
            log.warning(
                "job %d %s parked: %s",
                job.id,
                job.rel_path,
                job.last_error,
                extra=job_fields(job.id, job.source_path, "parked"),
            )
            return IntakeResult(Outcome.PARKED, job, reason=job.last_error or "")
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "job %d queued: %s (profile %s)",
            job.id,
            job.rel_path,
            job.profile_name,
            extra=job_fields(job.id, job.source_path, "queued"),
        )
        self.on_queued(job)
        return IntakeResult(Outcome.QUEUED, job)

    def reresolve(self, job: Job, *, fresh_start: bool = False) -> IntakeResult:
        """Apply the sidecars as they are now to a job not yet started (or, with fresh_start, a retried one)."""
        path = Path(job.source_path)
        if not fresh_start and not os.path.lexists(path):
            # Moved away with its folder (the sidecar "deleted" here went along): its new place decides, once found.
            return IntakeResult(Outcome.KNOWN, job, reason="its file is not here any more")
        root = self.config.root_for(path)
        facts_data = job.profile.get("facts")
        facts = ImageFacts(**facts_data) if facts_data else None
        error = None
        if facts is None:  # it failed at intake: look at the file again, the user may have replaced it
            facts, error = look_again(path, root, job.source_sha256)
        new = job_settings(
            self.config,
            path,
            root,
            job.source_sha256,
            job.source_size,
            facts,
            job.profile.get("requested", "default"),
            error,
        )
        # A queued job's last_error is its previous attempt's, not a settings problem: compare what settings decide.
        settings_problem = None if job.state is JobState.QUEUED else job.last_error
        if not fresh_start and (new.idem_key, new.state, new.error or new.parked, new.priority) == (
            job.idem_key,
            job.state,
            settings_problem,
            job.priority,
        ):
            return IntakeResult(Outcome.KNOWN, job, reason="settings unchanged")
        states = (JobState.FAILED, JobState.DONE) if fresh_start else (JobState.QUEUED, JobState.PARKED)
        updated, other = self.journal.reresolve(job.id, new, from_states=states, fresh_start=fresh_start)
        if other is not None:
            if fresh_start:
                return IntakeResult(
                    Outcome.FAILED,
                    job,
                    reason=f"job {other} already has this content and these settings: retry {other} instead",
                )
            if not self.journal.merge_into(job.id, other):
                return IntakeResult(Outcome.KNOWN, self.journal.job(job.id), reason="the job moved on meanwhile")
            return IntakeResult(
                Outcome.KNOWN, self.journal.job(other), reason=f"same content and settings as job {other}"
            )
        if updated is None:
            return IntakeResult(Outcome.KNOWN, self.journal.job(job.id), reason="the job moved on meanwhile")
        return self._report(updated)

    def reresolve_under(self, folder: Path | None, *, parked_only: bool = False) -> list[IntakeResult]:
        """A sidecar under `folder` changed: jobs not yet started there get the new settings."""
        return list(self.reresolve_each(folder, parked_only=parked_only))

    def reresolve_each(self, folder: Path | None, *, parked_only: bool = False) -> Iterator[IntakeResult]:
        """reresolve_under a page of jobs at a time: a restart re-resolves every queued job (a sidecar may have been
        edited while i2vd was stopped), and 100,000 of them at once were ~150 MB of memory."""
        after_id = 0
        while True:
            jobs = self.journal.unstarted_jobs(
                str(folder) if folder else None, parked_only=parked_only, after_id=after_id, limit=REVIEW_PAGE
            )
            for job in jobs:
                yield self.reresolve(job)
            if len(jobs) < REVIEW_PAGE:
                return
            after_id = jobs[-1].id

    def retry(self, job_ids: list[int] | None) -> list[IntakeResult]:
        """`i2vd retry`: failed (or named done) jobs run again with the profile and sidecars as they are now."""
        return [self.reresolve(job, fresh_start=True) for job in self.journal.retryable(job_ids)]


def _ends(jobs: list[Job]) -> tuple[str, str]:
    return jobs[0].rel_path, jobs[-1].rel_path
