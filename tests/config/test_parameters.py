"""The job's parameters are declared once (i2vd/config/parameters.py) and every consumer follows that declaration.

The first tests hold each consumer's list against the declaration; the last adds a parameter to a copy of the
package, the way a developer would (one line in PARAMETERS), and sees it reach every consumer: the config's
validation and reference, a resolved profile, the backends' request, Gradio's matching and ComfyUI's titles.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path, PurePosixPath

import annotated_types
import pytest

from i2vd.config import parameters
from i2vd.config.checks import input_problems
from i2vd.config.comfyui_workflow import FIELD_INPUTS, field_values
from i2vd.config.load import ConfigError, parse_config
from i2vd.config.model import ProfileFields, SidecarFields
from i2vd.config.profiles import resolve_profile
from i2vd.render.backends.base import VideoRequest, request_parameters
from i2vd.render.backends.gradio_mapping import SYNONYMS

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = "state_dir: state\noutput_dir: out\nwatch: [{path: in}]\n"


def _bounds(info) -> tuple[float | None, float | None]:
    low = next((item.ge for item in info.metadata if isinstance(item, annotated_types.Ge)), None)
    high = next((item.le for item in info.metadata if isinstance(item, annotated_types.Le)), None)
    return low, high


def test_the_profile_fields_are_the_declared_parameters_with_their_type_range_and_default() -> None:
    for model in (ProfileFields, SidecarFields):
        names = list(model.model_fields)
        assert names[1 : 1 + len(parameters.PARAMETERS)] == list(parameters.PARAMETER_NAMES)  # after the prompt
    for parameter in parameters.PARAMETERS:
        info = ProfileFields.model_fields[parameter.name]
        assert info.default == parameter.default and info.description.startswith(parameter.description)
        assert _bounds(info) == parameter.widest()  # what a server of some kind takes; the servers' own: below
        if parameter.choices:
            assert typing.get_args(info.annotation) == parameter.choices


def test_a_value_outside_a_declared_range_is_refused_with_its_place(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    bounded = [parameter for parameter in parameters.PARAMETERS if parameter.maximum is not None]
    assert bounded
    profile = ", ".join(f"{parameter.name}: {parameter.maximum + 1}" for parameter in bounded)
    with pytest.raises(ConfigError) as raised:
        parse_config(CONFIG + f"profiles: {{default: {{{profile}}}}}\n", base_dir=tmp_path)
    problems = raised.value.problems
    assert len(problems) == len(bounded)
    for parameter in bounded:  # a range of the server kind's own names the server (the builtin engine here)
        expected = f"profiles.default.{parameter.name}: {parameter.maximum + 1} is above {parameter.maximum:g}"
        ranged = f"{expected}, the most the builtin engine takes ("
        assert expected in problems or (parameter.by_kind and any(p.startswith(ranged) for p in problems))


def test_a_server_kind_range_is_declared_beside_the_parameter_and_the_model_takes_the_widest() -> None:
    frames = parameters.BY_NAME["frames"]
    assert (frames.minimum, frames.maximum) == (8, 32)  # the /predict contract: Gradio and builtin keep it
    assert frames.bounds("predict") == frames.bounds("gradio") == frames.bounds("builtin") == (8, 32)
    assert frames.bounds("comfyui") == (1, 1024) == frames.widest()
    assert parameters.BY_NAME["fps"].bounds("comfyui") == (1, 60)
    assert _bounds(ProfileFields.model_fields["frames"]) == (1, 1024)
    assert ProfileFields.model_fields["frames"].description == "number of frames (8 to 32; ComfyUI servers: 1 to 1024)"


def test_a_resolved_profile_and_a_request_carry_every_declared_parameter(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    config = parse_config(CONFIG, base_dir=tmp_path)
    resolved = resolve_profile(config, PurePosixPath("a/b.jpg"), None)
    assert resolved.params == {parameter.name: parameter.default for parameter in parameters.PARAMETERS}
    request_fields = {field.name for field in dataclasses.fields(VideoRequest)}
    assert request_fields == {
        "image",
        "image_name",
        "prompt",
        "reply_dir",
        "job_id",
        "key",
        "source_path",
        "on_sent",  # the worker's hook, called once the request has left (jobs/beside.py): no parameter
        *parameters.PARAMETER_NAMES,
    }
    request = VideoRequest(image=b"x", image_name="b.jpg", prompt="p", **request_parameters(resolved.params))
    assert {name: getattr(request, name) for name in parameters.PARAMETER_NAMES} == resolved.params


def test_the_fields_servers_are_given_are_the_parameters_with_the_image_and_prompt() -> None:
    fields = parameters.FIELDS
    assert [field for field in fields if field != parameters.RESOLUTION_INDEX] == [
        "image",
        "prompt",
        *parameters.PARAMETER_NAMES,
    ]
    assert fields.index(parameters.RESOLUTION_INDEX) == fields.index("resolution") + 1
    assert all(input_problems({field: field}) == [] for field in parameters.FIELDS)
    assert input_problems({"x": "colour"}) == [
        f"inputs.x: 'colour' is not an i2vd field (one of {', '.join(parameters.FIELDS)})"
    ]
    assert tuple(SYNONYMS) == parameters.FIELDS and all(name in SYNONYMS[name] for name in parameters.FIELDS)
    assert tuple(FIELD_INPUTS) == ("image", "prompt", *parameters.PARAMETER_NAMES, "output")
    values = field_values(
        image_name="n.png", prompt="p", params=request_parameters({}), image_size=(64, 48), image=b"i", job_id=1
    )
    assert set(values) == set(FIELD_INPUTS)


ADDED = '    Parameter("motion", int, 127, "how much the camera moves", 1, 255),\n'

CHECK_THE_COPY = """
import dataclasses, json, sys
from pathlib import Path, PurePosixPath

