"""Turn a profile and an image into the exact prompt and parameters of its job.

Prompts and output names are Jinja2 templates rendered in a sandbox with
StrictUndefined: a misspelt variable is an error on that job, never an empty
string in a prompt that silently produces the wrong video. Anyone who can write to
the share writes sidecars, so rendering is bounded (i2vd/config/templates.py): a template
that breaks a bound parks the jobs of the sidecar that set it, or fails its image.
"""

from __future__ import annotations

import functools
import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from i2vd.config.load import Config
from i2vd.config.messages import did_you_mean
from i2vd.config.parameters import PARAMETER_NAMES
from i2vd.config.sidecars import ProfileError, SidecarError, SidecarSettings
from i2vd.config.templates import TemplateLimitError, render_bounded
from i2vd.core.images import ImageFacts

PROMPT_LIMIT = 4096  # bytes of a rendered prompt (UTF-8)
OUTPUT_NAME_LIMIT = 255  # bytes of an output file name, .mp4 included: what a file system allows


class TemplateBoundError(ProfileError):
    """A template broke a bound on its work or output (SPEC "Reliability")."""


@dataclass(frozen=True)
class ResolvedProfile:
    name: str
    prompt: str
    params: dict[str, Any]
    output_name: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # every profile field after inheritance and sidecars
    sidecars: tuple[str, ...] = ()

    @property
    def profile_hash(self) -> str:
        """Identifies the resolved profile (fields and the sidecars they came from), for the audit record."""
        try:  # the images of a folder share it: worked out once (a first start resolves 100,000 of them)
            key = tuple(sorted((name, type(value), value) for name, value in self.fields.items()))
            hash(key)
        except TypeError:  # a list or a mapping among the fields
            return _profile_hash(self.name, self.fields, self.sidecars)
        return _known_profile_hash(self.name, key, self.sidecars)

    def idempotency_key(self, source_sha256: str) -> str:
        """Same image content and same resolved request: the same job, whatever the file is called."""
        material = {"sha256": source_sha256, "prompt": self.prompt, "params": self.params, "output": self.output_name}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _profile_hash(name: str, fields: dict[str, Any], sidecars: tuple[str, ...]) -> str:
    material = {"name": name, "fields": fields, "sidecars": list(sidecars)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _known_profile_hash(name: str, fields: tuple[tuple[str, type, Any], ...], sidecars: tuple[str, ...]) -> str:
    return _profile_hash(name, {field: value for field, _, value in fields}, sidecars)


def _text(name: str) -> str:
    return unicodedata.normalize("NFC", name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def subject_of(stem: str) -> str:
    """`golden_retriever-2` -> "golden retriever 2": the file name as words for a prompt."""
    return " ".join(stem.lower().replace("_", " ").replace("-", " ").split())


def template_variables(
    relative_path: PurePosixPath, facts: ImageFacts | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    # Names are NFC (a Mac writes NFD) and readable text (undecodable bytes become U+FFFD): prompts are text.
    stem = _text(relative_path.stem)
    variables: dict[str, Any] = {
        "stem": stem,
        "subject": subject_of(stem),
        "filename": _text(relative_path.name),
        "folder": _text(relative_path.parent.name),
        "caption": None,
        "exif_date": facts.exif_date if facts else None,
        "exif_camera": facts.exif_camera if facts else None,
    }
    variables.update(extra or {})
    return variables


def render(template: str, variables: dict[str, Any], what: str, limit_bytes: int = PROMPT_LIMIT) -> str:
    try:
        return render_bounded(template, variables, limit_bytes)
    except TemplateLimitError as error:
        raise TemplateBoundError(f"{what}: {error}") from None
    except jinja2.UndefinedError as error:
        raise ProfileError(f"{what}: {error.message} (known variables: {', '.join(sorted(variables))})") from None
    except jinja2.TemplateError as error:
        raise ProfileError(f"{what}: {error}") from None
    except Exception as error:  # 1/0, 'a' + 1, int('x'): this template's error, never the intake's
        raise ProfileError(f"{what}: {type(error).__name__}: {error}") from None


def _blamed(error: TemplateBoundError, field_name: str, sidecars: SidecarSettings) -> ProfileError:
    """A bound broken by what a sidecar set parks that sidecar's jobs (fixing it releases them);
    else the image fails."""
    sources = sidecars.field_sources or {}
    culprit = sources.get(field_name) or sources.get("vars")
    if culprit is None:
        return error
    return SidecarError(culprit, [f"{field_name if culprit == sources.get(field_name) else 'vars'}: {error}"])


def resolve_profile(
    config: Config,
    relative_path: PurePosixPath,
    facts: ImageFacts | None,
    profile_name: str = "default",
    sidecars: SidecarSettings | None = None,
    caption: str | None = None,
) -> ResolvedProfile:
    sidecars = sidecars or SidecarSettings()
    profile_name = sidecars.profile or profile_name
    if profile_name not in config.profiles:
        known = ", ".join(sorted(config.profiles))
        message = (
            f"unknown profile {profile_name!r}{did_you_mean(profile_name, list(config.profiles))}; profiles: {known}"
        )
        if sidecars.profile_source:
            raise SidecarError(sidecars.profile_source, [f"profile: {message}"])
        raise ProfileError(message)
    fields = {**config.profile(profile_name), **(sidecars.overrides or {})}
    variables = template_variables(
        relative_path, facts, {"vars": sidecars.variables or {}, **(sidecars.variables or {}), "caption": caption}
    )
    try:
        prompt = render(fields["prompt"], variables, f"profile {profile_name} prompt")
    except TemplateBoundError as error:
        raise _blamed(error, "prompt", sidecars) from None
    if not prompt:
        raise ProfileError(f"profile {profile_name} prompt renders empty for {relative_path.name}")
    output_name = None
    if fields.get("output"):
        what = f"profile {profile_name} output"
        try:
            output_name = render(fields["output"], variables, what, OUTPUT_NAME_LIMIT)
            if Path(output_name).name != output_name or output_name in ("", ".", ".."):
                raise ProfileError(f"{what} {output_name!r} must be a plain file name")
            if not output_name.lower().endswith(".mp4"):
                output_name += ".mp4"
            if len(output_name.encode("utf-8", "surrogateescape")) > OUTPUT_NAME_LIMIT:
                raise TemplateBoundError(f"{what}: {output_name[:40]!r}... is longer than {OUTPUT_NAME_LIMIT} bytes")
        except TemplateBoundError as error:
            raise _blamed(error, "output", sidecars) from None
    params = {name: fields[name] for name in PARAMETER_NAMES}
    return ResolvedProfile(
        name=profile_name,
        prompt=prompt,
        params=params,
        output_name=output_name,
        fields=fields,
        sidecars=sidecars.sources,
    )
