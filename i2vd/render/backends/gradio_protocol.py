"""What a Gradio app says about itself, and how i2vd's fields fill its parameters: no I/O here.

`read_app` turns the app's `GET /config` (every version) and, when usable, `GET {prefix}/info`
(4.x+: parameter names, python types, defaults) into an `App` with its endpoints; `choose_endpoint`
picks the one that takes an image and returns a video; `build_mapping` binds each of its
parameters to an i2vd field, a constant from the config, or the app's own default. Positions
("slots") are those of the endpoint's full input list in /config, so that components hidden from
the API (gr.State) keep their place in every protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from i2vd.config.model import FIELDS, input_problems
from i2vd.render.backends.base import RESOLUTIONS, ServerUnavailable, VideoRequest

SYNONYMS = {
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
NUMERIC_COMPONENTS = {"slider", "number"}
VIDEO_OUTPUTS = ("video", "playablevideo")
FILE_OUTPUTS = ("file", "downloadbutton")
STATE_COMPONENTS = {"state"}
TEXT_COMPONENTS = {"textbox", "text", "textarea"}


class AppMismatch(ServerUnavailable):
    """The app answers but cannot serve i2vd as configured (no fitting endpoint, an unmapped parameter).

    A ServerUnavailable: every job would fail the same way, so the queue pauses (using no attempts)
    with this message in `status` until the app or the config changes; discovery is then re-done.
    """


@dataclass(frozen=True)
class Parameter:
    slot: int  # position in the endpoint's full input (or output) list
    name: str
    label: str | None
    component: str  # as the app names it: "Image", "Slider" (from /info) or "image", "slider" (from /config)
    python_type: str = ""
    has_default: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None

    @property
    def kind(self) -> str:
        return self.component.lower()

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_COMPONENTS or self.python_type in ("int", "float")

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "name": self.name,
            "label": self.label,
            "component": self.component,
            "type": self.python_type,
            "has_default": self.has_default,
            "default": self.default,
        }


@dataclass(frozen=True)
class Endpoint:
    api_name: str | None  # without the leading "/"; None: the app gave it no name (reachable by fn_index only)
    fn_index: int
    input_count: int
    parameters: tuple[Parameter, ...]  # the inputs the API shows (no gr.State)
    returns: tuple[Parameter, ...]
    output_count: int
    public: bool = True
    source: str = "config"  # "info" when /info gave its parameters' names, types and defaults

    @property
    def title(self) -> str:
        return f"/{self.api_name}" if self.api_name else f"fn_index {self.fn_index}"

    @property
    def takes_image(self) -> bool:
        return any(p.kind == "image" for p in self.parameters)

    @property
    def video_slot(self) -> int | None:
        for kinds in (VIDEO_OUTPUTS, FILE_OUTPUTS):
            for output in self.returns:
                if output.kind in kinds:
                    return output.slot
        return None

    @property
    def returns_video(self) -> bool:
        return any(output.kind in VIDEO_OUTPUTS for output in self.returns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_name": self.title if self.api_name else None,
            "fn_index": self.fn_index,
            "public": self.public,
            "source": self.source,
            "parameters": [p.as_dict() for p in self.parameters],
            "returns": [r.as_dict() for r in self.returns],
        }


@dataclass(frozen=True)
class App:
    version: str
    protocol: str  # "ws" for 3.x (no protocol key), else the config's "sse", "sse_v1" ... "sse_v3"
    api_prefix: str  # "" before 5.0, "/gradio_api" from 5.0
    endpoints: tuple[Endpoint, ...]
    source: str  # "info" or "config": where parameter names and defaults came from
    info_problem: str | None = None  # why /info was not used

    @property
    def is_v3(self) -> bool:
        return self.protocol == "ws"


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


def normalize(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (text or "").lower()).strip("_")


# -- reading /config and /info ---------------------------------------------------------


def read_app(config: Mapping[str, Any], info: Any = None, info_problem: str | None = None) -> App:
    """Endpoints from /config, with names, types and defaults from /info where it lists the endpoint."""
    protocol = str(config.get("protocol") or "ws")
    prefix = str(config.get("api_prefix") or "").rstrip("/")
    endpoints = endpoints_from_config(config)
    named = info.get("named_endpoints") if isinstance(info, dict) else None
    if info is not None and not isinstance(named, dict):
        info_problem = info_problem or "its answer has no named_endpoints"
    source = "config"
    if isinstance(named, dict) and named:
        enriched = [_with_info(endpoint, named.get(endpoint.title)) for endpoint in endpoints]
        if any(new is not old for new, old in zip(enriched, endpoints)):
            endpoints, source = tuple(enriched), "info"
        else:
            info_problem = "it lists no endpoint that /config has"
    elif isinstance(named, dict):
        info_problem = "it lists no named endpoint (show_api=False?)"
    return App(
        str(config.get("version") or "unknown").strip(),
        protocol,
        prefix,
        endpoints,
        source,
        None if source == "info" else info_problem,
    )


def endpoints_from_config(config: Mapping[str, Any]) -> tuple[Endpoint, ...]:
    components = {c.get("id"): c for c in config.get("components") or [] if isinstance(c, dict)}
    endpoints = []
    for index, dependency in enumerate(config.get("dependencies") or []):
        if not isinstance(dependency, dict) or dependency.get("backend_fn") is False:
            continue
        inputs, outputs = dependency.get("inputs") or [], dependency.get("outputs") or []
        api_name = dependency.get("api_name")
        visibility = dependency.get("api_visibility", "public")
        public = bool(api_name) and visibility == "public" and dependency.get("show_api", True) is not False
        endpoints.append(
            Endpoint(
                api_name=str(api_name).lstrip("/") if api_name else None,
                fn_index=int(dependency.get("id", index)),
                input_count=len(inputs),
                parameters=tuple(
                    _config_parameter(slot, components.get(cid), cid)
                    for slot, cid in enumerate(inputs)
                    if not _skip_api(components.get(cid))
                ),
                returns=tuple(
                    _config_parameter(slot, components.get(cid), cid)
                    for slot, cid in enumerate(outputs)
                    if not _skip_api(components.get(cid))
                ),
                output_count=len(outputs),
                public=public,
            )
        )
    return tuple(endpoints)


def _skip_api(component: dict | None) -> bool:
    return component is not None and (bool(component.get("skip_api")) or component.get("type") in STATE_COMPONENTS)


def _config_parameter(slot: int, component: dict | None, component_id: Any) -> Parameter:
    component = component or {}
    props = component.get("props") or {}
    kind = str(component.get("type") or "unknown")
    label = props.get("label")
    value = props.get("value")
    choices = props.get("choices")
    python_type = {
        "slider": "float",
        "number": "float",
        "textbox": "str",
        "checkbox": "bool",
        "image": "filepath",
        "dropdown": "str",
        "radio": "str",
    }.get(kind, "")
    if kind == "number" and props.get("precision") == 0:
        python_type = "int"
    return Parameter(
        slot,
        normalize(label) or f"{kind}_{component_id}",
        label,
        kind,
        python_type,
        value is not None,
        value,
        tuple(choices) if isinstance(choices, list) else None,
    )


def _with_info(endpoint: Endpoint, described: Any) -> Endpoint:
    """The endpoint with /info's names and defaults, when /info lists the same visible inputs."""
    if not isinstance(described, dict):
        return endpoint
    parameters = described.get("parameters")
    if not isinstance(parameters, list) or len(parameters) != len(endpoint.parameters):
        return endpoint
    merged = []
    for known, item in zip(endpoint.parameters, parameters):
        if not isinstance(item, dict):
            return endpoint
        schema = item.get("type") if isinstance(item.get("type"), dict) else {}
        python_type = (
            (item.get("python_type") or {}).get("type", known.python_type)
            if isinstance(item.get("python_type"), dict)
            else known.python_type
        )
        has_default = item.get("parameter_has_default", known.has_default)
        merged.append(
            Parameter(
                slot=known.slot,
                name=str(item.get("parameter_name") or normalize(item.get("label")) or known.name),
                label=item.get("label", known.label),
                component=str(item.get("component") or known.component),
                python_type=str(python_type),
                has_default=bool(has_default),
                default=item.get("parameter_default", known.default) if has_default else None,
                choices=tuple(schema["enum"]) if isinstance(schema.get("enum"), list) else known.choices,
            )
        )
    return Endpoint(
        endpoint.api_name,
        endpoint.fn_index,
        endpoint.input_count,
        tuple(merged),
        endpoint.returns,
        endpoint.output_count,
        endpoint.public,
        source="info",
    )


