"""From a settled file to a job in the journal.

The intake reads the file once: the same bytes are decoded (is it a complete
image?), hashed (the idempotency key) and described (EXIF for the prompt). A file
the journal already knows with the same size and mtime, or the same content, makes
no new job; a file that cannot become a video makes a *failed* job with the reason,
so the user sees it in `i2vd jobs --state failed` instead of it vanishing.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import sqlite3
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

import yaml

from i2vd.config.load import Config, WatchRoot
from i2vd.config.profiles import resolve_profile
from i2vd.config.sidecars import (
    FOLDER_SIDECAR,
    SIDECAR_LIMIT,
    ProfileError,
    SidecarError,
    belongs_to,
    image_sidecar,
    is_sidecar_name,
    read_caption,
    read_sidecars,
    sidecar_files,
)
from i2vd.core.clock import Clock
from i2vd.core.images import BadImage, ImageFacts, inspect_image, read_regular_file, sha256_of
from i2vd.core.listing import burst_listing
from i2vd.core.liveness import Heartbeat
from i2vd.core.logs import job_fields
from i2vd.core.mounts import MountMemory, read_mounts, should_poll
from i2vd.ingest import failed_folder
from i2vd.ingest.follow import failed_as_gone, is_gone
from i2vd.ingest.watcher import FolderWatch, MissedEvents, SettleTracker, is_candidate, link_below, scan
from i2vd.store.journal import Job, JobState, Journal, KnownFile, NewJob

log = logging.getLogger("i2vd.intake")


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

    def _job(self, job_id: int | None) -> Job | None:
        return self.journal.job(job_id) if job_id is not None else None

    def relative_path(self, path: Path, root: WatchRoot | None) -> PurePosixPath:
        if root is None:
            return PurePosixPath(path.name)
        return PurePosixPath(path.relative_to(root.path).as_posix())

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
    ) -> list[IntakeResult]:
        """`consider` for a burst of files (path, root, bad_is_final), recorded in one journal transaction.

        With `enough`, examining stops once it says so (after at least one file): the results are
        those of the files taken, the first ones; the caller offers the others again later.
        """
        with burst_listing():
            return self._consider_many(files, profile_name, enough)

    def _consider_many(
        self, files: list[tuple[Path, WatchRoot | None, bool]], profile_name: str, enough: Callable[[], bool] | None
    ) -> list[IntakeResult]:
        results: list[IntakeResult | None] = []
        to_record: list[tuple[int, NewJob, int]] = []
        known_files = self.journal.known_files_at([str(path) for path, _, _ in files])  # one query, not one per file
        for path, root, bad_is_final in files:
            if results and enough is not None and enough():
                break
            try:
                examined = self._examine(path, root, profile_name, bad_is_final, known_files.get(str(path)))
            except sqlite3.Error:
                raise  # the journal's trouble, not this file's: the whole burst is offered again
            except Exception as error:  # noqa: BLE001 - whatever one file raises, only its own job fails
                log.exception("examining %s failed unexpectedly", path)
                reason = f"{path.name} cannot be taken: {type(error).__name__}: {error}"
                examined = self._settings(path, root, "", 0, None, profile_name, reason), None
            if isinstance(examined, IntakeResult):
                results.append(examined)
            else:
                to_record.append((len(results), *examined))
                results.append(None)
        followed = self._follow_moves(to_record)
        for index, result in followed.items():
            results[index] = result
        to_record = [item for item in to_record if item[0] not in followed]
        recorded = self.journal.add_jobs([(new, mtime_ns) for _, new, mtime_ns in to_record]) if to_record else []
        for (index, new, _), (job, created) in zip(to_record, recorded, strict=True):
            if not created and failed_as_gone(job) and job.source_path != new.source_path:
                # Failed as gone by the worker while this slice was read (it was running then): it follows now.
                job = (
                    self.journal.relocate(
                        job.id, new.source_path, new.root, new.rel_path, from_states=(JobState.FAILED,)
                    )
                    or job
                )
                if job.state is JobState.QUEUED:
                    results[index] = self._report(job)
                    continue
            results[index] = (
                self._report(job)
                if created
                else IntakeResult(Outcome.KNOWN, job, reason=f"same content and settings as job {job.id}")
            )
            if created and job.state is JobState.FAILED:
                self._move_failed(job)
        return results

    def _examine(
        self, path: Path, root: WatchRoot | None, profile_name: str, bad_is_final: bool, known: KnownFile | None
    ) -> IntakeResult | tuple[NewJob, int | None]:
        """Read, hash and decode one file once: a result when nothing is to be recorded, else the job to record."""
        info = None
        link = link_below(root.path if root else None, path)
        if link is not None:
            # Never read: a folder linked into the hot folder (to /etc, say) is no way in.
            reason = f"{path.name} lies behind {link}, a symbolic link: links are never followed or uploaded"
            return self._settings(path, root, "", 0, None, profile_name, reason), None
        try:
            info = path.stat(follow_symlinks=False)
            if known and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
                return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="already in the journal")
            if not stat.S_ISREG(info.st_mode):
                # Never opened: a FIFO would block, a link could lead outside the hot folder.
                reason = describe_special(path, info, root)
                return self._settings(path, root, "", info.st_size, None, profile_name, reason), info.st_mtime_ns
            data = read_regular_file(path)
        except FileNotFoundError:
            return IntakeResult(Outcome.NOT_READY, reason=f"{path} is gone")
        except OSError as error:
            if bad_is_final and error.errno in (errno.EACCES, errno.EPERM):
                # Not remembered as seen: once its permissions are fixed, a rescan takes it.
                size = info.st_size if info is not None else 0
                return self._settings(
                    path, root, "", size, None, profile_name, f"cannot read {path.name}: {error.strerror}"
                ), None
            return IntakeResult(Outcome.NOT_READY, reason=f"cannot read {path}: {error.strerror}")
        sha256 = sha256_of(data)
        if known and known.sha256 == sha256:
            self.journal.remember_file(str(path), info.st_size, info.st_mtime_ns, sha256, known.job_id)
            return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="same content as before")
        error = facts = None
        try:
            facts = inspect_image(data, path.name)
        except BadImage as problem:
            if not bad_is_final:
                return IntakeResult(Outcome.NOT_READY, reason=str(problem))
            error = str(problem)
        return self._settings(path, root, sha256, len(data), facts, profile_name, error), info.st_mtime_ns

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

    def _report(self, job: Job) -> IntakeResult:
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
        log.info(
            "job %d queued: %s (profile %s)",
            job.id,
            job.rel_path,
            job.profile_name,
            extra=job_fields(job.id, job.source_path, "queued"),
        )
        self.on_queued(job)
        return IntakeResult(Outcome.QUEUED, job)

    def _settings(
        self,
        path: Path,
        root: WatchRoot | None,
        sha256: str,
        size: int,
        facts: ImageFacts | None,
        profile_name: str,
        error: str | None,
    ) -> NewJob:
        """The job this image makes with the sidecars as they are now: queued, parked (broken sidecar) or failed."""
        relative = self.relative_path(path, root)
        resolved = parked = None
        priority = 0
        if error is None:
            try:
                sidecars = read_sidecars(root.path if root else None, path)
                priority = sidecars.priority
                resolved = resolve_profile(
                    self.config, relative, facts, profile_name, sidecars, caption=read_caption(path)
                )
            except SidecarError as problem:
                parked = str(problem)
            except ProfileError as problem:
                error = str(problem)
        # The facts are flat: asdict's deep copy was 6 % of a file's intake.
        profile = {"facts": dict(vars(facts)) if facts else None, "requested": profile_name}
        if resolved is not None:
            profile.update(fields=resolved.fields, sidecars=list(resolved.sidecars), hash=resolved.profile_hash)
        return NewJob(
            idem_key=resolved.idempotency_key(sha256)
            if resolved
            else f"{'parked' if parked else 'rejected'}:{sha256}:{sha256_of(os.fsencode(path))}",
            source_path=str(path),
            root=str(root.path) if root else "",
            rel_path=str(relative),
            source_sha256=sha256,
            source_size=size,
            profile_name=resolved.name if resolved else sidecar_profile_name(root, path, profile_name),
            prompt=resolved.prompt if resolved else "",
            params=resolved.params if resolved else {},
            output_name=resolved.output_name if resolved else None,
            profile=profile,
            priority=priority,
            error=error,
            parked=parked,
        )

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
            try:
                data = read_regular_file(path)
                if sha256_of(data) != job.source_sha256:
                    error = "the file changed since this job was made (its new content is a job of its own)"
                else:
                    facts = inspect_image(data, path.name)
            except BadImage as problem:
                error = str(problem)
            except OSError as problem:
                error = f"cannot read {path}: {problem.strerror}"
        new = self._settings(
            path, root, job.source_sha256, job.source_size, facts, job.profile.get("requested", "default"), error
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
            self.journal.merge_into(job.id, other)
            return IntakeResult(
                Outcome.KNOWN, self.journal.job(other), reason=f"same content and settings as job {other}"
            )
        if updated is None:
            return IntakeResult(Outcome.KNOWN, self.journal.job(job.id), reason="the job moved on meanwhile")
        return self._report(updated)

    def reresolve_under(self, folder: Path | None, *, parked_only: bool = False) -> list[IntakeResult]:
        """A sidecar under `folder` changed: jobs not yet started there get the new settings."""
        jobs = self.journal.unstarted_jobs(str(folder) if folder else None)
        return [self.reresolve(job) for job in jobs if not parked_only or job.state is JobState.PARKED]

    def retry(self, job_ids: list[int] | None) -> list[IntakeResult]:
        """`i2vd retry`: failed (or named done) jobs run again with the profile and sidecars as they are now."""
        return [self.reresolve(job, fresh_start=True) for job in self.journal.retryable(job_ids)]


def sidecar_profile_name(root: WatchRoot | None, path: Path, requested: str) -> str:
    """The profile the sidecars name, read leniently: what a parked or failed job shows instead of the requested one."""
    name = requested
    try:
        files = sidecar_files(root.path, path) if root else [image_sidecar(path)]
    except (OSError, ValueError):
        return name
    for file in files:
        try:
            data = yaml.safe_load(read_regular_file(file, SIDECAR_LIMIT).decode("utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # that sidecar is what is broken: a shallower one may still name the profile
        if isinstance(data, dict) and isinstance(data.get("profile"), str) and data["profile"]:
            name = data["profile"]
    return name


def describe_special(path: Path, info: os.stat_result, root: WatchRoot | None) -> str:
    """Why an image-named thing that is not a regular file is not made into a video."""
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        resolved = path.parent.joinpath(target).resolve()
        if root is not None and not resolved.is_relative_to(root.path.resolve()):
            return f"{path.name} is a symbolic link to {target}, outside its watch root: never followed or uploaded"
        return (
            f"{path.name} is a symbolic link to {target}: the file it "
            f"points to is processed on its own, never through the link"
        )
    if stat.S_ISDIR(info.st_mode):
        return (
            f"{path.name} is a folder named like an image: the images in it are watched, the folder itself is no image"
        )
    if stat.S_ISFIFO(info.st_mode):
        return f"{path.name} is a named pipe (FIFO), not an image file"
    return f"{path.name} is a device or socket, not an image file"


class IntakeLoop:
    """Watches every root and feeds settled files to the intake; one thread, so hashing never blocks events."""

    TICK_SECONDS = 0.1
    SLICE_FILES = 200  # settled images read, hashed and decoded per tick at most ...
    SLICE_SECONDS = 2.0  # ... and for no longer than this (a slow share): liveness is fed between slices

    MOUNT_CHECK_SECONDS = 5.0  # how often mountinfo is read to notice a share mounted after start

    def __init__(self, config: Config, intake: Intake, clock: Clock | None = None, mounts: MountMemory | None = None):
        self.config = config
        self.mounts = mounts or MountMemory(config.state_dir)
        self._mounts_checked: dict[int, float] = {}
        self.intake = intake
        self.clock = clock or Clock()
        self.tracker = SettleTracker(self.clock)
        self._excluded = config.excluded_folders()
        self._folders_to_scan: set[tuple[Path, int]] = set()
        self._sidecar_folders: set[Path] = set()
        self._special: set[Path] = set()  # image-named things that are no regular file
        self._rescan_requested = False
        self._undecodable: dict[Path, tuple[int, int]] = {}
        # Settled, waiting for their slice; as text: 100,000 may wait at once.
        self._backlog: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._pending_config: Config | None = None
        self._root_devices: dict[int, int] = {}
        self._offline_since: dict[int, float] = {}
        self.heartbeat = Heartbeat("intake", self.clock)
        self.watches = self._make_watches(config)
        self._last_scan: dict[int, float] = {}

    @property
    def settling(self) -> int:
        """Files still being written or settling, and settled ones waiting for their slice."""
        return len(self.tracker) + len(self._backlog)

    def _make_watches(self, config: Config) -> list[FolderWatch]:
        mounts = read_mounts()
        watches = []
        for index, root in enumerate(config.watch):
            poll, reason = should_poll(root.poll, root.path, mounts)
            watches.append(
                FolderWatch(root.path, poll, self._file_callback(index), self._folder_callback(index), reason)
            )
        return watches

    def _file_callback(self, index: int) -> Callable[[Path], None]:
        root = self.config.watch[index]

        def on_file(path: Path) -> None:
            if is_candidate(path, root.path, self._excluded):
                if not self.tracker.touch(path):
                    with self._lock:
                        self._special.add(path)
            elif is_sidecar_name(path.name) and root.path in path.parents:
                # A sidecar arriving while its images settle must apply to them: restart their windows. A folder
                # sidecar concerns its whole subtree; a caption or image sidecar only its own image.
                if path.name == FOLDER_SIDECAR:
                    self.tracker.restart(
                        lambda pending: path.parent == pending.parent or path.parent in pending.parents
                    )
                else:
                    self.tracker.restart(lambda pending: pending.parent == path.parent and belongs_to(path, pending))
                if path.exists():
                    self.tracker.touch(path)  # it settles like an image before it is read
                else:
                    with self._lock:
                        self._sidecar_folders.add(path.parent)

        return on_file

    def _folder_callback(self, index: int) -> Callable[[Path], None]:
        def on_folder(path: Path) -> None:
            with self._lock:
                self._folders_to_scan.add((path, index))
                if is_candidate(path, self.config.watch[index].path, self._excluded):
                    self._special.add(path)  # a folder called x.jpg: said once, its contents watched

        return on_folder

    def start_watches(self) -> None:
        for watch in self.watches:
            if not watch.active:
                watch.start()

    def stop_watches(self) -> None:
        for watch in self.watches:
            watch.stop()

    def reconcile(self, index: int, folder: Path | None = None, known: dict[str, tuple[int, int]] | None = None) -> int:
        """Suggest every file under a root (or one folder of it) that the journal does not know as it is now."""
        root = self.config.watch[index]
        if folder is not None and (folder.is_symlink() or link_below(root.path, folder / "x") is not None):
            return 0  # an event for a linked folder (or one inside it): links are never followed
        known = self.intake.journal.known_files() if known is None else known
        suggested = 0
        for path, info in scan(folder or root.path, self._excluded, include_special=True):
            if known.get(str(path)) != (info.st_size, info.st_mtime_ns):
                if stat.S_ISREG(info.st_mode):
                    self.tracker.touch(path, info)  # the scan's own lstat: not taken twice
                else:
                    with self._lock:
                        self._special.add(path)
                suggested += 1
        self._last_scan[index] = self.clock.monotonic()
        return suggested

    def _root_of(self, path: Path) -> WatchRoot | None:
        return self.config.root_for(path)

    def _settle_seconds(self, path: str) -> float:
        for root in self.config.watch:
            folder = str(root.path)
            if path.startswith(folder) and (
                len(path) == len(folder) or path[len(folder)] == os.sep or folder.endswith(os.sep)
            ):
                return root.settle_seconds
        return 0.0

    def tick(self) -> None:
        """One round: rescans that are due, folder scans asked for by events, settled files to the intake."""
        now = self.clock.monotonic()
        with self._lock:
            if self._rescan_requested:
                self._last_scan.clear()
                self._rescan_requested = False
        for index, root in enumerate(self.config.watch):
            if not self._root_online(index):
                continue
            if now - self._last_scan.get(index, float("-inf")) >= root.rescan_seconds:
                if not self.watches[index].started:  # a started one that died is _root_online's to replace
                    self.watches[index].start()
                first_scan = index not in self._last_scan
                self.reconcile(index)
                # Sidecars may have been fixed (or edited while i2vd was stopped) without an event reaching us.
                self._apply_sidecars(root.path, parked_only=not first_scan)
        with self._lock:
            folders, self._folders_to_scan = self._folders_to_scan, set()
            sidecar_folders, self._sidecar_folders = self._sidecar_folders, set()
            special, self._special = self._special, set()
        known = self.intake.journal.known_files() if folders else None  # once for every new folder of this tick
        for folder, index in folders:
            self.reconcile(index, folder, known)
        for path, size, mtime_ns in self.tracker.settled_text(self._settle_seconds):
            if is_sidecar_name(os.path.basename(path)):
                sidecar_folders.add(Path(path).parent)
            else:
                self._backlog[path] = (size, mtime_ns)
        if self._backlog:
            self.heartbeat.beat(
                self.SLICE_SECONDS + self.TICK_SECONDS, f"reading new files ({len(self._backlog)} waiting)"
            )
            self._take_slice()
        if special:
            self._take_special(sorted(special))
        for folder in sorted(sidecar_folders):
            self._apply_sidecars(folder)

    def _root_online(self, index: int) -> bool:
        """Notice a root that vanished (an unmounted share) or came back or changed file system.

        Gone is not deleted: nothing is dropped, and when it is back (or remounted) the
        watch is made anew and the root rescanned at once, finding what was added meanwhile.
        """
        root, watch = self.config.watch[index], self.watches[index]
        try:
            device = root.path.stat().st_dev if root.path.is_dir() else None
        except OSError:
            device = None
        if device is None:
            if index not in self._offline_since:
                log.warning(
                    "watch root %s is gone (unmounted share?): nothing is dropped; watching for it to return", root.path
                )
                self._offline_since[index] = self.clock.now()
                watch.reason = "offline"
                watch.stop()
            return False
        if watch.started and not watch.active:
            self._last_scan.pop(index, None)  # events may have been missed while it was failing
            if watch.use_polling:
                log.warning("polling %s stopped: starting it again", root.path)
                watch.stop()
                watch.start()
            else:
                watch.fall_back_to_polling("its inotify watcher stopped (watch limit reached?)")
        seen = self._root_devices.get(index)
        if index in self._offline_since or (seen is not None and seen != device):
            log.info(
                "watch root %s is back%s: watching it anew and rescanning",
                root.path,
                "" if seen in (None, device) else " on another file system",
            )
            self._offline_since.pop(index, None)
            watch.stop()
            watch.reason = ""
            watch.start()
            self._last_scan.pop(index, None)
        now = self.clock.monotonic()
        if seen != device or now - self._mounts_checked.get(index, float("-inf")) >= self.MOUNT_CHECK_SECONDS:
            self._mounts_checked[index] = now  # a new device is a mount or an unmount: look at once
            self.mounts.observe([root.path])
        self._root_devices[index] = device
        return True

    def _apply_sidecars(self, folder: Path, parked_only: bool = False) -> None:
        try:
            self.intake.reresolve_under(folder, parked_only=parked_only)
        except Exception:  # noqa: BLE001 - a surprise here must not stop the intake
            log.exception("applying sidecars under %s failed", folder)

    def _take_special(self, paths: list[Path]) -> None:
        try:
            self.intake.consider_many([(path, self._root_of(path), True) for path in paths])
        except Exception:  # noqa: BLE001
            log.exception("intake of %d special file(s) failed unexpectedly", len(paths))

    def _take_slice(self) -> None:
        """The next slice of settled images: at most SLICE_FILES, and no more than SLICE_SECONDS of reading.

        A drop of thousands is taken over many ticks, so the heartbeat (and the watchdog) is fed
        between slices, and each slice's jobs are queued, and can start, before the rest is read.
        """
        batch: list[tuple[Path, int, int]] = []
        for key, (size, mtime_ns) in list(itertools.islice(self._backlog.items(), self.SLICE_FILES)):
            del self._backlog[key]
            path = Path(key)
            if self._root_of(path) is None:
                continue  # its root left the config meanwhile
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
                self.tracker.touch(path)  # changed since it settled: it settles again
            else:
                batch.append((path, size, mtime_ns))
        if not batch:
            return
        started = self.clock.monotonic()
        taken = self._take(batch, enough=lambda: self.clock.monotonic() - started >= self.SLICE_SECONDS)
        for path, size, mtime_ns in reversed(batch[taken:]):  # not reached in time: first in the next slice
            self._backlog[str(path)] = (size, mtime_ns)
            self._backlog.move_to_end(str(path), last=False)

    def _take(self, settled: list[tuple[Path, int, int]], enough: Callable[[], bool] | None = None) -> int:
        """Settled images to the intake in one burst (one journal transaction); how many were taken."""
        # An image that does not decode may still be arriving: give it one more settle window unchanged.
        files = [
            (path, self._root_of(path), self._undecodable.get(path) == (size, mtime_ns))
            for path, size, mtime_ns in settled
        ]
        try:
            results = self.intake.consider_many(files, enough=enough)
        except Exception:  # noqa: BLE001 - one burst's surprise must not stop intake for good
            log.exception("intake of %d file(s) failed unexpectedly; they are looked at again", len(files))
            for path, _, _ in settled:
                self.tracker.touch(path)
            return len(settled)
        for (path, size, mtime_ns), result in zip(settled, results):
            if result.outcome is Outcome.NOT_READY:
                log.debug("%s not ready: %s", path, result.reason)
                self._undecodable[path] = (size, mtime_ns)
                self.tracker.touch(path)
            else:
                self._undecodable.pop(path, None)
        return len(results)

    def reconfigure(self, config: Config) -> None:
        """Take a new config at the next tick (in the loop's own thread): new roots are watched and rescanned."""
        with self._lock:
            self._pending_config = config

    def _apply_config(self) -> None:
        with self._lock:
            config, self._pending_config = self._pending_config, None
        if config is None:
            return
        self.stop_watches()
        self.config = self.intake.config = config
        self._excluded = config.excluded_folders()
        self.watches = self._make_watches(config)
        self.start_watches()
        self._last_scan.clear()  # rescan every root: new roots are reconciled, queued jobs get the new profiles
        self._root_devices.clear()
        self._offline_since.clear()

    def rescan_all(self) -> None:
        """Events were lost (the kernel's inotify queue overflowed): reconcile every root at the next tick."""
        log.warning("file events were lost: rescanning every watch root")
        with self._lock:
            self._rescan_requested = True

    def run(self, stop: threading.Event) -> None:
        with MissedEvents(self.rescan_all):
            self._run(stop)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.heartbeat.beat(self.TICK_SECONDS, "watching")
            try:
                self._apply_config()
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("intake round failed; going on")
            self.clock.wait(stop, 0.0 if self._backlog else self.TICK_SECONDS)
