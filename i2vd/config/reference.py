"""The documented config reference, generated from the models in `i2vd.config.model`.

`i2vd config --example` prints it; config.example.yaml is this text (a test keeps
them equal). Each key shows its example or default value and, as a comment, its
description, its choices or range, and its default where the example differs.
"""

from __future__ import annotations

import json
import textwrap
import typing
from typing import Any

import annotated_types
import yaml
from pydantic_core import PydanticUndefined

from i2vd.config.messages import _bare, _fields_of
from i2vd.config.model import ConfigFile

HEADER = """\
# i2vd configuration: every key, with its default. Copy to /etc/i2vd/config.yaml.
# Relative paths are relative to this file. `i2vd run` refuses to start (exit 78)
# on any problem and lists them all, e.g. "profiles.beach.fps: 40 is above 24".
# Generated from i2vd/config/model.py by `i2vd config --example`: edit the models, not this file.
"""
WIDTH = 118
COMMENT_COLUMN = 34
UNSET = PydanticUndefined


def reference() -> str:
    lines = HEADER.splitlines()
    for name, info in ConfigFile.model_fields.items():
        lines.append("")
        lines += _key(name, info, indent=0)
    return "\n".join(lines) + "\n"


def _shown(info: Any) -> Any:
    if info.examples:
        return info.examples[0]
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _facts(info: Any, shown: Any) -> str:
    """Choices or range, and the default when the value shown is an example."""
    facts = []
    kind = _bare(info.annotation)
    if typing.get_origin(kind) is typing.Literal:
        facts.append(" | ".join(str(choice) for choice in typing.get_args(kind)))
    low = next((item.ge for item in info.metadata if isinstance(item, annotated_types.Ge)), None)
    high = next((item.le for item in info.metadata if isinstance(item, annotated_types.Le)), None)
    if (info.json_schema_extra or {}).get("range_in_description"):
        pass  # each server kind's range is in the description
    elif low is not None and high is not None:
        facts.append(f"{low:g} to {high:g}")
    elif low is not None:
        facts.append(f"at least {low:g}")
    if info.is_required():
        facts.append("required")
    elif info.default not in (None, PydanticUndefined) and shown != info.default:
        facts.append(f"default: {_scalar(info.default)}")
    return f" ({'; '.join(facts)})" if facts else ""


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()
    text = str(value)
    plain = yaml.safe_dump(text, width=1000).removesuffix("\n...\n").strip()
    return text if plain == text and "{" not in text else json.dumps(text)


def _comment_lines(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return [prefix + line for line in textwrap.wrap(text, WIDTH - len(prefix))]


def _leaf(head: str, comment: str) -> list[str]:
    if not comment:
        return [head]
    if len(head) >= COMMENT_COLUMN:  # no room beside it: the comment goes above
        return _comment_lines(comment, len(head) - len(head.lstrip(" "))) + [head]
    column = max(len(head) + 1, COMMENT_COLUMN)
    wrapped = textwrap.wrap(comment, WIDTH - column - 2)
    return [head.ljust(column) + "# " + wrapped[0]] + [" " * column + "# " + line for line in wrapped[1:]]


def _key(name: str, info: Any, indent: int, value: Any = UNSET, lead: str = "", comments: bool = True) -> list[str]:
    """`name:` with its value (or the keys below it) and its description, at `indent`."""
    pad = " " * indent
    lead = lead or pad
    kind = _bare(info.annotation)
    origin = typing.get_origin(kind)
    if value is UNSET and info.default is None and info.examples:  # optional: its example, commented out
        comment = (info.description or "") + _facts(info, None)
        if origin in (list, dict):
            block = yaml.safe_dump({name: info.examples[0]}, sort_keys=False, width=WIDTH).splitlines()
            return _comment_lines(comment, indent) + [f"{pad}# {line}" for line in block]
        if _fields_of(kind) is not None:  # an optional section: its keys, commented out
            block = [f"{name}:"] + _model(kind, 2, info.examples[0])
            return _comment_lines(comment, indent) + [f"{pad}# {line}" for line in block]
        return _leaf(f"{pad}# {name}: {_scalar(info.examples[0])}", comment)
    shown = _shown(info) if value is UNSET else value
    comment = (info.description or "") + _facts(info, shown) if comments else ""
    if _fields_of(kind) is not None:
        return _comment_lines(comment, indent) + [f"{lead}{name}:"] + _model(kind, indent + 2)
    if origin is list and _fields_of(_bare(typing.get_args(kind)[0])) is None:  # a list of words: one line
        return _comment_lines(comment, indent) + [f"{lead}{name}: [{', '.join(_scalar(entry) for entry in shown)}]"]
    if origin is list:
        lines = _comment_lines(comment, indent) + [f"{lead}{name}:"]
        for entry in shown:
            lines += _model(_bare(typing.get_args(kind)[0]), indent + 4, entry, lead=f"{pad}  - ")
        return lines
    if origin is dict:
        lines = _comment_lines(comment, indent) + [f"{lead}{name}:"]
        for key, entry in shown.items():
            lines.append(f"{pad}  {key}:")
            lines += _model(_bare(typing.get_args(kind)[1]), indent + 4, entry, only_given=bool(entry))
        return lines
    return _leaf(f"{lead}{name}: {_scalar(shown)}".rstrip(), comment)


def _model(model: Any, indent: int, given: dict | None = None, lead: str = "", only_given: bool = False) -> list[str]:
    """A section's keys with their defaults (or the values `given`); only those given for a profile that
    sets a few."""
    lines: list[str] = []
    for name, info in _fields_of(model).items():
        if only_given and name not in given:
            continue
        value = given[name] if given and name in given else UNSET
        lines += _key(name, info, indent, value, lead=lead, comments=not only_given)
        lead = ""
    return lines


def model_keys(model: Any = ConfigFile, prefix: str = "") -> list[str]:
    """Every leaf key's dotted name (list items and profile names left out): for the reference's test."""
    keys = []
    for name, info in _fields_of(model).items():
        kind = _bare(info.annotation)
        if typing.get_origin(kind) in (list, dict):
            kind = _bare(typing.get_args(kind)[-1])
        if _fields_of(kind) is not None and kind is not model:
            keys += model_keys(kind, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys
