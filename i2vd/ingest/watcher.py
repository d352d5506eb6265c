"""Notice files in the hot folders and decide when each one is complete.

Events (inotify, or polling where asked) and periodic rescans only *suggest* a
path; the `SettleTracker` decides: a file counts as written once its size and
mtime have not changed for `settle_seconds`. Decoding the image is the intake's
final check. Nothing here touches the journal: the intake does.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog import events as watchdog_events
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from i2vd.config.load import (
    DONE_FOLDER,  # noqa: F401 - re-exported: the watcher's view of what is not input
    path_under,
)
from i2vd.core import listing
from i2vd.core.clock import Clock

log = logging.getLogger("i2vd.watcher")

# What the handler acts on: no "opened"/"closed, nothing written" (every read of a file, ours included, made two
# events for watchdog to parse in Python only to be dropped). Directory deletions stay: watchdog needs them to
# drop its watches of a removed folder.
# A touch (new mtime) is a FileAttribEvent in newer watchdogs, a FileModifiedEvent in older ones.
WATCHED_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
if hasattr(watchdog_events, "FileAttribEvent"):
    WATCHED_EVENTS.append(watchdog_events.FileAttribEvent)

# HEIC/HEIF (an iPhone's photos) cannot be decoded here; taken all the same, so each fails its own job saying how to
# send it (images.py) instead of being ignored without a word.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"})
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "@eaDir", "#recycle", "#snapshot", ".@__thumb", "desktop.ini"})
IGNORED_PATTERNS = ("._*", "*.part", "*.crdownload", "*.tmp", "~$*")
# One match a name instead of one fnmatch a pattern: every part of every path of a 100,000-file scan is tested.
_IGNORED_PATTERN = re.compile("|".join(fnmatch.translate(pattern) for pattern in IGNORED_PATTERNS))


def is_ignored_name(name: str) -> bool:
    """Junk that NAS boxes, Macs, Windows and browsers leave in shared folders."""
    if name.startswith(".") or name in IGNORED_NAMES:
        return True
    return _IGNORED_PATTERN.match(name) is not None


def is_candidate(path: Path, root: Path, excluded: tuple[Path, ...] = (), *, suffix: bool = True) -> bool:
    """An image under `root` whose every path part is a name worth looking at (suffix=False: any name)."""
    if (suffix and path.suffix.lower() not in IMAGE_SUFFIXES) or not (path == root or path_under(path, root)):
        return False
    relative = str(path)[len(str(root)) :].lstrip(os.sep)
    if any(is_ignored_name(part) for part in relative.split(os.sep)):
        return False
    return not any(path == folder or path_under(path, folder) for folder in excluded)


def link_below(root: Path | None, path: Path | str) -> Path | None:
    """The first folder between `root` (not included) and `path` (not included) that is a symbolic link, if any.

    O_NOFOLLOW guards only a path's last part: `root/a/etc/passwd.jpg` with `a/etc` a link to /etc
    would still be read through it. Without a root, only the path's own folder is looked at.
    Inside a burst (i2vd.core.listing), once per folder: every image of a folder has the same answer.
    """
    root_text, text = (os.fspath(root) if root is not None else None), os.fspath(path)
    key = ("link below", root_text, os.path.dirname(text), text == root_text)  # text keys: see listing.py
    return listing.remembered(key, lambda: _link_below(root, Path(path)))  # a Path only once per folder


def _link_below(root: Path | None, path: Path) -> Path | None:
    try:
        relative = path.relative_to(root) if root is not None else None
    except ValueError:
        relative = None
    if relative is None:
        return path.parent if listing.is_symlink(path.parent) else None
    folder = root
    for part in relative.parts[:-1]:
        folder = folder / part
        if listing.is_symlink(folder):
            return folder
    return None


def scan(
    root: Path, excluded: tuple[Path, ...] = (), *, include_special: bool = False
) -> Iterator[tuple[Path, os.stat_result]]:
    """Every candidate image file under `root`, with its lstat; symlinks are not followed.

    With include_special, image-named things that are not regular files (a FIFO, a
    link, a folder called x.jpg) are yielded too, so the intake can say what they are.
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            log.warning("cannot list %s: %s", folder, error.strerror)
            continue
        # is_candidate's tests of the folders above a file, once a folder instead of once a file of it.
        files_here = folder == root or is_candidate(folder, root, excluded, suffix=False)
        for entry in entries:
            name = entry.name
            if is_ignored_name(name):
                continue
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
                if is_folder:
                    path = Path(entry.path)
                    if not any(path == folder_ or path_under(path, folder_) for folder_ in excluded):
                        stack.append(path)
                if not files_here or os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                path = Path(entry.path)
                if excluded and any(path == folder_ for folder_ in excluded):
                    continue
                if include_special or (entry.is_file(follow_symlinks=False) and not is_folder):
                    yield path, entry.stat(follow_symlinks=False)
            except OSError as error:
                log.warning("cannot stat %s: %s", entry.path, error.strerror)


