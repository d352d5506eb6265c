"""`on_failure: move`: a source whose job failed for good goes to `<root>/.i2vd-failed/<relative path>`,
with `<image filename>.error.txt` beside it; `i2vd retry` brings it back to where it was.

A file is never lost on the way: only a file that still holds the job's content is moved (a newer
version saved meanwhile is a job of its own and stays), and a name already taken at either end
gets the `-1`, `-2`... suffix instead of replacing what is there. The intake ignores `.i2vd-failed`
(see Config.excluded_folders).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from i2vd.config.load import FAILED_FOLDER, Config
from i2vd.core.images import read_regular_file, sha256_of
from i2vd.render import output
from i2vd.store.journal import Job

ERROR_SUFFIX = ".error.txt"

log = logging.getLogger("i2vd.failed")


def error_file(source: Path) -> Path:
    return source.with_name(source.name + ERROR_SUFFIX)


def _holds(path: Path, sha256: str) -> bool:
    try:
        return sha256_of(read_regular_file(path)) == sha256
    except OSError:
        return False


def move_no_replace(source: Path, wanted: Path) -> Path:
    """Move `source` to `wanted`, or to its first free `-N` name: never over an existing file."""
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for target in output.candidates(wanted):
        try:
            os.link(source, target)  # fails when the name is taken, even one made a moment ago
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            if target.exists() or target.is_symlink():  # a share without hard links: check, then move
                continue
            shutil.move(source, target)
            return target
        os.unlink(source)
        return target
    raise AssertionError("unreachable: candidates() never ends")


def move_in(root_path: Path, job: Job, error: str, now: float) -> Path | None:
    """The failed job's source into the failed folder, with its error file; None when it is not moved."""
    source = Path(job.source_path)
    if not _holds(source, job.source_sha256):
        return None  # gone, or a newer version saved meanwhile (that one is its own job): left alone
    target = move_no_replace(source, root_path / FAILED_FOLDER / job.rel_path)
    when = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    text = (
        f"job: {job.id}\nsource: {job.source_path}\nfailed at: {when}\nerror: {error}\n"
        f"to try again: i2vd retry {job.id} (moves the file back and queues it)\n"
    )
    try:
        error_file(target).write_text(text, encoding="utf-8")
    except OSError as problem:
        log.warning("job %d: could not write %s: %s", job.id, error_file(target), problem)
    log.info("job %d: failed source moved to %s", job.id, target)
    return target


def move_failed_source(config: Config, job: Job, error: str, now: float) -> None:
    """A job failed for good, by the worker or by crash-loop recovery: its source moves in when its root says
    `on_failure: move`. A file that cannot be moved is logged and stays; it never fails anything else."""
    root = config.root_for(Path(job.root)) if job.root else None
    if root is None or root.on_failure != "move":
        return
    try:
        move_in(root.path, job, error, now)
    except OSError as problem:
        log.warning("job %d: could not move %s into %s: %s", job.id, job.source_path, FAILED_FOLDER, problem)


def find(root_path: Path, job: Job) -> Path | None:
    """Where the job's source waits in the failed folder (its content decides among `-N` names)."""
    for candidate in output.candidates(root_path / FAILED_FOLDER / job.rel_path):
        if not candidate.exists():
            return None
        if _holds(candidate, job.source_sha256):
            return candidate
    return None


def move_back(root_path: Path, job: Job) -> Path | None:
    """Bring a failed job's source back to its place (a `-N` name when that is taken); None when not there."""
    waiting = find(root_path, job)
    if waiting is None:
        return None
    if _holds(Path(job.source_path), job.source_sha256):
        return Path(job.source_path)  # put back by hand already: the copy here is left as it is
    back = move_no_replace(waiting, Path(job.source_path))
    error_file(waiting).unlink(missing_ok=True)
    log.info("job %d: %s moved back to %s", job.id, waiting, back)
    return back
