"""Around one chunk of a burst in a pool process (examine_pool.py): which files it asks the kernel for before
reading them, a root's Path made once."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from i2vd.core.listing import remembered
from i2vd.core.mounts import mount_of, read_mounts
from i2vd.ingest.watcher import link_below


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