# -- choosing an endpoint and mapping its parameters -----------------------------------


def choose_endpoint(app: App, api_name: str | None) -> Endpoint:
    if api_name:
        wanted = api_name.lstrip("/")
        for endpoint in app.endpoints:
            if endpoint.api_name == wanted:
                return endpoint
        names = ", ".join(e.title for e in app.endpoints if e.api_name) or "none"
        raise AppMismatch(f"the Gradio app has no endpoint /{wanted} (its endpoints: {names})")
    fitting = [e for e in app.endpoints if e.takes_image and e.returns_video]
    if len(fitting) > 1:
        fitting = [e for e in fitting if e.public] or fitting
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        raise AppMismatch(
            "no endpoint of the Gradio app takes an image and returns a video "
            f"(endpoints: {', '.join(e.title for e in app.endpoints) or 'none'}); set server.api_name"
        )
    raise AppMismatch(
        f"several endpoints take an image and return a video ({', '.join(e.title for e in fitting)}); "
        "set server.api_name to one of them"
    )


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
    unused = tuple(
        f
        for f in FIELDS
        if f not in taken
        and f not in ("resolution_index", "seed")
        and not (f == "resolution" and "resolution_index" in taken)
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


# -- messages on the wire ------------------------------------------------------------------


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event, data) for each server-sent event; event is "message" when the server names none."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


