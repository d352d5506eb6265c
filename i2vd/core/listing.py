"""What a folder holds, listed once for a burst of files instead of a stat per file, sidecar and folder.

Examining one image looks for folder sidecars in every folder from its root down, for its own
sidecar and caption, and for a symbolic link among its folders: several stats (and an open) per
image, the same ones again for each image of a folder. Inside `burst_listing()` those answers
come from one `scandir` (and one lstat) per folder, taken when the burst first asks; a burst
lasts a slice (<= 2 s), and a sidecar or link that appears meanwhile sends its own events.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class FolderListing:
    def __init__(self) -> None:
        # By the folder's text: a str keeps its hash, a Path is hashed and compared part by part at each look-up.
        self._files: dict[str, frozenset[str]] = {}
        self._links: dict[Path, bool] = {}
        self.memo: dict[Hashable, Any] = {}

    def files(self, folder: Path | str) -> frozenset[str]:
        """Names in `folder` that Path.is_file() would accept (links to regular files included)."""
        folder = os.fspath(folder)
        names = self._files.get(folder)
        if names is None:
            found = set()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        try:
                            if entry.is_file():
                                found.add(entry.name)
                        except OSError:
                            continue
            except OSError:
                pass
            names = self._files[folder] = frozenset(found)
        return names

    def is_file(self, path: Path) -> bool:
        folder, name = os.path.split(os.fspath(path))
        return name in self.files(folder)

    def is_symlink(self, folder: Path) -> bool:
        link = self._links.get(folder)
        if link is None:
            link = self._links[folder] = folder.is_symlink()
        return link


_CURRENT: contextvars.ContextVar[FolderListing | None] = contextvars.ContextVar("i2vd_folder_listing", default=None)


@contextlib.contextmanager
def burst_listing() -> Iterator[FolderListing]:
    """Folder listings shared by everything examined inside; nested bursts share the outer one."""
    current = _CURRENT.get()
    if current is not None:
        yield current
        return
    listing = FolderListing()
    token = _CURRENT.set(listing)
    try:
        yield listing
    finally:
        _CURRENT.reset(token)


def remembered(key: Hashable, compute: Callable[[], T]) -> T:
    """compute(), once per burst for this key (the folder sidecars of a folder, say); each time without a burst."""
    listing = _CURRENT.get()
    if listing is None:
        return compute()
    if key not in listing.memo:
        listing.memo[key] = compute()
    return listing.memo[key]


def is_file(path: Path) -> bool:
    """Path.is_file(), from the burst's listing when there is one."""
    listing = _CURRENT.get()
    return listing.is_file(path) if listing is not None else path.is_file()


def is_file_in(folder: str, name: str) -> bool:
    """is_file(folder/name) for a folder and a name as text: no Path is made for a file that is not there."""
    listing = _CURRENT.get()
    return name in listing.files(folder) if listing is not None else os.path.isfile(os.path.join(folder, name))


def is_symlink(path: Path) -> bool:
    """Path.is_symlink(), from the burst's listing when there is one."""
    listing = _CURRENT.get()
    return listing.is_symlink(path) if listing is not None else path.is_symlink()


def may_exist(path: Path) -> bool:
    """False only when the burst's listing says there is no such regular file: no need to open it."""
    listing = _CURRENT.get()
    return listing is None or listing.is_file(path)
