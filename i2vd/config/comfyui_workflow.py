"""ComfyUI API workflows: which nodes receive i2vd's fields, and the prompt a job sends.

A workflow is the JSON that ComfyUI's "Export (API)" writes: `{node_id: {"class_type", "inputs",
"_meta": {"title"}}}`. A node receives one of i2vd's fields when its title is `I2VD:<field>` (the
input is found by name, FIELD_INPUTS) or `I2VD:<field>.<input>` (the input named); a node that
takes several (a KSampler) lists them with commas: `I2VD:seed,steps,guidance`. Everything that
can be wrong with that is found when the workflow is loaded (`load_workflow` → WorkflowError, a
config error), never in the middle of a job.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2vd.config.parameters import PARAMETER_NAMES

TITLE_PREFIX = "I2VD:"
# The inputs tried, by name, for a field whose title names none; a parameter not listed is tried by its own name.
KNOWN_INPUTS: dict[str, tuple[str, ...]] = {
    "image": ("image",),
    "prompt": ("text", "prompt"),
    "frames": ("length", "frames", "num_frames", "video_frames", "amount", "batch_size"),
    "fps": ("fps", "frame_rate"),
    "guidance": ("cfg", "guidance"),
    "seed": ("seed", "noise_seed"),
    "resolution": ("width", "height"),  # both, unless the title names one
    "output": ("filename_prefix",),
}
# What a node title may name: the image, the prompt, each of the job's parameters and the output's name.
FIELD_INPUTS: dict[str, tuple[str, ...]] = {
    name: KNOWN_INPUTS.get(name, (name,)) for name in ("image", "prompt", *PARAMETER_NAMES, "output")
}
SIZE_STEP = 16


class WorkflowError(ValueError):
    """The workflow cannot work with i2vd: a config error, said with the node and its title."""


@dataclass(frozen=True)
class Binding:
    """One node input that receives one of i2vd's fields."""

    node_id: str
    class_type: str
    title: str
    field: str
    input: str


@dataclass(frozen=True)
class Workflow:
    nodes: dict[str, Any]
    bindings: tuple[Binding, ...]
    source: str = "<workflow>"

    def output_nodes(self) -> tuple[str, ...]:
        return tuple(binding.node_id for binding in self.bindings if binding.field == "output")

    def build(self, values: dict[str, Any]) -> dict[str, Any]:
        """The API prompt with each bound input set from `values` (a field absent there is left as is)."""
        prompt = copy.deepcopy(self.nodes)
        for binding in self.bindings:
            if binding.field not in values:
                continue
            value = values[binding.field]
            if binding.field == "resolution":
                value = value[binding.input] if binding.input in ("width", "height") else value["short"]
            inputs = prompt[binding.node_id]["inputs"]
            inputs[binding.input] = _like(inputs.get(binding.input), value)
        return prompt


