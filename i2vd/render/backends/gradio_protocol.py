"""Messages on a Gradio wire (server-sent events, progress, errors), and where the app and mapping names are.

What the app says about itself is in gradio_app (`read_app`, `choose_endpoint`); how i2vd's fields fill its
parameters is in gradio_mapping (`build_mapping`). Both are re-exported here. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from i2vd.config.checks import input_problems
from i2vd.render.backends.gradio_app import (
    FILE_OUTPUTS,
    NUMERIC_COMPONENTS,
    STATE_COMPONENTS,
    TEXT_COMPONENTS,
    VIDEO_OUTPUTS,
    App,
    AppMismatch,
    Endpoint,
    Parameter,
    choose_endpoint,
    endpoints_from_config,
    normalize,
    read_app,
)
from i2vd.render.backends.gradio_mapping import (
    SYNONYMS,
    Binding,
    ParameterMap,
    build_mapping,
    field_value,
    resolution_value,
)

__all__ = [
    "App",
    "AppMismatch",
    "Binding",
    "Endpoint",
    "FILE_OUTPUTS",
    "NUMERIC_COMPONENTS",
    "Parameter",
    "ParameterMap",
    "STATE_COMPONENTS",
    "SYNONYMS",
    "TEXT_COMPONENTS",
    "VIDEO_OUTPUTS",
    "build_mapping",
    "choose_endpoint",
    "endpoints_from_config",
    "error_text",
    "field_value",
    "input_problems",
    "iter_sse",
    "normalize",
    "progress_message",
    "read_app",
    "resolution_value",
]

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
