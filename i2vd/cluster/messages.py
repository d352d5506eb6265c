"""A task's payload and its result, as JSON dicts (versioned), and their translation both ways. No I/O but files.

Payload: the job's key and id, the VideoRequest's fields, and the image inline (base64) up to
`executor.max_inline_mb`, else the source's path as the GPU hosts mount it (`executor.path_map`).
Result: the video inline (or, above max_inline_mb, in `executor.spool_dir`) with the worker's server `describe()`
and server seconds, or a failure as the
BackendError class's name and message, so the ingest host raises the same class and decides attempts exactly
as it does for a local server (outcomes.backend_failure).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from i2vd.config.executor import ExecutorConfig
from i2vd.render.backends import base
from i2vd.render.backends.base import BackendError, BadInput, ServerUnavailable, VideoRequest

VERSION = 1
MB = 1024 * 1024
FIELDS = ("image_name", "prompt", "resolution", "frames", "fps", "steps", "guidance", "seed")
# Every BackendError the worker may raise, by name: a failure crosses the queue as its class's name.
FAILURES: dict[str, type[BackendError]] = {
    cls.__name__: cls
    for cls in vars(base).values()
    if isinstance(cls, type) and issubclass(cls, BackendError) and cls.__module__ == base.__name__
}


class PayloadError(ValueError):
    """A payload or result this release cannot read (a newer i2vd, or not i2vd's)."""


def map_path(path: str, path_map: dict[str, str] | None, *, back: bool = False) -> str | None:
    """`path` under a mapped folder, as the other side sees it (the longest folder that holds it wins)."""
    pairs = [(there, here) if back else (here, there) for here, there in (path_map or {}).items()]
    for source, target in sorted(pairs, key=lambda pair: len(pair[0]), reverse=True):
        if path == source or path.startswith(source.rstrip("/") + "/"):
            return target.rstrip("/") + path[len(source.rstrip("/")) :] if path != source else target
    return None


def cannot_carry(size: int, source_path: str | None, executor: ExecutorConfig) -> str | None:
    """Why an image of `size` bytes at `source_path` cannot reach the GPU hosts, or None when it can."""
    if size <= executor.max_inline_mb * MB or (source_path and map_path(source_path, executor.path_map)):
        return None
    shown = f"{size / MB:.1f} MB" if size >= MB / 10 else f"{size:,} bytes"
    return (
        f"the image is {shown}, above executor.max_inline_mb ({executor.max_inline_mb:g}), "
        f"and {source_path or 'its folder'} is under no folder of executor.path_map"
    )


def fingerprint(request: VideoRequest) -> str:
    """What the task asks for: a job whose settings changed (a downgrade) is a new task."""
    text = repr([getattr(request, name) for name in FIELDS] + [hashlib.sha256(request.image).hexdigest()])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def payload(request: VideoRequest, executor: ExecutorConfig) -> dict[str, Any]:
    """The task's one argument; raises BadInput for a large image whose folder has no shared path."""
    size, source_path = len(request.image), request.source_path
    if size <= executor.max_inline_mb * MB:
        image: dict[str, Any] = {"inline": base64.b64encode(request.image).decode("ascii")}
    else:
        mapped = map_path(source_path, executor.path_map) if source_path else None
        if mapped is None:
            raise BadInput(cannot_carry(size, source_path, executor))
        image = {"path": mapped, "size": size}
    return {
        "version": VERSION,
        "key": request.key,
        "job_id": request.job_id,
        **{name: getattr(request, name) for name in FIELDS},
        "image": image,
        "image_sha256": hashlib.sha256(request.image).hexdigest(),
    }


def video_request(data: Any, reply_dir: Path | None) -> VideoRequest:
    """The worker's VideoRequest from a payload; the image read from the shared path when not inline."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise PayloadError(f"a task of payload version {version!r}; this i2vd reads version {VERSION}")
    image = data.get("image")
    if not isinstance(image, dict) or not ("inline" in image or "path" in image):
        raise PayloadError("a task without its image")
    if "inline" in image:
        try:
            content = base64.b64decode(image["inline"], validate=True)
        except (TypeError, ValueError) as error:
            raise PayloadError(f"the task's image is not base64: {error}") from None
    else:
        try:
            content = Path(image["path"]).read_bytes()
        except OSError as error:  # the share is not mounted here: this host's problem, not the job's
            raise ServerUnavailable(f"cannot read the shared image {image['path']}: {error.strerror}") from error
    if hashlib.sha256(content).hexdigest() != data.get("image_sha256"):
        raise BadInput("the image the task carries does not match its sha256 (changed on the share?)")
    fields = {name: data.get(name) for name in FIELDS}
    return VideoRequest(image=content, reply_dir=reply_dir, job_id=data.get("job_id"), key=data.get("key"), **fields)


def success(
    video: bytes | Path, server: dict[str, str], server_seconds: float, host: str, executor: ExecutorConfig, name: str
) -> dict[str, Any]:
    """The result of a made video: inline, or (above max_inline_mb, with a spool_dir) as `name` in the spool."""
    size = len(video) if isinstance(video, bytes) else video.stat().st_size
    spool = map_path(executor.spool_dir, executor.path_map) if executor.spool_dir else None
    if spool is not None and size > executor.max_inline_mb * MB:
        shared = Path(spool) / f"{name}.mp4"
        part = shared.with_name(f"{shared.name}.part")
        if isinstance(video, bytes):
            part.write_bytes(video)
        else:
            shutil.copyfile(video, part)
        os.replace(part, shared)  # whole or not there: the ingest host never reads half a video
        carried: dict[str, Any] = {"path": str(shared), "size": size}
    else:
        content = video if isinstance(video, bytes) else video.read_bytes()
        carried = {"inline": base64.b64encode(content).decode("ascii")}
    return {
        "version": VERSION,
        "ok": True,
        "video": carried,
        "server": dict(server),
        "server_seconds": server_seconds,
        "host": host,
    }


def failure(error: BackendError, host: str) -> dict[str, Any]:
    name = type(error).__name__ if type(error).__name__ in FAILURES else BackendError.__name__
    return {"version": VERSION, "ok": False, "error": name, "message": str(error), "status": error.status, "host": host}


def raise_failure(result: dict[str, Any]) -> None:
    """The failure the worker's server reported, as the same BackendError class."""
    error = FAILURES.get(str(result.get("error")), BackendError)(f"{result.get('host')}: {result.get('message')}")
    error.status = result.get("status")
    raise error


def write_video(result: dict[str, Any], target: Path, executor: ExecutorConfig) -> Path:
    """The result's video into `target`: decoded in slices (one copy of the text in memory, not two), or copied
    from the spool (mapped back to this host's view) and removed there."""
    if not isinstance(result, dict) or result.get("version") != VERSION or not result.get("ok"):
        raise PayloadError(f"not a successful result of version {VERSION}: {str(result)[:200]}")
    carried = result.get("video")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(carried, dict) and "path" in carried:
        here = map_path(str(carried["path"]), executor.path_map, back=True)
        if here is None:
            raise PayloadError(f"the video at {carried['path']} is under no folder of executor.path_map")
        try:
            shutil.copyfile(here, target)
        except OSError as error:
            raise PayloadError(f"cannot read the video at {here}: {error.strerror or error}") from None
        Path(here).unlink(missing_ok=True)
        return target
    if not isinstance(carried, dict) or not isinstance(carried.get("inline"), str):
        raise PayloadError("a result without its video")
    text = carried["inline"]
    step = 4 * 1024 * 1024  # a multiple of 4: each slice is whole base64
    with open(target, "wb") as handle:
        for start in range(0, len(text), step):
            handle.write(base64.b64decode(text[start : start + step]))
    return target
