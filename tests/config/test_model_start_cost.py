"""The config models stay cheap to build: every i2vd command (`i2vd status` above all, SPEC: < 0.5 s) builds
them at start.

pydantic reads each `default_factory`'s signature while it builds a model (does the factory take the validated
data?). A builtin's (`list`, `dict`) has only a text signature, which `inspect` parses with `tokenize`: its
first use compiles tokenize's large regular expression, ~8 ms of CPU at every start on a small machine.
"""

from __future__ import annotations

import inspect

from i2vd.config import executor, http_model, model, worker


def _models() -> list[type]:
    found = []
    for module in (model, executor, http_model, worker):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and hasattr(value, "__pydantic_fields__")
            ):
                found.append(value)
    return found


def test_the_config_models_are_found() -> None:
    names = {kind.__name__ for kind in _models()}
    assert {"ConfigFile", "ServerConfig", "WatchRoot", "ExecutorConfig", "HttpConfig", "WorkerConfigFile"} <= names


def test_no_config_field_takes_a_builtin_as_its_default_factory() -> None:
    builtins = []
    for kind in _models():
        for name, info in kind.__pydantic_fields__.items():
            factory = info.default_factory
            if factory is not None and (
                inspect.isbuiltin(factory) or getattr(factory, "__module__", None) == "builtins"
            ):
                builtins.append(f"{kind.__name__}.{name}: {factory!r}")
    assert not builtins, builtins


def test_a_factory_default_is_a_fresh_value_each_time() -> None:
    """What the builtins gave: each config its own (empty) list and dict, never one shared between two."""
    first = worker.WorkerConfigFile.model_validate({})
    second = worker.WorkerConfigFile.model_validate({})
    assert first.watch == [] and first.profiles == {}
    assert first.watch is not second.watch and first.profiles is not second.profiles
