"""A pydantic ValidationError in i2vd's words: each problem with its path, the value, what was expected, a hint."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError


def did_you_mean(key: str, known: list[str]) -> str:
    import difflib  # here, not at the top: only a config with an unknown key needs it

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TYPE_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "dict": "a mapping",
    "model": "a mapping",
    "dataclass": "a mapping",
    "list": "a list",
}


def validation_problems(error: ValidationError, model: type, skip: Callable[[dict], bool] | None = None) -> list[str]:
    """pydantic's errors in i2vd's words, each with its dotted path: `profiles.beach.fps: 40 is above 24`
    (but those `skip` says another check words better)."""
    problems = []
    for item in error.errors(include_url=False):
        if skip is not None and skip(item):
            continue
        context = item.get("ctx") or {}
        place = (*item["loc"], context["key"]) if "key" in context else item["loc"]
        path = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in place).lstrip(".")
        problems.append(f"{path or 'the file'}: {_message(item, model)}")
    return problems


def _message(item: Any, model: type) -> str:
    kind, value, context = item["type"], item.get("input"), item.get("ctx") or {}
    if kind in ("missing", "missing_argument"):
        return "is required"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = list(_fields_of(_type_at(model, item["loc"][:-1])) or ())
        return f"unknown key{did_you_mean(str(item['loc'][-1]), known)}"
    if kind == "literal_error":
        choices = [str(choice) for choice in typing.get_args(_type_at(model, item["loc"]))]
        return f"{_describe(value)} is not one of {', '.join(choices)}{did_you_mean(str(value), choices)}"
    bound = context.get("ge", context.get("le"))
    if isinstance(bound, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # a number in a float field is shown as one
    if kind == "greater_than_equal":
        return f"{_describe(value)} is below {bound:g}"
    if kind == "less_than_equal":
        return f"{_describe(value)} is above {bound:g}"
    if kind == "too_short":
        return f"needs at least {context['min_length']} entry"
    if kind == "finite_number":
        return f"{value} is not a finite number"
    expected = _TYPE_NAMES.get(kind.split("_")[0]) if kind.endswith(("_type", "_parsing", "_from_float")) else None
    if expected:
        return f"is empty, expected {expected}" if value is None else f"{_describe(value)} is not {expected}"
    return item["msg"]


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "empty"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return str(value)


def _fields_of(kind: Any) -> dict[str, Any] | None:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_fields
    return getattr(kind, "__pydantic_fields__", None)  # a pydantic dataclass


def _bare(kind: Any) -> Any:
    """The type under Annotated[...] and `| None`."""
    while True:
        if typing.get_origin(kind) is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            options = [option for option in typing.get_args(kind) if option is not type(None)]
            if len(options) != 1:
                return kind
            kind = options[0]
        else:
            return kind


def _type_at(model: type, place: tuple) -> Any:
    """The declared type at an error's location, to name the keys or choices it allows."""
    kind: Any = model
    for key in place:
        kind = _bare(kind)
        fields = _fields_of(kind)
        if fields is not None and key in fields:
            kind = fields[key].annotation
        elif typing.get_origin(kind) in (list, tuple):
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) is dict:
            kind = typing.get_args(kind)[1]
        else:
            return None
    return _bare(kind)
