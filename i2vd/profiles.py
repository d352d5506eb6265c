"""Turn a profile and an image into the exact prompt and parameters of its job.

Prompts and output names are Jinja2 templates rendered in a sandbox with
StrictUndefined: a misspelt variable is an error on that job, never an empty
string in a prompt that silently produces the wrong video.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from i2vd.config import PROFILE_FIELDS, Config
from i2vd.images import ImageFacts
from i2vd.schema import Scalar, Section, validate

PARAMETER_NAMES = ("resolution", "frames", "fps", "steps", "guidance", "seed")
FOLDER_SIDECAR = "i2vd.yaml"
SIDECAR_SCHEMA = Section(
    {
        "profile": Scalar(str, None, "profile for the images here", nullable=True),
        "vars": Scalar(dict, None, "extra template variables", nullable=True),
        **PROFILE_FIELDS,
    },
    "a folder sidecar (i2vd.yaml) or an image sidecar (<image>.yaml): only profile fields and vars",
)
_ENVIRONMENT = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class ProfileError(Exception):
    """The profile cannot be applied to this image (unknown profile, template error)."""


@dataclass(frozen=True)
class ResolvedProfile:
    name: str
    prompt: str
    params: dict[str, Any]
    output_name: str | None

    def idempotency_key(self, source_sha256: str) -> str:
        """Same image content and same resolved request: the same job, whatever the file is called."""
        material = {"sha256": source_sha256, "prompt": self.prompt, "params": self.params, "output": self.output_name}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SidecarSettings:
    """What the sidecars above an image say, nearest last: merged, not yet applied."""

    profile: str | None = None
    variables: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    sources: tuple[str, ...] = ()


def sidecar_files(root: Path, image: Path) -> list[Path]:
    """Folder sidecars from the root down to the image's folder, then the image's own sidecar."""
    folders = [root]
    for part in image.parent.relative_to(root).parts:
        folders.append(folders[-1] / part)
    found = [folder / FOLDER_SIDECAR for folder in folders if (folder / FOLDER_SIDECAR).is_file()]
    own = image.with_name(image.name + ".yaml")
    return found + ([own] if own.is_file() else [])


def read_sidecars(root: Path | None, image: Path) -> SidecarSettings:
    """Merge every sidecar that applies; deeper ones win key by key. Raises ProfileError naming file and key."""
    if root is None:
        files = [image.with_name(image.name + ".yaml")] if image.with_name(image.name + ".yaml").is_file() else []
    else:
        files = sidecar_files(root, image)
    profile = None
    variables: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ProfileError(f"sidecar {file}: cannot read: {error}") from None
        except yaml.YAMLError as error:
            raise ProfileError(f"sidecar {file}: not valid YAML: {error}") from None
        problems: list[str] = []
        values = validate(data, SIDECAR_SCHEMA, "", problems, fill_defaults=False)
        bad_names = [key for key in (values.get("vars") or {}) if not isinstance(key, str)]
        if bad_names:
            problems.append(f"vars: key {bad_names[0]!r} is not a name")
        if problems:
            raise ProfileError(f"sidecar {file}: " + "; ".join(problems))
        profile = values.pop("profile", None) or profile
        variables.update(values.pop("vars", None) or {})
        overrides.update(values)
    return SidecarSettings(profile, variables, overrides, tuple(str(file) for file in files))


CAPTION_SUFFIX = ".txt"
CAPTION_LIMIT = 10_000


def caption_path(image: Path) -> Path:
    return image.with_suffix(CAPTION_SUFFIX)


def read_caption(image: Path) -> str | None:
    """`<stem>.txt` beside the image (the A1111/SD.Next batch convention), trimmed; None when absent or empty."""
    try:
        text = caption_path(image).read_text(encoding="utf-8", errors="replace")[:CAPTION_LIMIT].strip()
    except OSError:
        return None
    return text or None


def subject_of(stem: str) -> str:
    """`golden_retriever-2` -> "golden retriever 2": the file name as words for a prompt."""
    return " ".join(stem.lower().replace("_", " ").replace("-", " ").split())


def template_variables(relative_path: PurePosixPath, facts: ImageFacts | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    stem = relative_path.stem
    variables: dict[str, Any] = {
        "stem": stem,
        "subject": subject_of(stem),
        "filename": relative_path.name,
        "folder": relative_path.parent.name,
        "caption": None,
        "exif_date": facts.exif_date if facts else None,
        "exif_camera": facts.exif_camera if facts else None,
    }
    variables.update(extra or {})
    return variables


def render(template: str, variables: dict[str, Any], what: str) -> str:
    try:
        return _ENVIRONMENT.from_string(template).render(variables).strip()
    except jinja2.UndefinedError as error:
        raise ProfileError(f"{what}: {error.message} (known variables: {', '.join(sorted(variables))})") from None
    except jinja2.TemplateError as error:
        raise ProfileError(f"{what}: {error}") from None


def resolve_profile(config: Config, relative_path: PurePosixPath, facts: ImageFacts | None, profile_name: str = "default", sidecars: SidecarSettings | None = None, caption: str | None = None) -> ResolvedProfile:
    sidecars = sidecars or SidecarSettings()
    profile_name = sidecars.profile or profile_name
    if profile_name not in config.profiles:
        known = ", ".join(sorted(config.profiles))
        where = f" (set in {sidecars.sources[-1]})" if sidecars.profile else ""
        raise ProfileError(f"unknown profile {profile_name!r}{where}; profiles: {known}")
    fields = {**config.profile(profile_name), **(sidecars.overrides or {})}
    variables = template_variables(relative_path, facts, {"vars": sidecars.variables or {}, **(sidecars.variables or {}), "caption": caption})
    prompt = render(fields["prompt"], variables, f"profile {profile_name} prompt")
    if not prompt:
        raise ProfileError(f"profile {profile_name} prompt renders empty for {relative_path.name}")
    output_name = None
    if fields.get("output"):
        output_name = render(fields["output"], variables, f"profile {profile_name} output")
        if Path(output_name).name != output_name or output_name in ("", ".", ".."):
            raise ProfileError(f"profile {profile_name} output {output_name!r} must be a plain file name")
        if not output_name.lower().endswith(".mp4"):
            output_name += ".mp4"
    params = {name: fields[name] for name in PARAMETER_NAMES}
    return ResolvedProfile(name=profile_name, prompt=prompt, params=params, output_name=output_name)