import i2vd
from i2vd.config.comfyui_workflow import field_values, parse_workflow
from i2vd.config.load import ConfigError, parse_config
from i2vd.config.profiles import resolve_profile
from i2vd.config.reference import reference
from i2vd.render.backends.base import VideoRequest, request_parameters
from i2vd.render.backends.gradio_app import Endpoint, Parameter
from i2vd.render.backends.gradio_mapping import build_mapping

base = Path(sys.argv[1])
found = {"package": i2vd.__file__}
config = parse_config(sys.argv[2], base_dir=base)
resolved = resolve_profile(config, PurePosixPath("b.jpg"), None)
found["params"] = resolved.params
try:
    parse_config(sys.argv[2] + "profiles: {default: {motion: 300}}\\n", base_dir=base)
except ConfigError as error:
    found["problems"] = error.problems
found["reference"] = [line.strip() for line in reference().splitlines() if "motion" in line]
request = VideoRequest(image=b"x", image_name="b.jpg", prompt="p", **request_parameters(resolved.params))
found["request"] = request.motion
found["old_job"] = request_parameters({"resolution": "256p", "frames": 8, "fps": 4, "steps": 10, "guidance": 2.0})
image = Parameter(0, "image", None, "image")
motion = Parameter(1, "motion", "Motion", "slider", "int")
video = Parameter(0, "video", None, "video")
endpoint = Endpoint("predict", 0, 2, (image, motion), (video,), 1)
mapping = build_mapping(endpoint, None)
found["gradio"] = [[binding.parameter.name, binding.field] for binding in mapping.bindings]
found["gradio_data"] = mapping.arguments(request, "IMG")
found["gradio_unused"] = list(mapping.unused_fields)
workflow = parse_workflow({
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}, "_meta": {"title": "I2VD:image"}},
    "2": {"class_type": "Camera", "inputs": {"motion": 1.0}, "_meta": {"title": "I2VD:motion"}},
})
values = field_values(image_name="x.png", prompt="p", params=resolved.params, image_size=(64, 48), image=b"i", job_id=3)
found["comfyui"] = workflow.build(values)["2"]["inputs"]
print(json.dumps(found))
"""


def test_a_parameter_added_to_the_declaration_reaches_every_consumer(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(REPO_ROOT / "i2vd", copy / "i2vd", ignore=shutil.ignore_patterns("__pycache__"))
    declaration = copy / "i2vd" / "config" / "parameters.py"
    text = declaration.read_text(encoding="utf-8")
    anchor = "PARAMETERS: tuple[Parameter, ...] = (\n"
    assert text.count(anchor) == 1
    declaration.write_text(text.replace(anchor, anchor + ADDED), encoding="utf-8")
    (tmp_path / "in").mkdir()
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK_THE_COPY), str(tmp_path), CONFIG],
        cwd=tmp_path,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["package"] == str(copy / "i2vd" / "__init__.py")
    assert found["params"]["motion"] == 127  # the declared default, in a resolved profile (journaled with the job)
    assert found["problems"] == ["profiles.default.motion: 300 is above 255"]
    assert any(line.startswith("motion: 127") and "1 to 255" in line for line in found["reference"])
    assert found["request"] == 127
    assert found["old_job"]["motion"] == 127  # a job journaled before the parameter existed gets its default
    assert found["gradio"] == [["image", "image"], ["motion", "motion"]]  # matched by its name
    assert found["gradio_data"] == ["IMG", 127]
    assert "motion" not in found["gradio_unused"]
    assert found["comfyui"] == {"motion": 127.0}  # set from a node titled I2VD:motion, in the input's type


def test_the_one_line_summary_shows_every_declared_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """`i2vd check`'s PARAMETERS column: each parameter in declared order, a new one too; an empty one left out."""
    defaults = {parameter.name: parameter.default for parameter in parameters.PARAMETERS}
    assert parameters.summary(defaults) == "512p 16f 8fps 50st g9"
    assert parameters.summary({**defaults, "seed": 0, "guidance": 7.5}) == "512p 16f 8fps 50st g7.5 seed 0"
    motion = parameters.Parameter("motion_bucket", int, 127, "motion bucket id", 1, 255)
    monkeypatch.setattr(parameters, "PARAMETERS", (*parameters.PARAMETERS, motion))
    assert parameters.summary({**defaults, "motion_bucket": 127}) == "512p 16f 8fps 50st g9 motion_bucket 127"
