"""What the intake says about a file it cannot make a video of: the profile its sidecars name, why it is no image,
or too big an image to read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from i2vd.config.load import WatchRoot
from i2vd.config.sidecars import (
    SIDECAR_LIMIT,
    image_sidecar,
    is_misnamed,
    sidecar_files,
)
from i2vd.core.images import BadImage, ImageFacts, inspect_image, read_regular_file, sha256_of


def sidecar_profile_name(root: WatchRoot | None, path: Path, requested: str) -> str:
    """The profile the sidecars name, read leniently: what a parked or failed job shows instead of the requested one."""
    name = requested
    try:
        files = sidecar_files(root.path, path) if root else [image_sidecar(path)]
    except (OSError, ValueError):
        return name
    for file in files:
        if is_misnamed(file):
            continue  # parks the job, applies nothing (sidecars.py): not its profile either
        try:
            data = yaml.safe_load(read_regular_file(file, SIDECAR_LIMIT).decode("utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # that sidecar is what is broken: a shallower one may still name the profile
        if isinstance(data, dict) and isinstance(data.get("profile"), str) and data["profile"]:
            name = data["profile"]
    return name


def describe_special(path: Path, info: os.stat_result, root: WatchRoot | None) -> str:
    """Why an image-named thing that is not a regular file is not made into a video."""
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        resolved = path.parent.joinpath(target).resolve()
        if root is not None and not resolved.is_relative_to(root.path.resolve()):
            return f"{path.name} is a symbolic link to {target}, outside its watch root: never followed or uploaded"
        return (
            f"{path.name} is a symbolic link to {target}: the file it "
            f"points to is processed on its own, never through the link"
        )
    if stat.S_ISDIR(info.st_mode):
        return (
            f"{path.name} is a folder named like an image: the images in it are watched, the folder itself is no image"
        )
    if stat.S_ISFIFO(info.st_mode):
        return f"{path.name} is a named pipe (FIFO), not an image file"
    return f"{path.name} is a device or socket, not an image file"


# A file outside every root (`i2vd enqueue`): the watch roots' default.
DEFAULT_MAX_IMAGE_MB: float = WatchRoot.__pydantic_fields__["max_image_mb"].default


def image_limit_bytes(root: WatchRoot | None) -> int:
    """The largest file the intake reads (watch.max_image_mb): it reads an image whole."""
    return int((root.max_image_mb if root is not None else DEFAULT_MAX_IMAGE_MB) * 2**20)


def too_big(path: Path, info: os.stat_result, root: WatchRoot | None) -> str | None:
    """Why a file is not read, when it is larger than watch.max_image_mb: the intake reads an image whole, in the
    daemon's own process."""
    if info.st_size <= image_limit_bytes(root):
        return None
    limit = root.max_image_mb if root is not None else DEFAULT_MAX_IMAGE_MB
    return (
        f"{path.name} is {info.st_size / 2**20:,.1f} MB; i2vd reads images up to {limit:g} MB (watch.max_image_mb):"
        " export a smaller copy, or raise the limit if your server takes such files"
    )


def read_within_limit(path: Path, root: WatchRoot | None) -> bytes:
    """The whole file, as the intake reads it; BadImage (too_big's reason) for a file over watch.max_image_mb, which
    is never read. OSError as read_regular_file raises it."""
    unread = too_big(path, os.stat(path, follow_symlinks=False), root)
    if unread is not None:
        raise BadImage(unread)
    return read_regular_file(path)


def look_again(path: Path, root: WatchRoot | None, sha256: str) -> tuple[ImageFacts | None, str | None]:
    """A job that failed at intake, retried: its file read and decoded again, (facts, None), or (None, why not)."""
    try:
        data = read_within_limit(path, root)
        if sha256_of(data) != sha256:
            return None, "the file changed since this job was made (its new content is a job of its own)"
        return inspect_image(data, path.name), None
    except BadImage as problem:
        return None, str(problem)
    except OSError as problem:
        return None, f"cannot read {path}: {problem.strerror}"
