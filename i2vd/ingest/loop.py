"""The intake loop: one thread watches every root and feeds settled files to the intake."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from i2vd.config.load import Config, WatchRoot
from i2vd.config.sidecars import (
    belongs_to,
    is_folder_sidecar_name,
    is_sidecar_name,
)
from i2vd.core.clock import Clock
from i2vd.core.liveness import Heartbeat
from i2vd.core.mounts import MountMemory, read_mounts, should_poll
from i2vd.ingest.examine_pool import POOL_MIN_FILES, ExaminePool
from i2vd.ingest.intake import Intake, Outcome
from i2vd.ingest.watcher import FolderWatch, MissedEvents, SettleTracker, is_candidate, link_below, scan

log = logging.getLogger("i2vd.intake")


class IntakeLoop:
    """Watches every root and feeds settled files to the intake; one thread, so hashing never blocks events."""

    TICK_SECONDS = 0.1
    SLICE_FILES = 200  # settled images read, hashed and decoded per tick at most ...
    SLICE_SECONDS = 2.0  # ... and for no longer than this (a slow share): liveness is fed between slices
    REVIEW_SECONDS = 0.25  # of going over waiting jobs again (after a start or a rescan) per tick
    PREFETCH_SLICES = 2  # the next slices' files the pool reads while one is recorded: neither side waits long

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
        self._read_ahead: set[str] = set()  # files of the backlog already handed to the pool to read ahead
        self._lock = threading.Lock()
        self._pending_config: Config | None = None
        self._root_devices: dict[int, int] = {}
        self._roots_by_folder: dict[str, WatchRoot | None] = {}  # _root_of's answers, until the config changes
        # Roots whose waiting jobs get their sidecars applied again: (parked ones only?, the review going on).
        self._reviews: dict[Path, tuple[bool, Iterator[object]]] = {}
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
                self.intake.settings_changed()  # before anything else: the pool may have read it a moment ago
                # A sidecar arriving while its images settle must apply to them: restart their windows. A folder
                # sidecar concerns its whole subtree; a caption or image sidecar only its own image.
                if is_folder_sidecar_name(path.name):
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
        """The root `path` is under; asked a few times for each file of a burst, so answered once per folder."""
        folder = os.path.dirname(path)
        if folder not in self._roots_by_folder:
            if len(self._roots_by_folder) > 10_000:
                self._roots_by_folder.clear()
            self._roots_by_folder[folder] = self.config.root_for(Path(folder) / "_")  # a file in that folder
        return self._roots_by_folder[folder] or self.config.root_for(path)  # None: path may be a root itself

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
                # Sidecars may have been fixed (or edited while i2vd was stopped) without an event reaching us: the
                # waiting jobs are gone over again, a little each tick (100,000 of them take half a minute).
                self._review(root.path, parked_only=not first_scan)
        with self._lock:
            folders, self._folders_to_scan = self._folders_to_scan, set()
            sidecar_folders, self._sidecar_folders = self._sidecar_folders, set()
            special, self._special = self._special, set()
        known = self.intake.journal.known_files() if folders else None  # once for every new folder of this tick
        for folder, index in folders:
            self.reconcile(index, folder, known)
        pool = self.intake.pool
        if pool is not None and not pool.started and len(self.tracker) >= POOL_MIN_FILES:
            pool.warm()  # a burst is settling: its processes start meanwhile
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
        if self._reviews:
            self._review_some()

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

    def _review(self, folder: Path, *, parked_only: bool) -> None:
        """Go over the waiting jobs under `folder` again, from the start; one of every waiting job that is still
        going on is not cut short by a rescan's look at the parked ones only."""
        current = self._reviews.get(folder)
        if parked_only and current is not None and not current[0]:
            return  # every waiting job is being gone over: the parked ones too
        self._reviews[folder] = (parked_only, self.intake.reresolve_each(folder, parked_only=parked_only))

    def _review_some(self) -> None:
        """Go on applying the sidecars to a root's waiting jobs for REVIEW_SECONDS: new files are not held up."""
        started = self.clock.monotonic()
        for folder, (_, review) in list(self._reviews.items()):
            try:
                for _ in review:
                    if self.clock.monotonic() - started >= self.REVIEW_SECONDS:
                        return
                del self._reviews[folder]
            except Exception:  # noqa: BLE001 - a surprise here must not stop the intake
                log.exception("applying sidecars under %s failed", folder)
                self._reviews.pop(folder, None)

    def _apply_sidecars(self, folder: Path, parked_only: bool = False) -> None:
        try:
            for index, _ in enumerate(self.intake.reresolve_each(folder, parked_only=parked_only)):
                if index % 100 == 0:  # a restart goes over every queued job: liveness is told it goes on
                    self.heartbeat.beat(self.SLICE_SECONDS + self.TICK_SECONDS, "applying sidecars to waiting jobs")
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
            self._read_ahead.discard(key)
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
        # Each file comes into the window ahead once: handed over again at each slice, the same files cost a Path,
        # a root and a journal look-up two slices running before the pool saw they were already being read.
        if not self._backlog:
            self._read_ahead.clear()
        ahead = itertools.islice(self._backlog, self.PREFETCH_SLICES * self.SLICE_FILES)
        new_ahead = [key for key in ahead if key not in self._read_ahead]
        self._read_ahead.update(new_ahead)
        coming = [(path, self._root_of(path)) for path in map(Path, new_ahead)]
        taken = self._take(batch, enough=lambda: self.clock.monotonic() - started >= self.SLICE_SECONDS, coming=coming)
        for path, size, mtime_ns in reversed(batch[taken:]):  # not reached in time: first in the next slice
            self._backlog[str(path)] = (size, mtime_ns)
            self._backlog.move_to_end(str(path), last=False)

    def _take(
        self,
        settled: list[tuple[Path, int, int]],
        enough: Callable[[], bool] | None = None,
        coming: list[tuple[Path, WatchRoot | None]] = (),
    ) -> int:
        """Settled images to the intake in one burst (one journal transaction); how many were taken."""
        # An image that does not decode may still be arriving: give it one more settle window unchanged.
        files = [
            (path, self._root_of(path), self._undecodable.get(path) == (size, mtime_ns))
            for path, size, mtime_ns in settled
        ]
        try:
            results = self.intake.consider_many(files, enough=enough, coming=coming)
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
        self._roots_by_folder.clear()
        self._excluded = config.excluded_folders()
        self.watches = self._make_watches(config)
        self.start_watches()
        self._last_scan.clear()  # rescan every root: new roots are reconciled, queued jobs get the new profiles
        self._root_devices.clear()
        self._offline_since.clear()
        self.intake.settings_changed()  # jobs the pool worked out under the old config are worked out again

    def rescan_all(self) -> None:
        """Events were lost (the kernel's inotify queue overflowed): reconcile every root at the next tick."""
        log.warning("file events were lost: rescanning every watch root")
        with self._lock:
            self._rescan_requested = True

    def run(self, stop: threading.Event) -> None:
        self.intake.pool = ExaminePool(beat=self.heartbeat.beat)  # processes start with the first burst, end with it
        try:
            with MissedEvents(self.rescan_all):
                self._run(stop)
        finally:
            self.intake.pool.close()
            self.intake.pool = None

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.heartbeat.beat(self.TICK_SECONDS, "watching")
            try:
                self._apply_config()
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("intake round failed; going on")
            self.clock.wait(stop, 0.0 if self._backlog or self._reviews else self.TICK_SECONDS)
