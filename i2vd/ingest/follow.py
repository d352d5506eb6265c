"""A job follows its content: files and folders get renamed and moved inside a root while jobs wait.

A queued job whose file is gone is not lost while the same bytes are still under a
root: the intake moves the job to a new file with its content (a renamed folder, a
file moved between subfolders), and the worker, finding the file gone, looks in the
journal's `files` table for another place the same content was seen (a copy, then
the original deleted). Only content that is nowhere any more fails as "gone".
"""

from __future__ import annotations

import os
from pathlib import Path

from i2vd.config.load import Config, WatchRoot
from i2vd.core.images import read_regular_file, sha256_of
from i2vd.core.mounts import MountMemory
from i2vd.ingest.watcher import is_candidate, link_below
from i2vd.store.journal import Job, JobState, Journal

GONE = "source file is gone"
LOOKING = "source file not found; looking for it (moved?) before failing"
ACTIVE = (JobState.QUEUED, JobState.PARKED, JobState.RUNNING)


def is_gone(job: Job, mounts: MountMemory) -> bool:
    """The job's file is not there while its root is: deleted or moved, not an offline share."""
    if os.path.lexists(job.source_path):
        return False
    if not job.root:
        return True
    root = Path(job.root)
    if not root.is_dir():
        return False  # the root itself is away: an unmounted share
    return mounts.is_mount_point(root) or not mounts.was_mount_point(root)


def failed_as_gone(job: Job) -> bool:
    return job.state is JobState.FAILED and (job.last_error or "").startswith(GONE)


def present_copy(
    config: Config, journal: Journal, job: Job
) -> tuple[tuple[Path, WatchRoot, bytes] | None, frozenset[str]]:
    """Another file under a root with the job's content, read and checked: (path, root, bytes), or None;
    and every place the journal knew for that content when it looked (see Journal.fail_as_gone).

    Places the intake tied to this job come first; a place that is another waiting job's
    own file is left to that job.
    """
    seen = journal.files_with_content(job.source_sha256)
    examined = frozenset(path for path, _ in seen) | {job.source_path}
    owners = {owner for _, owner in seen if owner is not None and owner != job.id}
    busy = {owner for owner, state in journal.states(sorted(owners)).items() if state in ACTIVE} if owners else set()
    excluded = config.excluded_folders()
    for path_text, owner in sorted(seen, key=lambda item: item[1] != job.id):
        path = Path(path_text)
        root = config.root_for(path)
        if path_text == job.source_path or owner in busy or root is None or not is_candidate(path, root.path, excluded):
            continue
        if link_below(root.path, path) is not None:
            continue
        try:
            data = read_regular_file(path)
        except OSError:
            continue
        if sha256_of(data) == job.source_sha256:
            return (path, root, data), examined
    return None, examined
