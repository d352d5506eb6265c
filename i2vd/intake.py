"""From a settled file to a job in the journal.

The intake reads the file once: the same bytes are decoded (is it a complete
image?), hashed (the idempotency key) and described (EXIF for the prompt). A file
the journal already knows with the same size and mtime, or the same content, makes
no new job; a file that cannot become a video makes a *failed* job with the reason,
so the user sees it in `i2vd jobs --state failed` instead of it vanishing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Callable

from i2vd.clock import Clock
from i2vd.config import Config, WatchRoot
from i2vd.images import BadImage, inspect_image, read_regular_file, sha256_of
from i2vd.journal import Job, Journal, NewJob
from i2vd.profiles import ProfileError, read_caption, read_sidecars, resolve_profile
from i2vd.watcher import DONE_FOLDER, FolderWatch, SettleTracker, is_candidate, scan

log = logging.getLogger("i2vd.intake")


class Outcome(str, Enum):
    QUEUED = "queued"
    KNOWN = "known"  # the journal already has this file or this content with these settings
    FAILED = "failed"  # recorded as a failed job with the reason
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

    def _job(self, job_id: int | None) -> Job | None:
        return self.journal.job(job_id) if job_id is not None else None

    def relative_path(self, path: Path, root: WatchRoot | None) -> PurePosixPath:
        if root is None:
            return PurePosixPath(path.name)
        return PurePosixPath(path.relative_to(root.path).as_posix())

    def consider(self, path: Path, root: WatchRoot | None, *, profile_name: str = "default", bad_is_final: bool = True) -> IntakeResult:
        """Look at one file; with bad_is_final=False an undecodable image is NOT_READY instead of FAILED."""
        try:
            info = path.stat(follow_symlinks=False)
            known = self.journal.known_file(str(path))
            if known and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
                return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="already in the journal")
            data = read_regular_file(path)
        except BadImage as error:
            return IntakeResult(Outcome.NOT_READY, reason=str(error))
        except OSError as error:
            return IntakeResult(Outcome.NOT_READY, reason=f"cannot read {path}: {error.strerror}")
        sha256 = sha256_of(data)
        if known and known.sha256 == sha256:
            self.journal.remember_file(str(path), info.st_size, info.st_mtime_ns, sha256, known.job_id)
            return IntakeResult(Outcome.KNOWN, self._job(known.job_id), reason="same content as before")
        relative = self.relative_path(path, root)
        error = None
        facts = None
        try:
            facts = inspect_image(data, path.name)
        except BadImage as problem:
            if not bad_is_final:
                return IntakeResult(Outcome.NOT_READY, reason=str(problem))
            error = str(problem)
        try:
            sidecars = read_sidecars(root.path if root else None, path)
            resolved = resolve_profile(self.config, relative, facts, profile_name, sidecars, caption=read_caption(path))
        except ProfileError as problem:
            error = error or str(problem)
            resolved = None
        params = resolved.params if resolved else {}
        new = NewJob(
            idem_key=resolved.idempotency_key(sha256) if resolved and not error else f"rejected:{sha256}:{profile_name}:{error}",
            source_path=str(path),
            root=str(root.path) if root else "",
            rel_path=str(relative),
            source_sha256=sha256,
            source_size=len(data),
            profile_name=resolved.name if resolved else profile_name,
            prompt=resolved.prompt if resolved else "",
            params=params,
            output_name=resolved.output_name if resolved else None,
            error=error,
        )
        job, created = self.journal.add_job(new, mtime_ns=info.st_mtime_ns)
        if not created:
            return IntakeResult(Outcome.KNOWN, job, reason=f"same content and settings as job {job.id}")
        if error:
            log.warning("job %d %s failed at intake: %s", job.id, relative, error)
            return IntakeResult(Outcome.FAILED, job, reason=error)
        log.info("job %d queued: %s (profile %s)", job.id, relative, job.profile_name)
        self.on_queued(job)
        return IntakeResult(Outcome.QUEUED, job)


class IntakeLoop:
    """Watches every root and feeds settled files to the intake; one thread, so hashing never blocks events."""

    TICK_SECONDS = 0.1

    def __init__(self, config: Config, intake: Intake, clock: Clock | None = None):
        self.config = config
        self.intake = intake
        self.clock = clock or Clock()
        self.tracker = SettleTracker(self.clock)
        self._excluded = self._excluded_folders(config)
        self._folders_to_scan: set[tuple[Path, int]] = set()
        self._undecodable: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.watches = [
            FolderWatch(root.path, root.poll is True, self._file_callback(index), self._folder_callback(index))
            for index, root in enumerate(config.watch)
        ]
        self._last_scan: dict[int, float] = {}

    @staticmethod
    def _excluded_folders(config: Config) -> tuple[Path, ...]:
        """i2vd's own outputs and done-folders are never inputs, even inside a root."""
        folders = {config.output_dir, config.state_dir}
        folders.update(root.output_dir for root in config.watch)
        folders.update(root.path / DONE_FOLDER for root in config.watch)
        return tuple(sorted(folders))

    def _file_callback(self, index: int) -> Callable[[Path], None]:
        root = self.config.watch[index]

        def on_file(path: Path) -> None:
            if is_candidate(path, root.path, self._excluded):
                self.tracker.touch(path)
            elif path.suffix in (".txt", ".yaml"):
                # A caption or sidecar that arrives while its images settle must apply to them.
                self.tracker.restart(lambda pending: pending.parent == path.parent or path.parent in pending.parents)

        return on_file

    def _folder_callback(self, index: int) -> Callable[[Path], None]:
        def on_folder(path: Path) -> None:
            with self._lock:
                self._folders_to_scan.add((path, index))

        return on_folder

    def start_watches(self) -> None:
        for watch in self.watches:
            if not watch.active:
                watch.start()

    def stop_watches(self) -> None:
        for watch in self.watches:
            watch.stop()

    def reconcile(self, index: int, folder: Path | None = None) -> int:
        """Suggest every file under a root (or one folder of it) that the journal does not know as it is now."""
        root = self.config.watch[index]
        known = self.intake.journal.known_files()
        suggested = 0
        for path, info in scan(folder or root.path, self._excluded):
            if known.get(str(path)) != (info.st_size, info.st_mtime_ns):
                self.tracker.touch(path)
                suggested += 1
        self._last_scan[index] = self.clock.monotonic()
        return suggested

    def _root_of(self, path: Path) -> WatchRoot | None:
        return self.config.root_for(path)

    def _settle_seconds(self, path: Path) -> float:
        root = self._root_of(path)
        return root.settle_seconds if root else 0.0

    def tick(self) -> None:
        """One round: rescans that are due, folder scans asked for by events, settled files to the intake."""
        now = self.clock.monotonic()
        for index, root in enumerate(self.config.watch):
            if now - self._last_scan.get(index, float("-inf")) >= root.rescan_seconds:
                if not self.watches[index].active:
                    self.watches[index].start()
                self.reconcile(index)
        with self._lock:
            folders, self._folders_to_scan = self._folders_to_scan, set()
        for folder, index in folders:
            self.reconcile(index, folder)
        for path, size, mtime_ns in self.tracker.settled(self._settle_seconds):
            self._take(path, size, mtime_ns)

    def _take(self, path: Path, size: int, mtime_ns: int) -> None:
        root = self._root_of(path)
        # An image that does not decode may still be arriving: give it one more settle window unchanged.
        seen_broken_before = self._undecodable.get(path) == (size, mtime_ns)
        try:
            result = self.intake.consider(path, root, bad_is_final=seen_broken_before)
        except Exception:  # noqa: BLE001 - one file's surprise must not stop intake for every other file
            log.exception("intake of %s failed unexpectedly", path)
            return
        if result.outcome is Outcome.NOT_READY:
            log.debug("%s not ready: %s", path, result.reason)
            self._undecodable[path] = (size, mtime_ns)
            self.tracker.touch(path)
        else:
            self._undecodable.pop(path, None)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("intake round failed; going on")
            self.clock.wait(stop, self.TICK_SECONDS)