def _like(current: Any, value: Any) -> Any:
    """`value` in the type the workflow uses for this input (fps 8 → 8.0 where the node takes a float)."""
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_workflow(path: Path) -> Workflow:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise WorkflowError(f"cannot read the workflow {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise WorkflowError(f"the workflow {path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise WorkflowError(f"the workflow {path} is not JSON: {error}") from None
    return parse_workflow(data, source=str(path))


class WorkflowFile:
    """A workflow file, read again when it changes: an operator's fix (a new export) needs no reload."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._workflow: Workflow | None = None

    def current(self) -> Workflow:
        """The workflow as the file is now; WorkflowError when it cannot be read or used."""
        try:
            status = self.path.stat()
        except OSError as error:
            raise WorkflowError(f"cannot read the workflow {self.path}: {error.strerror}") from None
        if (status.st_mtime_ns, status.st_size) != self._stamp or self._workflow is None:
            self._workflow = load_workflow(self.path)
            self._stamp = (status.st_mtime_ns, status.st_size)
        return self._workflow


def parse_workflow(data: Any, source: str = "<workflow>") -> Workflow:
    """Check the workflow and find its I2VD: nodes; WorkflowError lists every problem at once."""
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(f"{source} is a UI workflow (Save), not an API one: use Workflow → Export (API)")
    if not isinstance(data, dict) or not data or not all(isinstance(node, dict) for node in data.values()):
        raise WorkflowError(f"{source} is not an API workflow ({{node id: {{class_type, inputs}}}})")
    problems: list[str] = []
    bindings: list[Binding] = []
    for node_id, node in data.items():
        title = str((node.get("_meta") or {}).get("title") or "")
        if not isinstance(node.get("inputs"), dict) or not isinstance(node.get("class_type"), str):
            problems.append(f"node {node_id} has no class_type or inputs")
            continue
        if not title.startswith(TITLE_PREFIX):
            continue
        for part in title[len(TITLE_PREFIX) :].split(","):  # one node may take several: I2VD:seed,steps,guidance
            found, problem = _bind(node_id, node, title, part.strip())
            bindings += found
            if problem:
                problems.append(problem)
    if not any(binding.field == "image" for binding in bindings):
        problems.append("no node is titled I2VD:image (give the LoadImage node that title, then Export (API) again)")
    if problems:
        raise WorkflowError(f"{source}: " + "; ".join(problems))
    return Workflow(nodes=data, bindings=tuple(bindings), source=source)


def _bind(node_id: str, node: dict, title: str, name: str) -> tuple[list[Binding], str | None]:
    field, _, named = name.partition(".")
    where = f"node {node_id} ({node['class_type']}, titled {title!r})"
    if field not in FIELD_INPUTS:
        return [], f"{where}: {field!r} is not a field i2vd sets (one of {', '.join(FIELD_INPUTS)})"
    inputs = node["inputs"]
    if named:
        wanted = [named]
        if named not in inputs:
            return [], f"{where}: has no input {named!r} (it has {', '.join(sorted(inputs)) or 'none'})"
    elif field == "resolution":
        wanted = [name for name in ("width", "height") if name in inputs]
        if len(wanted) != 2:
            return [], f"{where}: needs inputs width and height (it has {', '.join(sorted(inputs)) or 'none'})"
    else:
        wanted = [next((name for name in FIELD_INPUTS[field] if name in inputs), "")]
        if not wanted[0]:
            tried = ", ".join(FIELD_INPUTS[field])
            return [], f"{where}: has none of the inputs {tried}; name one in the title: I2VD:{field}.<input>"
    for input_name in wanted:
        if isinstance(inputs[input_name], list):
            return (
                [],
                f"{where}: input {input_name!r} is connected to node {inputs[input_name][0]}; i2vd sets only a value",
            )
    return [Binding(node_id, node["class_type"], title, field, input_name) for input_name in wanted], None


def size_for(resolution: str, image_size: tuple[int, int]) -> dict[str, int]:
    """Width and height: the short side from the resolution step, the long side from the image's aspect ratio."""
    short = int(resolution.rstrip("p"))
    width, height = image_size
    long_side = max(SIZE_STEP, round(short * max(width, height) / max(1, min(width, height)) / SIZE_STEP) * SIZE_STEP)
    if width >= height:
        return {"width": long_side, "height": short, "short": short}
    return {"width": short, "height": long_side, "short": short}


def default_seed(image: bytes) -> int:
    """The seed when the profile sets none: from the image's SHA-256, so a re-render is the same video."""
    return int(hashlib.sha256(image).hexdigest()[:8], 16)


def field_values(
    *,
    image_name: str,
    prompt: str,
    params: Mapping[str, Any],
    image_size: tuple[int, int],
    image: bytes,
    job_id: int | None,
) -> dict:
    """What each field sets, for one job (and for `probe -c`'s sample image); `params` are the job's parameters."""
    values = {"image": image_name, "prompt": prompt, **{name: params.get(name) for name in PARAMETER_NAMES}}
    values["seed"] = default_seed(image) if params.get("seed") is None else params["seed"]
    values["resolution"] = size_for(params["resolution"], image_size)
    values["output"] = f"i2vd/{job_id if job_id is not None else 'probe'}"
    return values


def describe_bindings(workflow: Workflow, values: dict[str, Any]) -> list[str]:
    """One line per bound input: node, class, title, input and the value it gets."""
    lines = []
    for binding in workflow.bindings:
        value = values.get(binding.field)
        if binding.field == "resolution" and isinstance(value, dict):
            value = value[binding.input] if binding.input in ("width", "height") else value["short"]
        value = _like(workflow.nodes[binding.node_id]["inputs"].get(binding.input), value)
        lines.append(f"node {binding.node_id} {binding.class_type} [{binding.title}]: {binding.input} = {value!r}")
    return lines
