"""What a Gradio app says about itself: `read_app` turns its `GET /config` (every version) and, when usable,
`GET {prefix}/info` (4.x+: parameter names, python types, defaults) into an `App` with its endpoints;
`choose_endpoint` picks the one that takes an image and returns a video. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from i2vd.render.backends.base import ServerUnavailable

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
    queued: bool = True  # the dependency's own `queue` is not False: on a queued 3.x app it runs in the queue

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
    queue: bool = True  # 3.x: `enable_queue` (the app called .queue()); 4.x on always queue

    @property
    def is_v3(self) -> bool:
        return self.protocol == "ws"


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
        # Gradio 3.x queues only after .queue() (`enable_queue`); 4.0 and later always have their queue.
        bool(config.get("enable_queue", False)) if protocol == "ws" else True,
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
                queued=dependency.get("queue") is not False,
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
