"""How i2vd's fields fill a Gradio endpoint's parameters: `build_mapping` binds each to an i2vd field, a constant
from the config, or the app's own default. Positions ("slots") are those of the endpoint's full input list in /config,
so that components hidden from the API (gr.State) keep their place in every protocol. No I/O here."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from i2vd.config.checks import input_problems
from i2vd.config.parameters import BY_NAME, FIELDS, RESOLUTION_INDEX
from i2vd.render.backends.base import RESOLUTIONS, VideoRequest
from i2vd.render.backends.gradio_app import (
    TEXT_COMPONENTS,
    AppMismatch,
    Endpoint,
    Parameter,
    normalize,
)

# Names and labels of app parameters that mean one of i2vd's fields; any field is also matched by its own name.
KNOWN_NAMES = {
    "image": {
        "image",
        "img",
        "input_image",
        "image_input",
        "init_image",
        "input_img",
        "source_image",
        "start_image",
        "first_frame",
        "input_image_path",
        "picture",
        "photo",
    },
    "prompt": {
        "prompt",
        "text",
        "caption",
        "text_prompt",
        "positive_prompt",
        "prompt_text",
        "input_text",
        "description",
    },
    "resolution": {"resolution", "res", "video_resolution", "output_resolution"},
    "resolution_index": {"resolution_index", "resolution_id"},
    "frames": {"frames", "num_frames", "video_length", "n_frames", "frame_count", "number_of_frames", "nframes"},
    "fps": {"fps", "fps_id", "frame_rate", "framerate", "target_fps", "frames_per_second"},
    "steps": {
        "steps",
        "num_inference_steps",
        "sampling_steps",
        "num_steps",
        "inference_steps",
        "ddim_steps",
        "sample_steps",
    },
    "guidance": {"guidance", "guidance_scale", "cfg", "cfg_scale", "text_cfg_scale", "unconditional_guidance_scale"},
    "seed": {"seed", "manual_seed"},
}
SYNONYMS = {name: KNOWN_NAMES.get(name, set()) | {name} for name in FIELDS}


@dataclass(frozen=True)
class Binding:
    parameter: Parameter
    field: str | None  # an i2vd field, or None for a constant
    value: Any = None  # the constant, when field is None
    origin: str = "auto"  # "config" (server.inputs), "auto" (name match), "default" (the app's own default)

    def describe(self) -> str:
        if self.field:
            return self.field
        return (
            f"{self.origin} {json.dumps(self.value)}"
            if self.origin == "default"
            else f"constant {json.dumps(self.value)}"
        )


@dataclass(frozen=True)
class ParameterMap:
    endpoint: Endpoint
    bindings: tuple[Binding, ...]
    unused_fields: tuple[str, ...] = field(default=())

    def arguments(self, request: VideoRequest, image: Any) -> list[Any]:
        """The endpoint's full input list for one request; `image` is the protocol's image value."""
        data: list[Any] = [None] * self.endpoint.input_count
        for binding in self.bindings:
            data[binding.parameter.slot] = (
                binding.value
                if binding.field is None
                else field_value(binding.field, binding.parameter, request, image)
            )
        return data

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.title,
            "fn_index": self.endpoint.fn_index,
            "inputs": [
                {
                    "parameter": b.parameter.name,
                    "label": b.parameter.label,
                    "slot": b.parameter.slot,
                    "field": b.field,
                    "value": b.value,
                    "origin": b.origin,
                }
                for b in self.bindings
            ],
            "unused_fields": list(self.unused_fields),
        }


def field_value(name: str, parameter: Parameter, request: VideoRequest, image: Any) -> Any:
    if name == "image":
        return image
    if name == "resolution_index":
        return RESOLUTIONS.index(request.resolution)
    if name == "resolution":
        return resolution_value(parameter, request.resolution)
    if name == "seed" and request.seed is None:
        return parameter.default if parameter.has_default else 0
    value = getattr(request, name)
    return int(value) if parameter.python_type == "int" and isinstance(value, float) and value.is_integer() else value


def resolution_value(parameter: Parameter, resolution: str) -> Any:
    """ "512p" as the parameter wants it: an index for a number, a matching choice ("512x512"), or as is."""
    if parameter.numeric:
        return RESOLUTIONS.index(resolution)
    choices = [choice[-1] if isinstance(choice, (list, tuple)) else choice for choice in parameter.choices or ()]
    if not choices or resolution in choices:
        return resolution
    number = resolution.rstrip("p")
    for choice in choices:
        if number in re.findall(r"\d+", str(choice)):
            return choice
    return resolution


def build_mapping(endpoint: Endpoint, inputs: Mapping[Any, Any] | None) -> ParameterMap:
    """Bind every visible parameter: server.inputs first, then by component type (the one image input, the
    one free-text box), then by name or label, then the app's own defaults."""
    problems = input_problems(inputs)
    if problems:
        raise AppMismatch("; ".join(problems))
    chosen: dict[int, Binding] = {}
    for key, target in (inputs or {}).items():
        parameter = _find_parameter(endpoint, key)
        if isinstance(target, str):
            chosen[parameter.slot] = Binding(parameter, target, origin="config")
        else:
            chosen[parameter.slot] = Binding(parameter, None, target["value"], origin="config")
    taken = {b.field for b in chosen.values() if b.field}
    for parameter in _by_type(endpoint, chosen, taken):
        chosen[parameter.slot] = binding = Binding(parameter, "image" if parameter.kind == "image" else "prompt")
        taken.add(binding.field)
    for parameter in endpoint.parameters:
        if parameter.slot in chosen:
            continue
        match = _auto_field(parameter, taken)
        if match:
            chosen[parameter.slot] = Binding(parameter, match, origin="auto")
            taken.add(match)
    unmapped = []
    for parameter in endpoint.parameters:
        if parameter.slot not in chosen:
            if parameter.has_default:
                chosen[parameter.slot] = Binding(parameter, None, parameter.default, origin="default")
            else:
                unmapped.append(parameter)
    if unmapped:
        listed = ", ".join(
            f"{p.name!r} ({p.component}{', label ' + repr(p.label) if p.label and p.label != p.name else ''})"
            for p in unmapped
        )
        raise AppMismatch(
            f"{endpoint.title}: parameter(s) {listed} match no i2vd field and have no default; "
            f"map them in server.inputs (a field, or {{value: <constant>}})"
        )
    if "image" not in taken:
        raise AppMismatch(
            f"{endpoint.title}: no parameter takes the image; map one in server.inputs "
            f"(e.g. {{{endpoint.parameters[0].name if endpoint.parameters else 0}: image}})"
        )
    if endpoint.video_slot is None:
        raise AppMismatch(f"{endpoint.title} returns no video or file")
    unused = tuple(  # the fields the app takes none of: an optional parameter (the seed) is not missed
        f
        for f in FIELDS
        if f not in taken
        and f != RESOLUTION_INDEX
        and not (f in BY_NAME and BY_NAME[f].optional)
        and not (f == "resolution" and RESOLUTION_INDEX in taken)
    )
    return ParameterMap(endpoint, tuple(chosen[slot] for slot in sorted(chosen)), unused)


