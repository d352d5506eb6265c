"""What every config model shares: unknown keys are errors, NaN and infinity are refused, and a key given with
nothing under it (`server:`) means its defaults."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, model_validator

SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False)


class _EmptyIsDefaults:
    """`server:` with nothing under it is the defaults, as if the key were left out."""

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value


# A field's default_factory for [] or {}: pydantic reads each factory's signature while it builds the model, and a
# builtin's (list, dict) is parsed from its text with tokenize, whose regex compiles in ~8 ms at every i2vd start.
def empty_list() -> list:
    return []


def empty_dict() -> dict:
    return {}
