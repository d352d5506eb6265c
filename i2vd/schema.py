"""A tiny schema language that both documents and validates YAML settings.

Validation never stops at the first problem: every error is collected with the
dotted path of its key (`profiles.beach.fps: 40 is above 24`), so a user fixes a
config in one round instead of one error per restart. Unknown keys are errors with
a "did you mean" hint, because a misspelt key silently ignored is the worst kind of
configuration bug.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()


@dataclass(frozen=True)
class Scalar:
    """A leaf value: str, int, float or bool, with optional range or choices."""

    kind: type
    default: Any = REQUIRED
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # returns an error message or None


@dataclass(frozen=True)
class Section:
    """A mapping with a fixed set of keys."""

    fields: dict[str, Any]
    description: str = ""
    default: Any = field(default_factory=dict)
    partial: bool = False  # keep only the keys given: overrides merged onto something else later


@dataclass(frozen=True)
class ListOf:
    item: Any
    description: str = ""
    default: Any = REQUIRED
    min_items: int = 0


@dataclass(frozen=True)
class MapOf:
    """A mapping whose keys are free names (profile names) and values share one schema."""

    value: Any
    description: str = ""
    default: Any = field(default_factory=dict)
    partial: bool = False  # values keep only the keys they set (overrides merged later)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _type_name(kind: type) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "a mapping", list: "a list"}
    return names.get(kind, f"a {kind.__name__}")


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "empty"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return str(value)


def did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _validate_scalar(value: Any, node: Scalar, path: str, errors: list[str]) -> Any:
    if value is None:
        if node.nullable:
            return None
        errors.append(f"{path}: is empty, expected {_type_name(node.kind)}")
        return None
    if node.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if node.kind in (int, float) and isinstance(value, bool):
        errors.append(f"{path}: {_describe(value)} is not {_type_name(node.kind)}")
        return None
    if not isinstance(value, node.kind):
        errors.append(f"{path}: {_describe(value)} is not {_type_name(node.kind)}")
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{path}: {value} is not a finite number")
        return None
    if node.choices and value not in node.choices:
        options = ", ".join(str(choice) for choice in node.choices)
        hint = did_you_mean(str(value), [str(choice) for choice in node.choices])
        errors.append(f"{path}: {_describe(value)} is not one of {options}{hint}")
        return None
    if node.minimum is not None and value < node.minimum:
        errors.append(f"{path}: {_describe(value)} is below {node.minimum:g}")
        return None
    if node.maximum is not None and value > node.maximum:
        errors.append(f"{path}: {_describe(value)} is above {node.maximum:g}")
        return None
    if node.check is not None:
        problem = node.check(value)
        if problem:
            errors.append(f"{path}: {problem}")
            return None
    return value


def validate(value: Any, node: Any, path: str, errors: list[str], *, fill_defaults: bool = True) -> Any:
    """Return the validated value (defaults filled in) and append problems to `errors`.

    With fill_defaults=False only the keys present are kept, which is what a
    partial override (a profile that inherits from `default`) needs.
    """
    if isinstance(node, Scalar):
        return _validate_scalar(value, node, path, errors)
    if isinstance(node, Section):
        return _validate_section(value, node, path, errors, fill_defaults and not node.partial)
    if isinstance(node, ListOf):
        if not isinstance(value, list):
            errors.append(f"{path}: {_describe(value)} is not a list")
            return []
        if len(value) < node.min_items:
            errors.append(f"{path}: needs at least {node.min_items} entry")
        return [validate(item, node.item, _join(path, index), errors, fill_defaults=fill_defaults) for index, item in enumerate(value)]
    if isinstance(node, MapOf):
        if not isinstance(value, dict):
            errors.append(f"{path}: {_describe(value)} is not a mapping")
            return {}
        return {
            str(key): validate(item, node.value, _join(path, str(key)), errors, fill_defaults=fill_defaults and not node.partial)
            for key, item in value.items()
        }
    raise TypeError(f"unknown schema node {node!r}")


def _validate_section(value: Any, node: Section, path: str, errors: list[str], fill_defaults: bool) -> dict:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        errors.append(f"{path or 'the file'}: {_describe(value)} is not a mapping")
        return {}
    known = list(node.fields)
    for key in value:
        if key not in node.fields:
            errors.append(f"{_join(path, str(key))}: unknown key{did_you_mean(str(key), known)}")
    result: dict[str, Any] = {}
    for key, child in node.fields.items():
        child_path = _join(path, key)
        if key in value:
            result[key] = validate(value[key], child, child_path, errors, fill_defaults=fill_defaults)
        elif not fill_defaults:
            continue
        elif isinstance(child, Section):
            if not child.partial:
                result[key] = validate(child.default, child, child_path, errors)
        elif getattr(child, "default", REQUIRED) is REQUIRED:
            errors.append(f"{child_path}: is required")
        else:
            default = child.default
            result[key] = default() if callable(default) else default
    return result
