"""The job's parameters, declared once: each one's name, type, range, default and description.

Everything else that lists them is made from PARAMETERS: the profile fields of the config
(i2vd.config.model: type, bounds, default, the reference's comment), a resolved profile's
parameters (i2vd.config.profiles), the request every backend receives
(i2vd.render.backends.base.VideoRequest), the fields a Gradio `server.inputs` mapping may name
(FIELDS; i2vd.render.backends.gradio_mapping matches app parameters to them) and the fields a
ComfyUI node title may name (i2vd.config.comfyui_workflow). A parameter added here is validated,
documented, journaled, sent to Gradio apps whose parameter has its name, and settable from a
workflow node titled `I2VD:<name>`; a backend that has a use for it reads it off the request.

A parameter's `minimum` and `maximum` are the /predict contract's (SPEC "The I2V server contract"),
which Gradio apps and the builtin engine keep too; `by_kind` gives a server kind a range of its own.
The profile model validates the widest range of all; i2vd.config.parameter_limits narrows it to what
every configured server takes (any job may go to any server), with a message naming the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RESOLUTIONS = ("256p", "512p", "768p", "1024p")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type  # int, float or str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # a str parameter: the values allowed
    optional: bool = False  # may be left empty (None): the server's own choice
    # server kind -> (minimum, maximum) where that kind's servers take another range than the contract's
    by_kind: dict[str, tuple[float | None, float | None]] = field(default_factory=dict, compare=False)
    short: str = ""  # its value in a one-line summary (`i2vd check`), e.g. "{}fps"; empty: "<name> <value>"

    def summary(self, value: Any) -> str:
        return (self.short or f"{self.name} {{}}").format(value)

    def bounds(self, kind: str) -> tuple[float | None, float | None]:
        """The range a server of this kind takes."""
        return self.by_kind.get(kind, (self.minimum, self.maximum))

    def widest(self) -> tuple[float | None, float | None]:
        """The range some server kind takes: what the profile model validates."""
        ranges = [(self.minimum, self.maximum), *self.by_kind.values()]
        lows, highs = [low for low, _ in ranges], [high for _, high in ranges]
        return (None if None in lows else min(lows)), (None if None in highs else max(highs))

    def python_type(self) -> Any:
        """The type a value has in a request: `int | None` for an optional int."""
        return self.type | None if self.optional else self.type


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("resolution", str, "512p", "output resolution", choices=RESOLUTIONS, short="{}"),
    # ComfyUI: the workflow decides (Wan 2.x 81 frames at 16 fps, LTX-Video up to 257 at 24-30,
    # HunyuanVideo-I2V 129, CogVideoX 49; distilled models take 4-8 steps); the maxima only stop a typo.
    # The builtin engine keeps the contract's ranges: it previews what the default /predict server would
    # be asked for, and its output stays a short clip (at most 32 frames of CPU work per video).
    Parameter("frames", int, 16, "number of frames", 8, 32, by_kind={"comfyui": (1, 1024)}, short="{}f"),
    Parameter("fps", int, 8, "frames per second", 4, 24, by_kind={"comfyui": (1, 60)}, short="{}fps"),
    Parameter("steps", int, 50, "diffusion steps", 10, 100, by_kind={"comfyui": (1, 200)}, short="{}st"),
    Parameter("guidance", float, 9.0, "guidance scale", 1.0, 20.0, short="g{:g}"),
    Parameter(
        "seed",
        int,
        None,
        "fixed seed; empty: the server's choice (sent to Gradio apps that take a seed; "
        "the /predict API has none; the builtin engine has no randomness)",
        minimum=0,
        optional=True,
        short="seed {}",
    ),
)
PARAMETER_NAMES = tuple(parameter.name for parameter in PARAMETERS)
BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}


def summary(params: dict[str, Any]) -> str:
    """`512p 16f 8fps 50st g9 seed 7`: a job's parameters on one line, in declared order; an empty one left out."""
    return " ".join(
        parameter.summary(params[parameter.name]) for parameter in PARAMETERS if params.get(parameter.name) is not None
    )


# What a server can be given, besides the parameters: the image, the rendered prompt, and the resolution
# as its position in RESOLUTIONS (what the /predict API and many Gradio apps take).
RESOLUTION_INDEX = "resolution_index"


def _fields() -> tuple[str, ...]:
    fields = ["image", "prompt"]
    for name in PARAMETER_NAMES:
        fields += [name, RESOLUTION_INDEX] if name == "resolution" else [name]
    return tuple(fields)


FIELDS = _fields()