def progress_message(message: Mapping[str, Any]) -> str | None:
    """Queue position or progress, in words, from a queue message (3.x websocket or 4.x+ SSE)."""
    kind = message.get("msg")
    if kind == "estimation":
        rank, size, eta = message.get("rank"), message.get("queue_size"), message.get("rank_eta")
        if rank is None:
            return None
        text = f"queue position {int(rank) + 1}" + (f" of {size}" if size else "")
        return text + (f", eta {eta:.0f} s" if isinstance(eta, (int, float)) else "")
    if kind == "process_starts":
        eta = message.get("eta")
        return "processing" + (f", eta {eta:.0f} s" if isinstance(eta, (int, float)) else "")
    if kind == "progress":
        for unit in message.get("progress_data") or []:
            if not isinstance(unit, dict):
                continue
            desc = f" ({unit['desc']})" if unit.get("desc") else ""
            if isinstance(unit.get("progress"), (int, float)):
                return f"progress {unit['progress'] * 100:.0f}%{desc}"
            if isinstance(unit.get("index"), (int, float)) and unit.get("length"):
                return f"progress {unit['index']}/{unit['length']} {unit.get('unit') or 'steps'}{desc}"
    return None


def error_text(output: Any) -> str | None:
    """The app's error message from a failed process_completed or an /call error event; None: hidden."""
    if isinstance(output, dict):
        output = output.get("error", output.get("message"))
    if output is None or output == "":
        return None
    if not isinstance(output, str):
        return json.dumps(output)
    if len(output) >= 2 and output[0] == output[-1] == "'":
        return output[1:-1]  # Gradio 3 and 4 send gr.Error("bad") as "'bad'"
    return output
