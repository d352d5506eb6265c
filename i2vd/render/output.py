"""Where videos go and how they get there: naming, atomic writes, the audit record.

A video appears under its final name only when it is complete: it is written to
a temp file named after its job in the same folder, fsynced, renamed, and the
folder fsynced. The `.json` record goes first and carries the job's idempotency
key, so after a crash "video and matching record both exist" proves the job
finished, and the server is not called again.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from i2vd.render import mp4

TEMP_MARK = ".i2vd-"


def record_path(video: Path) -> Path:
    return video.with_name(video.name + ".json")


def default_video_path(output_dir: Path, rel_path: str, output_name: str | None) -> Path:
    # NFC: "café" typed on a Mac (NFD) and on Windows (NFC) must not become two look-alike videos.
    relative = PurePosixPath(unicodedata.normalize("NFC", rel_path))
    name = output_name or f"{relative.stem}.mp4"
    return output_dir.joinpath(*relative.parent.parts, name)


def candidates(first: Path) -> Iterator[Path]:
    """The wanted name, then `name-1.mp4`, `name-2.mp4`, ...: collisions get a suffix, never an overwrite."""
    yield first
    number = 1
    while True:
        yield first.with_name(f"{first.stem}-{number}{first.suffix}")
        number += 1


def _record(video: Path) -> dict[str, Any]:
    try:
        record = json.loads(record_path(video).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_key(video: Path) -> str | None:
    return _record(video).get("idempotency_key")


def is_complete(video: Path, idem_key: str) -> bool:
    """The video and a record naming this job's key are both in place."""
    return video.is_file() and record_key(video) == idem_key


def recorded_by(video: Path, job_id: int, queued_at: float) -> bool:
    """The video's record was written by this very job (same id, queued at the same time): not by an
    earlier journal's job that happened to get the same id."""
    record = _record(video)
    return record.get("job_id") == job_id and (record.get("timings") or {}).get("queued") == queued_at


class OutputCollision(Exception):
    """`collision: fail`: the wanted name holds another job's video."""


COLLISION_POLICIES = ("suffix", "overwrite", "fail")


def choose_path(
    first: Path,
    idem_key: str,
    claim: Callable[[Path], bool],
    job: tuple[int, str] | None = None,
    policy: str = "suffix",
    take_over: Callable[[Path], bool] | None = None,
) -> Path:
    """The first candidate that is free on disk (or already this job's) and that `claim` records for us.

    A video is this job's when its record carries the job's key, or the job's (id,
    source sha256): a retried job with new settings replaces its own earlier video
    instead of adding `-1` (the sha guards against ids reused by a new journal).
    `policy` (a profile's `collision:`) is what happens when another job's video holds the name:
    suffix (`-1`, `-2`...), overwrite (replaced atomically; a queued or running job's name is never
    taken, that falls back to a suffix) or fail (OutputCollision naming the video).
    """
    if policy != "suffix":
        record = _record(first)
        recorded_job = (record.get("job_id"), (record.get("source") or {}).get("sha256"))
        ours = record.get("idempotency_key") == idem_key or (job is not None and recorded_job == job)
        taken_on_disk = (first.exists() or record_path(first).exists()) and not ours
        if policy == "overwrite" and (take_over or claim)(first):
            return first
        if policy == "fail":
            if taken_on_disk:
                raise OutputCollision(f"the output {first} already holds another video (collision: fail)")
            if not claim(first):
                raise OutputCollision(f"the output {first} is another job's (collision: fail)")
            return first
    for candidate in candidates(first):
        record = _record(candidate)
        recorded_job = (record.get("job_id"), (record.get("source") or {}).get("sha256"))
        ours = record.get("idempotency_key") == idem_key or (job is not None and recorded_job == job)
        taken_on_disk = (candidate.exists() or record_path(candidate).exists()) and not ours
        if not taken_on_disk and claim(candidate):
            return candidate
    raise AssertionError("unreachable: candidates() never ends")


def temp_path(final: Path, job_id: int) -> Path:
    return final.with_name(f".{final.name}{TEMP_MARK}{job_id}.tmp")


def remove_temp_files(folder: Path, job_id: int) -> list[Path]:
    """Stray temp files a crashed attempt of this job left behind."""
    removed = []
    suffix = f"{TEMP_MARK}{job_id}.tmp"
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(suffix):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_bytes_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _record_bytes(record: dict[str, Any]) -> bytes:
    """The audit record as UTF-8 JSON; a name with undecodable bytes is kept exactly, as JSON escapes."""
    try:
        return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def write_video(final: Path, job_id: int, video: bytes | Path, record: dict[str, Any], comment: str) -> None:
    """Validate, tag and place the video (bytes, or a file that stays where it is) and its record atomically.

    Raises mp4.VideoError when `video` is not a playable MP4 (the server's fault)
    and OSError when the disk refuses (full, read-only): in both cases nothing is
    left under the final names and the temp files are gone.
    """
    folder = final.parent
    folder.mkdir(parents=True, exist_ok=True)
    raw = final.with_name(f".{final.name}.raw{TEMP_MARK}{job_id}.tmp")
    video_temp = temp_path(final, job_id)
    record_temp = temp_path(record_path(final), job_id)
    try:
        if isinstance(video, Path):
            raw = video  # read in place: the only copy is the tagged one
        else:
            if not video:
                raise mp4.VideoError("the server returned an empty video")
            _write_bytes_synced(raw, video)
        mp4.write_tagged_copy(raw, video_temp, comment)
        fsync_file(video_temp)
        _write_bytes_synced(record_temp, _record_bytes(record))
        if record_key(final) != record.get("idempotency_key"):
            # A retried job replaces its own earlier video: it must never sit beside the new record,
            # or a crash between the two renames would pass the old video off as the new one.
            final.unlink(missing_ok=True)
        os.replace(record_temp, record_path(final))
        try:
            os.replace(video_temp, final)
        except OSError:
            record_path(final).unlink(missing_ok=True)
            raise
        fsync_folder(folder)
    finally:
        for leftover in (raw, video_temp, record_temp):
            if leftover is not video:
                leftover.unlink(missing_ok=True)
