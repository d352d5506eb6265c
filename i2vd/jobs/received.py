"""Videos received from a server and not yet written: kept under state_dir/incoming/.

A backend streams its reply into this folder (never whole in memory). Once complete, the video is
renamed to a name made from the job's idempotency key, beside a small `.json` saying what it is.
When the output cannot be written (disk full, share offline) it stays here and is written once
space returns: the server is never asked twice for the same video (SPEC "What real hot folders do").
It is removed when the video is placed. At start, unfinished reply files (`*.part`) and kept videos
whose job is finished, or gone from the journal, are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from i2vd.render import output
from i2vd.render.backends.base import VideoReply
from i2vd.store.journal import Job, JobState, Journal

log = logging.getLogger("i2vd.received")

INCOMING = "incoming"


def _stem(idem_key: str) -> str:
    return hashlib.sha256(idem_key.encode("utf-8", "surrogateescape")).hexdigest()


def video_path(folder: Path, idem_key: str) -> Path:
    return folder / f"{_stem(idem_key)}.mp4"


def _meta_path(folder: Path, idem_key: str) -> Path:
    return folder / f"{_stem(idem_key)}.json"


def keep(folder: Path, job: Job, reply: VideoReply, server: dict[str, Any]) -> Path:
    """The reply's video under its kept name (fsynced, then renamed), with what the record needs."""
    folder.mkdir(parents=True, exist_ok=True)
    target, meta = video_path(folder, job.idem_key), _meta_path(folder, job.idem_key)
    if reply.path is None:  # a backend that answers in memory
        source = folder / f"{target.name}.part"
        with open(source, "wb") as handle:
            handle.write(reply.data or b"")
    else:
        source = reply.path
    try:
        output.fsync_file(source)
        text = json.dumps(
            {
                "idempotency_key": job.idem_key,
                "job_id": job.id,
                "params": job.params,
                "server": server,
                "server_seconds": reply.server_seconds,
            },
            ensure_ascii=True,
        )
        meta_part = meta.with_name(meta.name + ".part")
        with open(meta_part, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(meta_part, meta)
        os.replace(source, target)  # last: a kept video always has its meta beside it
        output.fsync_folder(folder)
    except OSError:
        source.unlink(missing_ok=True)
        raise
    return target


def kept(folder: Path, idem_key: str, params: dict[str, Any]) -> tuple[Path, dict[str, Any], float] | None:
    """(video, server, server seconds) of a video received for this key and these settings, or None."""
    video = video_path(folder, idem_key)
    meta = _read_meta(_meta_path(folder, idem_key))
    if meta is None or meta.get("idempotency_key") != idem_key or meta.get("params") != params:
        return None
    try:
        if video.stat().st_size == 0:
            return None
    except OSError:
        return None
    return video, meta.get("server") or {}, float(meta.get("server_seconds") or 0.0)


def discard(folder: Path, idem_key: str) -> None:
    video_path(folder, idem_key).unlink(missing_ok=True)
    _meta_path(folder, idem_key).unlink(missing_ok=True)


def discard_reply(reply: VideoReply) -> None:
    if reply.path is not None:
        reply.path.unlink(missing_ok=True)


def clean(folder: Path, journal: Journal) -> None:
    """At start: unfinished replies of a crashed call go; so do kept videos nobody will write."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.endswith(".part"):
                entry.unlink()
            elif entry.suffix == ".json":
                meta = _read_meta(entry) or {}
                job = journal.job(meta["job_id"]) if isinstance(meta.get("job_id"), int) else None
                waiting = (
                    job is not None
                    and job.idem_key == meta.get("idempotency_key")
                    and job.state not in (JobState.DONE, JobState.FAILED)
                )
                if not waiting:
                    entry.with_suffix(".mp4").unlink(missing_ok=True)
                    entry.unlink()
            elif entry.suffix == ".mp4" and not entry.with_suffix(".json").exists():
                entry.unlink()
        except OSError as error:
            log.warning("cannot clean %s: %s", entry, error)


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None
