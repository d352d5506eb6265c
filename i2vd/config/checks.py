"""The config's validators: i2vd's own wording for each problem, and the annotated types the models declare."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    PlainValidator,
    Strict,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from i2vd.config.parameters import FIELDS  # what a server.inputs mapping may name (an app parameter gets one)


def problem(message: str, key: str | None = None) -> PydanticCustomError:
    """A validation error with i2vd's own wording; `key` names the field below the one validated."""
    return PydanticCustomError("i2vd", "{message}", {"message": message, **({"key": key} if key else {})})


def _template(text: str) -> str:
    import jinja2.sandbox  # here, not at the top: `i2vd status` loads the config and renders nothing

    try:
        jinja2.sandbox.SandboxedEnvironment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise problem(f"template error: {error.message} (line {error.lineno})") from None
    return text


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise problem(f"{value!r} is not an http:// or https:// URL")
    return value


def _gradio_inputs(value: dict | None) -> dict | None:
    problems = input_problems(value) if value is not None else []
    if problems:
        raise problem("; ".join(problems))
    return value


def input_problems(inputs: Any) -> list[str]:
    """What is wrong with a server.inputs mapping's shape (the app is not needed to tell)."""
    if inputs is None:
        return []
    if not isinstance(inputs, dict):
        return [
            (
                f"inputs must be a mapping of parameter name or position "
                f"to a field or {{value: ...}}, not {type(inputs).__name__}"
            )
        ]
    problems = []
    for key, target in inputs.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            problems.append(f"inputs key {key!r} must be a parameter name or a position")
        elif isinstance(target, str):
            if target not in FIELDS:
                problems.append(f"inputs.{key}: {target!r} is not an i2vd field (one of {', '.join(FIELDS)})")
        elif not (isinstance(target, dict) and list(target) == ["value"]):
            problems.append(f"inputs.{key}: must be a field name or {{value: <constant>}}, not {target!r}")
    return problems


def _auto_or_bool(value: Any) -> Any:
    if value == "auto" and isinstance(value, str) or isinstance(value, bool):
        return value
    if value is None:
        raise problem("is empty, expected auto, true or false")
    raise problem(f"{value!r} is not one of auto, true, false")


def _folder(value: Any, info: ValidationInfo) -> Any:
    """A path from the file, taken relative to the config file's folder (`base_dir` in the context)."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise problem(f"{value!r} is not a string" if value is not None else "is empty, expected a string")
    base = (info.context or {}).get("base_dir") or Path.cwd()
    return (Path(base) / os.path.expanduser(value)).resolve()


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Text = Annotated[str, Strict()]
Mapping = Annotated[dict, Strict()]
Template = Annotated[str, Strict(), PlainValidator(lambda value: _template(_text(value)))]
Url = Annotated[str, Strict(), PlainValidator(lambda value: _http_url(_text(value)))]
AutoOrBool = Annotated[Any, PlainValidator(_auto_or_bool)]
Folder = Annotated[Path, BeforeValidator(_folder)]


def _windows(value: Any) -> list[str] | None:
    if value is None:
        return None  # no `schedule:`: always open (and `i2vd status` never imports the schedule module)
    from i2vd.config.schedule import ScheduleError, validate_windows

    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise problem(f'{value!r} is not a list of windows, e.g. ["mon-fri 20:00-07:00", "sat-sun"]')
    try:
        return validate_windows(value)
    except ScheduleError as error:
        raise problem(str(error)) from None


def _timezone(value: Any) -> str | None:
    from i2vd.config.schedule import ScheduleError, zone

    if value is None:
        return None
    try:
        zone(_text(value))
    except ScheduleError as error:
        raise problem(str(error)) from None
    return value


Windows = Annotated[list[str] | None, PlainValidator(_windows)]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise problem("is empty, expected a string" if value is None else f"{value!r} is not a string")
    return value


def _mapping(value: Any) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    raise problem(f"{value!r} is not a mapping")


def _listen(value: Any) -> str:
    """`host:port` (an IPv6 host in brackets): where the dashboard listens."""
    host, port = split_listen(_text(value))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise problem(f"{value!r} is not host:port (e.g. 127.0.0.1:8787, [::1]:8787, 0.0.0.0:8787)")
    return value


def split_listen(listen: str) -> tuple[str, str]:
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
