"""What a finished job leaves behind: the record beside its video, the MP4's comment, and `after: move`."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from pathlib import Path

from i2vd import __version__
from i2vd.config.load import DONE_FOLDER, WatchRoot
from i2vd.render import output
from i2vd.store.journal import Job

log = logging.getLogger("i2vd.worker")  # said of the job the worker finished, in the worker's log


def mp4_comment(job: Job) -> str:
    """The MP4's `comment` tag: the video still says where it came from when it is copied alone."""
    return f"i2vd {__version__}; profile={job.profile_name}; source_sha256={job.source_sha256}; prompt={job.prompt}"


def audit_record(job: Job, destination: Path, server_seconds: float, finished: float, server: dict) -> dict:
    """The JSON record beside the video: enough for an audit."""
    return {
        "idempotency_key": job.idem_key,
        "job_id": job.id,
        "video": str(destination),
        "source": {
            "path": job.source_path,
            "relative_path": job.rel_path,
            "sha256": job.source_sha256,
            "size": job.source_size,
        },
        "profile": job.profile_name,
        "profile_hash": job.profile.get("hash"),
        "profile_fields": job.profile.get("fields"),
        "sidecars": job.profile.get("sidecars", []),
        "prompt": job.prompt,
        "parameters": job.params,
        "downgraded_from": job.profile.get("downgraded_from"),
        "server": server,
        "timings": {
            "queued": job.queued_at,
            "started": job.started_at,
            "finished": finished,
            "server_seconds": round(server_seconds, 3),
        },
        "attempts": job.attempts + 1,
        "i2vd_version": __version__,
    }


def move_to_done_folder(root: WatchRoot, job: Job) -> None:
    """`after: move`: the source moves into <root>/.i2vd-done/ (its video is safe), only the content that became it."""
    source = Path(job.source_path)
    wanted = root.path / DONE_FOLDER / job.rel_path
    try:
        if not source.exists():
            return  # moved already (a job recovered after a crash), or the user took it away
        hashed = _content_stamp(source)
        if hashed is None or hashed[0] != job.source_sha256:
            # A newer version saved while the job ran: it stays in place and becomes its own job.
            log.info("job %d: %s changed since it was sent: left in place for its own job", job.id, source)
            return
        wanted.parent.mkdir(parents=True, exist_ok=True)
        # never replace an earlier original of the same name: the "-N" suffix scheme of the videos
        target = next(candidate for candidate in output.candidates(wanted) if not candidate.exists())
        shutil.move(source, target)
        if _content_stamp(target, hash_it=False) != (None, *hashed[1:]) and not source.exists():
            shutil.move(target, source)  # saved again between the hash and the move: put it back
            log.info("job %d: %s changed while being moved: left in place for its own job", job.id, source)
    except OSError as error:
        log.warning("job %d: could not move %s into %s: %s", job.id, job.source_path, wanted.parent, error)


def _content_stamp(path: Path, *, hash_it: bool = True) -> tuple[str | None, int, int, int] | None:
    """(sha256, inode, size, mtime_ns) of a regular file, from one open; None when it is no regular file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return None
        digest = None
        if hash_it:
            hasher = hashlib.sha256()
            while chunk := os.read(descriptor, 1 << 20):
                hasher.update(chunk)
            digest = hasher.hexdigest()
        return digest, info.st_ino, info.st_size, info.st_mtime_ns
    finally:
        os.close(descriptor)