class SettleTracker:
    """Paths that might be images still being written, until they stop changing.

    Kept as text with a plain (size, mtime_ns, unchanged_since) tuple each: a first start over
    100,000 files holds them all here at once, and a Path with a record object costs several
    times the text (the daemon's peak RSS).
    """

    def __init__(self, clock: Clock):
        self._clock = clock
        self._pending: dict[str, tuple[int, int, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def touch(self, path: Path | str, info: os.stat_result | None = None) -> bool:
        """Something happened to `path`: (re)start its settle window. False when it is not a regular file.

        `info` is the path's lstat when the caller has just taken it (a scan): it is not taken again.
        """
        key = os.fspath(path)
        if info is None:
            try:
                info = os.stat(key, follow_symlinks=False)
            except OSError:
                with self._lock:
                    self._pending.pop(key, None)
                return True  # gone: nothing to say about it
        if not stat.S_ISREG(info.st_mode):
            return False
        with self._lock:
            current = self._pending.get(key)
            if current is None or current[:2] != (info.st_size, info.st_mtime_ns):
                self._pending[key] = (info.st_size, info.st_mtime_ns, self._clock.monotonic())
        return True

    def restart(self, which: Callable[[Path], bool]) -> None:
        """Restart the settle window of pending paths chosen by `which`."""
        now = self._clock.monotonic()
        with self._lock:
            for key, (size, mtime_ns, _) in list(self._pending.items()):
                if which(Path(key)):
                    self._pending[key] = (size, mtime_ns, now)

    def forget(self, path: Path | str) -> None:
        with self._lock:
            self._pending.pop(os.fspath(path), None)

    def settled(self, settle_seconds: Callable[[Path], float]) -> list[tuple[Path, int, int]]:
        """Paths unchanged for their settle window, removed from the tracker, with size and mtime."""
        ready = self.settled_text(lambda key: settle_seconds(Path(key)))
        return [(Path(key), size, mtime_ns) for key, size, mtime_ns in ready]

    def settled_text(self, settle_seconds: Callable[[str], float]) -> list[tuple[str, int, int]]:
        """`settled` with the paths as text (and `settle_seconds` given text): no Path per pending file."""
        now = self._clock.monotonic()
        with self._lock:
            candidates = list(self._pending.items())
        ready = []
        for key, pending in candidates:
            try:
                info = os.stat(key, follow_symlinks=False)
            except OSError:
                self.forget(key)
                continue
            with self._lock:
                if (info.st_size, info.st_mtime_ns) != pending[:2]:
                    self._pending[key] = (info.st_size, info.st_mtime_ns, now)
                elif now - pending[2] >= settle_seconds(key):
                    self._pending.pop(key, None)
                    ready.append((key, info.st_size, info.st_mtime_ns))
        return ready


class _EventHandler(FileSystemEventHandler):
    """Turns watchdog events into suggestions; an exception here never stops the observer."""

    def __init__(self, on_file: Callable[[Path], None], on_folder: Callable[[Path], None]):
        self._on_file = on_file
        self._on_folder = on_folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("opened", "closed_no_write") or (
                event.is_directory and event.event_type == "deleted"
            ):
                return
            if event.event_type == "moved" and not event.is_directory:
                self._on_file(Path(os.fsdecode(event.src_path)))  # the old name is gone: a sidecar renamed away matters
            path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self._on_folder(Path(path))
            else:
                self._on_file(Path(path))
        except Exception:  # noqa: BLE001 - a handler bug must not kill the observer thread
            log.exception("error handling %s", event)


class MissedEvents(logging.Handler):
    """Hears watchdog say the kernel dropped inotify events (it only logs that) and asks for a rescan."""

    MARK = "queue overflow"

    def __init__(self, on_missed: Callable[[], None]):
        super().__init__(logging.WARNING)
        self._on_missed = on_missed

    def emit(self, record: logging.LogRecord) -> None:
        if self.MARK in record.getMessage().lower().replace("overflowed", "overflow"):
            self._on_missed()

    def __enter__(self) -> MissedEvents:
        logging.getLogger("watchdog.observers").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("watchdog.observers").removeHandler(self)


def polling_observer(interval: float = 1.0) -> BaseObserver:
    """Polling that never follows a link: lstat makes a linked folder a link, not a folder to walk into."""
    return PollingObserverVFS(stat=os.lstat, listdir=os.scandir, polling_interval=interval)


class FolderWatch:
    """One observer per watch root: inotify by default, polling when asked or when inotify fails."""

    def __init__(
        self,
        root: Path,
        use_polling: bool,
        on_file: Callable[[Path], None],
        on_folder: Callable[[Path], None],
        reason: str = "",
        make_observer: Callable[[bool], BaseObserver] | None = None,
    ):
        self.root = root
        self.use_polling = use_polling
        self.reason = reason
        self._handler = _EventHandler(on_file, on_folder)
        self._observer: BaseObserver | None = None
        self._make_observer = make_observer or (lambda polling: polling_observer() if polling else Observer())

    @property
    def started(self) -> bool:
        return self._observer is not None

    @property
    def active(self) -> bool:
        """Started, and every thread behind it alive (an inotify emitter dies when it cannot add a watch)."""
        observer = self._observer  # read once: stop() may clear it from another thread
        if observer is None or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def fall_back_to_polling(self, why: str) -> None:
        log.warning("watching %s with inotify stopped (%s): falling back to polling", self.root, why)
        self.stop()
        self.use_polling = True
        self.reason = why
        self.start()

    @property
    def method(self) -> str:
        return "polling" if self.use_polling else "inotify"

    def start(self) -> bool:
        """Start watching; False (and logged) when the root is not there yet."""
        if not self.root.is_dir():
            log.warning("watch root %s is not a folder (yet): will look again at the next rescan", self.root)
            return False
        try:
            self._observer = self._start_observer(self.use_polling)
        except OSError as error:
            if self.use_polling:
                raise
            log.warning("inotify failed on %s (%s): falling back to polling", self.root, error)
            self.use_polling = True
            self.reason = f"inotify failed: {error.strerror or error}"
            self._observer = self._start_observer(True)
        log.info("watching %s (%s%s)", self.root, self.method, f": {self.reason}" if self.reason else "")
        return True

    def _start_observer(self, polling: bool) -> BaseObserver:
        observer = self._make_observer(polling)
        observer.schedule(self._handler, str(self.root), recursive=True, event_filter=WATCHED_EVENTS)
        observer.daemon = True
        observer.start()
        return observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
