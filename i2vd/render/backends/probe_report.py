"""What `i2vd probe` found at a server URL: its kind, protocol, endpoints, and whether i2vd can use it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from i2vd.render.backends.gradio_app import Endpoint
    from i2vd.render.backends.gradio_mapping import ParameterMap


@dataclass
class ProbeReport:
    url: str
    kind: str  # "gradio" | "predict" | "comfyui" | "unknown" | "unreachable"
    version: str | None = None
    protocol: str | None = None
    api_prefix: str | None = None
    source: str | None = None  # "info" | "config": where the chosen endpoint's parameters were read
    info_problem: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    endpoint: str | None = None  # the endpoint i2vd would call ("/generate", "fn_index 3")
    transport: str | None = None
    mapping: ParameterMap | None = None
    problem: str | None = None  # why i2vd cannot use this server as configured
    suggestion: str | None = None
    details: list[str] = field(default_factory=list)  # comfyui: devices, the workflow's I2VD: nodes

    @property
    def usable(self) -> bool:
        return self.problem is None and (self.kind in ("predict", "comfyui") or self.mapping is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "usable": self.usable,
            "version": self.version,
            "protocol": self.protocol,
            "api_prefix": self.api_prefix,
            "source": self.source,
            "info_problem": self.info_problem,
            "endpoints": [e.as_dict() for e in self.endpoints],
            "endpoint": self.endpoint,
            "transport": self.transport,
            "mapping": self.mapping.as_dict() if self.mapping else None,
            "problem": self.problem,
            "suggestion": self.suggestion,
            "details": self.details,
        }

    def render(self) -> str:
        lines = [f"{self.url}: {self._kind_text()}"]
        if self.kind == "gradio":
            sources = (
                "/info"
                if self.source == "info"
                else "/config" + (f"; /info: {self.info_problem}" if self.info_problem else "")
            )
            lines.append(f"endpoints (parameters read from {sources}):")
            for endpoint in self.endpoints:
                lines.extend(_endpoint_lines(endpoint))
        lines.extend(self.details)
        if self.mapping is not None:
            lines.append(f"i2vd would call {self.endpoint} ({self.transport}) with:")
            width = max((len(b.parameter.name) for b in self.mapping.bindings), default=0)
            for binding in self.mapping.bindings:
                lines.append(f"  {binding.parameter.name:<{width}}  <- {binding.describe()}")
            if self.mapping.unused_fields:
                lines.append(f"  (not sent: {', '.join(self.mapping.unused_fields)})")
        if self.problem:
            lines.append(f"i2vd cannot use it: {self.problem}")
        if self.suggestion:
            lines.append(f"suggestion: {self.suggestion}")
        return "\n".join(lines)

    def _kind_text(self) -> str:
        if self.kind == "gradio":
            prefix = f", API prefix {self.api_prefix}" if self.api_prefix else ""
            return f"Gradio {self.version} app (protocol {self.protocol}{prefix})"
        if self.kind == "predict":
            return "not a Gradio app, but an I2VGen-XL style /predict server"
        if self.kind == "comfyui":
            return f"ComfyUI {self.version}"
        if self.kind == "unreachable":
            return "no server answers"
        return "not a Gradio app and no /predict server"


def _endpoint_lines(endpoint: Endpoint) -> list[str]:
    visibility = "" if endpoint.public else ", hidden"
    lines = [f"  {endpoint.title} (fn_index {endpoint.fn_index}{visibility})"]
    for parameter in endpoint.parameters:
        default = f"default {json.dumps(parameter.default)}" if parameter.has_default else "required"
        label = f" {parameter.label!r}" if parameter.label and parameter.label != parameter.name else ""
        type_text = f" {parameter.python_type}" if parameter.python_type else ""
        lines.append(f"    {parameter.slot}: {parameter.name}{label} [{parameter.component}{type_text}] {default}")
    returns = ", ".join(f"{r.component}" + (f" {r.label!r}" if r.label else "") for r in endpoint.returns) or "nothing"
    lines.append(f"    returns: {returns}")
    return lines