def _find_parameter(endpoint: Endpoint, key: Any) -> Parameter:
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        position = int(key)
        if 0 <= position < len(endpoint.parameters):
            return endpoint.parameters[position]
        raise AppMismatch(
            f"server.inputs: {endpoint.title} has {len(endpoint.parameters)} parameters, no position {position}"
        )
    for parameter in endpoint.parameters:
        if key == parameter.name:
            return parameter
    for parameter in endpoint.parameters:
        if normalize(key) in (normalize(parameter.name), normalize(parameter.label)):
            return parameter
    names = ", ".join(p.name for p in endpoint.parameters)
    raise AppMismatch(f"server.inputs: {endpoint.title} has no parameter {key!r} (its parameters: {names})")


def _by_type(endpoint: Endpoint, chosen: Mapping[int, Binding], taken: set[str]) -> list[Parameter]:
    """The one image input (for the image) and the one free-text box (for the prompt), whatever their labels.

    Labels are not always English (VGen's I2VGen-XL app: '图片输入', '文本描述') nor present, so the
    component type decides first; a text box whose name or label says it is something else (a
    negative prompt, a seed typed as text) is no free-text prompt box. With two candidates of a
    kind, neither is taken here: names and labels decide (`_auto_field`).
    """
    free = [p for p in endpoint.parameters if p.slot not in chosen]
    found = []
    images = [p for p in free if p.kind == "image"]
    if "image" not in taken and len(images) == 1:
        found.append(images[0])
    texts = [p for p in free if p.kind in TEXT_COMPONENTS and not _other_text(p)]
    if "prompt" not in taken and len(texts) == 1:
        found.append(texts[0])
    return found


def _other_text(parameter: Parameter) -> bool:
    """A text box that its name or label gives another use than the prompt."""
    for text in (parameter.name, parameter.label):
        name = normalize(text)
        if "negative" in name or any(name in names for field_name, names in SYNONYMS.items() if field_name != "prompt"):
            return True
    return False


def _auto_field(parameter: Parameter, taken: set[str]) -> str | None:
    for text in (parameter.name, parameter.label):
        name = normalize(text)
        for field_name, names in SYNONYMS.items():
            if name in names and field_name not in taken:
                if field_name == "image" and parameter.kind not in ("image", "file", "unknown"):
                    continue
                if field_name == "resolution" and parameter.numeric:
                    return "resolution_index" if "resolution_index" not in taken else None
                return field_name
    return None
