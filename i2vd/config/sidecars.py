"""Sidecar files in the hot folders: `i2vd.yaml` per folder, `<image>.yaml` per image, `<stem>.txt` captions.

The folder an image lands in decides how it is animated. Sidecars may set only
profile fields and template vars — never the server, never a path — and each is
validated with the config's own profile model, so an error names the file and key.
"""

from __future__ import annotations

import copy
import errno
import functools
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2vd.config.messages import did_you_mean, validation_problems
from i2vd.config.model import ConfigFile, SidecarFields
from i2vd.config.parameter_limits import Limits, is_range_error, range_problems
from i2vd.config.template_limits import TemplateLimitError, measure
from i2vd.core import listing
from i2vd.core.images import read_regular_file

FOLDER_SIDECAR = "i2vd.yaml"
IMAGE_SIDECAR_SUFFIX = ".yaml"
# YAML's other suffix: `i2vd.yml` or `IMG_01.jpg.yml` is found like a sidecar but never applied. Ignored, it made
# default videos of the images it was written for; found, it parks them, saying what to rename it to.
MISNAMED_SUFFIX = ".yml"
MISNAMED_FOLDER_SIDECAR = "i2vd.yml"
CAPTION_SUFFIX = ".txt"
CAPTION_LIMIT = 10_000
SIDECAR_LIMIT = 1_000_000  # a sidecar is a few lines; a huge one is a mistake, not a reason to eat memory
PARSED_CACHE_BYTES = 64_000  # sidecars up to this size are parsed once per content (_parsed_sidecar)
CONFIG_ONLY_KEYS = frozenset(ConfigFile.model_fields) - {"profiles"} | {"path", "url"}


class ProfileError(Exception):
    """The profile cannot be applied to this image (unknown profile, template error): fails the job."""


class SidecarError(ProfileError):
    """A sidecar is broken: the job waits (parked) until the file is fixed."""

    def __init__(self, file: Path | str, problems: list[str]):
        self.file = str(file)
        self.problems = problems
        super().__init__(f"sidecar {file}: " + "; ".join(problems))


@dataclass(frozen=True)
class SidecarSettings:
    """What the sidecars above an image say, nearest last: merged, not yet applied."""

    profile: str | None = None
    variables: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    sources: tuple[str, ...] = ()
    profile_source: str | None = None  # the sidecar that chose the profile
    priority: int = 0
    field_sources: dict[str, str] | None = field(
        default=None, compare=False
    )  # key (or "vars") -> the sidecar that set it last


def image_sidecar(image: Path) -> Path:
    return image.with_name(image.name + IMAGE_SIDECAR_SUFFIX)


def caption_path(image: Path) -> Path:
    return image.with_name(caption_name(image.name))


def caption_name(name: str) -> str:
    """`<stem>.txt` for an image's name, by Path.stem's rule, as text (a first start asks it of every image)."""
    dot = name.rfind(".")
    return (name[:dot] if 0 < dot < len(name) - 1 else name) + CAPTION_SUFFIX


def is_sidecar_name(name: str) -> bool:
    """i2vd.yaml, IMG_01.jpg.yaml, or a caption (or a sidecar named .yml): files whose change may alter an image's
    job."""
    return name.endswith((IMAGE_SIDECAR_SUFFIX, CAPTION_SUFFIX, MISNAMED_SUFFIX))


def is_folder_sidecar_name(name: str) -> bool:
    """A sidecar for a whole folder tree (i2vd.yaml, or i2vd.yml that parks it)."""
    return name in (FOLDER_SIDECAR, MISNAMED_FOLDER_SIDECAR)


def belongs_to(sidecar: Path, image: Path) -> bool:
    """An image sidecar (one named .yml too) or caption that is this image's own (same folder)."""
    own = (image_sidecar(image), image.with_name(image.name + MISNAMED_SUFFIX), caption_path(image))
    return sidecar in own


def sidecar_files(root: Path, image: Path) -> list[Path]:
    """Folder sidecars from the root down to the image's folder, then the image's own sidecar."""
    folder = os.path.dirname(os.fspath(image))  # text: a first start asks this of every image
    found = listing.remembered(
        ("folder sidecars", os.fspath(root), folder), lambda: _folder_sidecars(root, image.parent)
    )
    return found + _image_sidecars(image)


def _folder_sidecars(root: Path, folder: Path) -> list[Path]:
    folders = [root]
    for part in folder.relative_to(root).parts:
        folders.append(folders[-1] / part)
    names = (MISNAMED_FOLDER_SIDECAR, FOLDER_SIDECAR)
    return [folder / name for folder in folders for name in names if listing.is_file(folder / name)]


def _image_sidecars(image: Path) -> list[Path]:
    """The image's own sidecar, and one named .yml (which parks it)."""
    folder, name = os.path.split(os.fspath(image))
    suffixes = (MISNAMED_SUFFIX, IMAGE_SIDECAR_SUFFIX)
    return [image.with_name(name + suffix) for suffix in suffixes if listing.is_file_in(folder, name + suffix)]


def is_misnamed(file: Path) -> bool:
    """A sidecar named .yml: found, never applied."""
    return file.name.endswith(MISNAMED_SUFFIX)


