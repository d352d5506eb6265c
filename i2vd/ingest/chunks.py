"""How a pool process goes over one chunk of a burst (examine_pool.py): the folder listing it keeps for the next
chunks, which files it asks the kernel for before reading them, a root's Path made once."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from i2vd.core.listing import FolderListing, remembered
from i2vd.core.mounts import mount_of, read_mounts
from i2vd.ingest.watcher import link_below

LISTING_SECONDS = 2.0  # a pool process keeps its folder listings this long at most (a slice's bound, listing.py)

_kept_listing: tuple[tuple[str, int] | None, float, FolderListing] | None = None  # in a pool process: see below


def chunk_listing(key: tuple[str, int] | None) -> FolderListing:
    """The listing a chunk's files share: what the previous chunk's found in its folders, while it is younger than a
    slice (listing.py's bound) and the settings generation (`key`) is the same. A folder of 1,000 images came as ten
    chunks and was listed ten times. Whether a folder is a link is asked again for each chunk: reading behind a link
    that replaced a folder a moment ago is never allowed a longer window than before.

    A sidecar that appears moves the generation (a new listing); one that appears before its event arrives is the
    race a single chunk's listing has too: the intake works that job out again when the event comes first."""
    global _kept_listing
    now = time.monotonic()
    if _kept_listing is None or _kept_listing[0] != key or now - _kept_listing[1] > LISTING_SECONDS:
        _kept_listing = key, now, FolderListing()
        return _kept_listing[2]
    return _kept_listing[2].names_only()


def worth_reading_ahead(path: str, root: str | None) -> bool:
    """A file to ask the kernel for before it is read (images.read_ahead): on a local disk (on a network share each
    file's extra open and close would be round trips of their own), never behind a link, as reading it. The answers
    are per folder, from the chunk's listing."""
    folder = os.path.dirname(path)

    def on_local_disk() -> bool:
        mount = mount_of(Path(folder), remembered(("mounts",), read_mounts))
        return mount is not None and not mount.is_network

    local = remembered(("local disk", folder), on_local_disk)
    return local and link_below(root_path(root) if root else None, path) is None


@functools.lru_cache(maxsize=16)
def root_path(root: str) -> Path:
    """A root's Path, made once: every file of a burst names its root as text."""
    return Path(root)
