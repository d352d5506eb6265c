"""`i2vd check`: validate the config and every sidecar, and show what each image would get.

Meant for the user's own config repository CI as much as for a person: every
problem is listed with its file and key, the table shows image → profile →
rendered prompt → parameters → output name, and the exit code is non-zero on any
error. Each image is read and decoded exactly as the daemon does (inspect_image),
so a file check passes is one the daemon takes, and a bad one shows the daemon's error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from i2vd.config import parameters
from i2vd.config.load import Config, WatchRoot
from i2vd.config.parameter_limits import job_limits
from i2vd.config.profiles import resolve_profile
from i2vd.config.sidecars import (
    IMAGE_SIDECAR_SUFFIX,
    MISNAMED_SUFFIX,
    ProfileError,
    SidecarError,
    is_folder_sidecar_name,
    load_sidecar,
    read_caption,
    read_sidecars,
)
from i2vd.core.images import BadImage, ImageFacts, inspect_image
from i2vd.ingest.reasons import read_within_limit
from i2vd.ingest.watcher import IMAGE_SUFFIXES, is_ignored_name, scan
from i2vd.render.output import default_video_path


@dataclass(frozen=True)
class Row:
    image: str
    profile: str = ""
    prompt: str = ""
    parameters: str = ""
    output: str = ""
    error: str = ""


def sidecars_under(root: Path, excluded: tuple[Path, ...]) -> list[Path]:
    found = []
    for folder, folders, files in os.walk(root):
        folders[:] = sorted(
            name for name in folders if not is_ignored_name(name) and Path(folder, name) not in excluded
        )
        for name in sorted(files):
            if is_ignored_name(name):
                continue  # what the daemon ignores (a Mac's ._x.jpg.yaml), check ignores too
            is_image_sidecar = any(
                name.endswith(suffix) and Path(name.removesuffix(suffix)).suffix.lower() in IMAGE_SUFFIXES
                for suffix in (IMAGE_SIDECAR_SUFFIX, MISNAMED_SUFFIX)
            )
            if is_folder_sidecar_name(name) or is_image_sidecar:
                found.append(Path(folder, name))
    return found


def decode_like_the_daemon(path: Path, root: WatchRoot | None) -> ImageFacts:
    """The intake's read and full decode of one image; its BadImage message is the job's error (a file over
    watch.max_image_mb is not read: the daemon would fail it unread)."""
    try:
        data = read_within_limit(path, root)
    except OSError as error:
        raise BadImage(f"cannot read {path.name}: {error.strerror}") from None  # as the intake words it
    return inspect_image(data, path.name)


def check_root(config: Config, root_path: Path, start: Path, problems: list[str]) -> list[Row]:
    root = config.root_for(root_path)
    excluded = config.excluded_folders()
    limits = job_limits(config)  # what every configured server takes
    for sidecar in sidecars_under(start, excluded):
        try:
            load_sidecar(sidecar, profiles=config.profiles, limits=limits)
        except SidecarError as error:
            problems.extend(f"{error.file}: {problem}" for problem in error.problems)
    rows = []
    for path, _ in sorted(scan(start, excluded)):
        relative = path.relative_to(root.path)
        try:
            facts = decode_like_the_daemon(path, root)
            resolved = resolve_profile(
                config,
                Path(relative.as_posix()),
                facts,
                "default",
                read_sidecars(root.path, path, limits),
                caption=read_caption(path),
            )
        except SidecarError as error:
            rows.append(Row(str(relative), error=f"parked: {error}"))
            problems.extend(f"{error.file}: {problem}" for problem in error.problems)
            continue
        except (ProfileError, BadImage) as error:
            rows.append(Row(str(relative), error=str(error)))
            problems.append(f"{path}: {error}")
            continue
        unsendable = _cannot_send(config, path)
        if unsendable:
            rows.append(Row(str(relative), error=unsendable))
            problems.append(f"{path}: {unsendable}")
            continue
        video = default_video_path(root.output_dir, relative.as_posix(), resolved.output_name)
        rows.append(
            Row(
                str(relative),
                resolved.name,
                resolved.prompt,
                parameters.summary(resolved.params),
                str(video.relative_to(root.output_dir)),
            )
        )
    return rows


def _cannot_send(config: Config, path: Path) -> str | None:
    """executor: celery: why the daemon could not send this image to the GPU hosts (its job would fail)."""
    if config.executor.kind != "celery":
        return None
    from i2vd.cluster.messages import cannot_carry

    return cannot_carry(path.stat().st_size, str(path), config.executor)


def _fit(text: str, width: int) -> str:
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def render_rows(rows: list[Row]) -> list[str]:
    header = Row("IMAGE", "PROFILE", "PROMPT", "PARAMETERS", "OUTPUT")
    table = [header] + rows
    columns = ("image", "profile", "prompt", "parameters")
    widths = {name: min(60, max(len(getattr(row, name)) for row in table)) for name in columns}
    lines = []
    for row in table:
        if row.error:
            lines.append(f"{row.image.ljust(widths['image'])}  ERROR: {row.error}")
            continue
        cells = [_fit(getattr(row, name), widths[name]) for name in columns]
        lines.append("  ".join(cells) + "  " + row.output)
    return lines


def run_check(config: Config, path: Path | None, out: TextIO) -> int:
    """Print the report; 0 when nothing is wrong, 1 otherwise."""
    problems: list[str] = []
    targets: list[tuple[Path, Path]] = []
    if path is not None:
        path = path.resolve()
        if not path.is_dir():
            print(f"i2vd check: {path} is not a folder", file=out)
            return 1
        config = config.with_root(path)
        targets.append((config.root_for(path).path, path))
    else:
        for root in config.watch:
            if root.path.is_dir():
                targets.append((root.path, root.path))
            else:
                problems.append(f"{root.path}: watch root is not a folder")
    print(
        f"config {config.source}: ok ({len(config.profiles)} profiles: {', '.join(sorted(config.profiles))})", file=out
    )
    from i2vd.render.backends.comfyui_probe import (
        check_lines,
    )  # each ComfyUI workflow's I2VD: nodes, for a sample image

    for line in check_lines(config):
        print(line, file=out)
    rows: list[Row] = []
    for root_path, start in targets:
        rows.extend(check_root(config, root_path, start, problems))
    for line in render_rows(rows):
        print(line, file=out)
    for problem in dict.fromkeys(problems):
        print(f"error: {problem}", file=out)
    print(f"{len(rows)} image(s), {len(dict.fromkeys(problems))} problem(s)", file=out)
    return 1 if problems else 0