def _misnamed(file: Path) -> SidecarError | None:
    """A sidecar named .yml: the error that parks what it was written for."""
    if not is_misnamed(file):
        return None
    meant = file.name.removesuffix(MISNAMED_SUFFIX) + IMAGE_SIDECAR_SUFFIX
    return SidecarError(
        file, [f"i2vd reads sidecars named {meant}, not {file.name}: rename it (nothing in it applies until then)"]
    )


def load_sidecar(file: Path, profiles: Collection[str] = (), limits: Limits | None = None) -> dict[str, Any]:
    """One sidecar's validated keys; raises SidecarError listing every problem in it.

    With `profiles`, a `profile:` naming none of them is one of the problems; with `limits` (what the
    configured servers take: i2vd.config.parameter_limits.limits_for), a frames, fps or steps one of them
    cannot take is.
    """
    misnamed = _misnamed(file)
    if misnamed is not None:
        raise misnamed
    try:
        content = read_regular_file(file, SIDECAR_LIMIT)
    except OSError as error:
        reason = (
            "it is a symbolic link; sidecars must be regular files" if error.errno == errno.ELOOP else error.strerror
        )
        raise SidecarError(file, [f"cannot read: {reason}"]) from None
    profiles = tuple(sorted(profiles))
    if len(content) > PARSED_CACHE_BYTES:
        return _parse_sidecar(file, content, profiles, limits)
    # A deep copy: read_sidecars pops its keys, and a merge must never reach into the cached `vars` of another job.
    return copy.deepcopy(_parsed_sidecar(file, content, profiles, limits))


@functools.lru_cache(maxsize=64)
def _parsed_sidecar(file: Path, content: bytes, profiles: tuple[str, ...], limits: Limits | None) -> dict[str, Any]:
    """Every image of a folder reads the same sidecars: each is parsed once per content (read every time, so an
    edit applies to the next image whatever its size and mtime). A broken one raises, and is not cached."""
    return _parse_sidecar(file, content, profiles, limits)


def _parse_sidecar(file: Path, content: bytes, profiles: tuple[str, ...], limits: Limits | None) -> dict[str, Any]:
    try:
        data = yaml.safe_load(content.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SidecarError(file, [f"cannot read: not UTF-8 text ({error})"]) from None
    except yaml.YAMLError as error:
        raise SidecarError(file, [f"not valid YAML: {error}"]) from None
    # Measured before anything copies it: YAML aliases make a few lines mean gigabytes.
    for key, value in data.items() if isinstance(data, dict) else [(None, data)]:
        try:
            measure(value, "the sidecar" if key is None else str(key))
        except TemplateLimitError as error:
            raise SidecarError(file, [str(error) if key is None else f"{key}: {error}"]) from None
    problems: list[str] = []
    if isinstance(data, dict):
        for key in CONFIG_ONLY_KEYS.intersection(map(str, data)):
            problems.append(f"{key}: not allowed in a sidecar (a sidecar sets only profile fields, vars and priority)")
            data = {name: value for name, value in data.items() if name != key}
    try:
        values = SidecarFields.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as error:
        problems += validation_problems(error, SidecarFields, skip=is_range_error)  # range_problems says it
        bad = {item["loc"][0] for item in error.errors() if item["loc"]}
        given = data if isinstance(data, dict) else {}
        values = {key: value for key, value in given.items() if key in SidecarFields.model_fields and key not in bad}
    bad_names = [key for key in (values.get("vars") or {}) if not isinstance(key, str)]
    if bad_names:
        problems.append(f"vars: key {bad_names[0]!r} is not a name")
    try:
        measure(values.get("vars"), "vars")  # YAML aliases can make a few lines mean gigabytes as text
    except TemplateLimitError as error:
        problems.append(f"vars: {error}")
    problems += range_problems(data if isinstance(data, dict) else {}, limits)  # as written: see is_range_error
    name = values.get("profile")
    if profiles and name and name not in profiles:
        problems.append(
            f"profile: unknown profile {name!r}{did_you_mean(name, list(profiles))}; "
            f"profiles: {', '.join(sorted(profiles))}"
        )
    if problems:
        raise SidecarError(file, problems)
    return values


def read_sidecars(root: Path | None, image: Path, limits: Limits | None = None) -> SidecarSettings:
    """Merge every sidecar that applies; deeper ones win key by key. Raises SidecarError naming file and key
    (with `limits`, also for a value some configured server cannot take)."""
    files = _image_sidecars(image) if root is None else sidecar_files(root, image)
    profile = profile_source = None
    variables: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    priority = 0
    field_sources: dict[str, str] = {}
    for file in files:
        values = load_sidecar(file, limits=limits)
        field_sources.update(dict.fromkeys((key for key, value in values.items() if value is not None), str(file)))
        if values.get("profile"):
            profile, profile_source = values["profile"], str(file)
        values.pop("profile", None)
        variables.update(values.pop("vars", None) or {})
        if values.get("priority") is not None:
            priority = values["priority"]
        values.pop("priority", None)
        overrides.update(values)
    return SidecarSettings(
        profile, variables, overrides, tuple(str(file) for file in files), profile_source, priority, field_sources
    )


def read_caption(image: Path) -> str | None:
    """`<stem>.txt` beside the image (the A1111/SD.Next batch convention), trimmed; None when absent or empty."""
    folder, name = os.path.split(os.fspath(image))
    if not listing.is_file_in(folder, caption_name(name)):
        return None
    try:
        text = read_regular_file(caption_path(image), CAPTION_LIMIT).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return text or None
