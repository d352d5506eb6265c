"""What the configured servers take: a job's parameters checked against every server that may run it.

Each parameter's ranges are declared once, in i2vd.config.parameters (the /predict contract's range,
and `by_kind` for a server kind that takes another one, e.g. ComfyUI's 1 to 1024 frames). The profile
model validates the widest of them; here they are narrowed to the configured servers. Profiles are not
bound to servers (any job may go to any of `servers:`), so a value is valid when every server takes it:
`profiles.wan.frames: 81 is above 32, the most the predict server at http://gpu:7860 takes (ComfyUI
servers take up to 1024)`. The config's check (exit 78, `i2vd check`), each sidecar's (parking its folder)
and the worker's before it sends a job (i2vd.jobs.outcomes.refused) use it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field

from i2vd.config.checks import Float, Int, Text
from i2vd.config.parameters import PARAMETERS, Parameter


class _Server(Protocol):
    kind: str
    url: str


class _Entry(Protocol):  # i2vd.config.load.ServerEntry
    name: str
    server: _Server


@dataclass(frozen=True)
class _Limit:
    parameter: Parameter
    low: float | None
    low_by: str  # the server that takes no less, in words
    high: float | None
    high_by: str


Limits = tuple[_Limit, ...]
SERVER_KINDS = ("builtin", "predict", "gradio", "comfyui")  # as i2vd.config.model.ServerConfig.kind
KIND_NAMES = {"comfyui": "ComfyUI servers", "predict": "/predict servers", "gradio": "Gradio apps"}


def _number(value: float) -> str:
    return f"{value:g}"


def profile_field(parameter: Parameter) -> tuple[Any, Any]:
    """A job parameter as a profile field (i2vd.config.model): its type, the widest of its ranges (what some
    server kind takes; the configured servers' own are checked across keys, below), default and description."""
    kind: Any = Literal[parameter.choices] if parameter.choices else {int: Int, float: Float, str: Text}[parameter.type]
    if parameter.optional:
        kind = kind | None
    low, high = parameter.widest()
    extra = {"range_in_description": True} if parameter.by_kind else None  # the reference shows each kind's
    return kind, Field(
        parameter.default, ge=low, le=high, description=parameter_help(parameter), json_schema_extra=extra
    )


def parameter_help(parameter: Parameter) -> str:
    """The reference's description of a parameter: its contract range and each kind's own."""
    if not parameter.by_kind:
        return parameter.description
    ranges = [f"{_number(parameter.minimum)} to {_number(parameter.maximum)}"]
    ranges += [
        f"{KIND_NAMES.get(kind, kind)}: {_number(low)} to {_number(high)}"
        for kind, (low, high) in parameter.by_kind.items()
    ]
    return f"{parameter.description} ({'; '.join(ranges)})"


def server_words(kind: str, url: str | None, name: str | None) -> str:
    """`the predict server at http://gpu:7860`, `the builtin engine`: a server as a message names it."""
    if kind == "builtin":
        return "the builtin engine"
    if not url:
        return f"the {kind} server"
    named = f" ({name})" if name and name != url else ""
    return f"the {kind} server at {url}{named}"


def limits_for(servers: Iterable[_Entry]) -> Limits:
    """Each ranged parameter's range that every one of `servers` takes, and which server sets each end."""
    return _limits(
        tuple((entry.server.kind, server_words(entry.server.kind, entry.server.url, entry.name)) for entry in servers)
    )


def job_limits(config: Any) -> Limits:
    """What a job resolved under `config` (i2vd.config.load.Config) may hold: what its servers take; with
    `executor: {kind: celery}` the GPU hosts' servers are not known here, so the widest range (ANY_SERVER),
    and each GPU host fails a job its own server cannot take (server_limits)."""
    return ANY_SERVER if on_gpu_hosts(config) else limits_for(config.servers)


def on_gpu_hosts(config: Any) -> bool:
    """`executor: {kind: celery}`: the jobs run on the GPU hosts' servers, not on `server`/`servers` here."""
    return config.executor.kind == "celery"


def written_on_gpu_hosts(data: Any) -> bool:
    """The config file as written says `executor: {kind: celery}`: its profiles are checked on the GPU hosts."""
    executor = data.get("executor") if isinstance(data, dict) else None
    return isinstance(executor, dict) and executor.get("kind") == "celery"


def server_limits(kind: str, url: str, name: str) -> Limits:
    """What one server takes: a worker checks a job against its own server before sending it (a job
    journaled under another config, or taken from a queue, may hold what this server cannot take)."""
    return _limits(((kind, server_words(kind, url, name)),))


def sending_limits(config: Any, server: _Server) -> Limits:
    """What a worker of `config` may send to `server`: that server's range; with `executor: celery` the
    ingest host's workers send to a queue (ANY_SERVER), and each GPU host judges by its own server."""
    return ANY_SERVER if on_gpu_hosts(config) else server_limits(server.kind, server.url, server.url)


@functools.lru_cache(maxsize=32)
def _limits(servers: tuple[tuple[str | None, str], ...]) -> Limits:
    """(kind, the server in words) each; kind None: any kind's range (the widest)."""
    limits = []
    for parameter in PARAMETERS:
        if not parameter.by_kind:
            continue  # every server takes the same range: the profile model checks it
        low = high = None
        low_by = high_by = ""
        for kind, words in servers:
            kind_low, kind_high = parameter.widest() if kind is None else parameter.bounds(kind)
            if kind_low is not None and (low is None or kind_low > low):
                low, low_by = kind_low, words
            if kind_high is not None and (high is None or kind_high < high):
                high, high_by = kind_high, words
        limits.append(_Limit(parameter, low, low_by, high, high_by))
    return tuple(limits)


def written_limits(data: Any) -> Limits:
    """What the servers take by their kinds as written, when their keys have other problems (ANY_SERVER
    when even a kind is unclear): a bad timeout must not hide that frames 81 is too many for /predict."""
    if not isinstance(data, dict):
        return ANY_SERVER
    items = data.get("servers") if "servers" in data else [data.get("server")]
    servers = []
    for item in items if isinstance(items, list) and items else [None]:
        item = item if isinstance(item, dict) else {}
        kind, url, name = item.get("kind", "builtin"), item.get("url"), item.get("name")
        if kind not in SERVER_KINDS:
            return ANY_SERVER
        url = url if isinstance(url, str) else None
        servers.append((kind, server_words(kind, url, name if isinstance(name, str) else url)))
    return _limits(tuple(servers))


# The servers are not known: a sidecar read without the config takes what every kind of server takes; a
# config whose server keys are broken is held to the widest range until they are fixed.
EVERY_SERVER = _limits(tuple((kind, "every server") for kind in SERVER_KINDS))
ANY_SERVER = _limits(((None, "any server"),))
RANGED = frozenset(limit.parameter.name for limit in EVERY_SERVER)


def is_range_error(item: Mapping[str, Any]) -> bool:
    """A pydantic error (of `ValidationError.errors()`) on a ranged parameter's bound: range_problems says it,
    naming the server whose range it is."""
    loc = item.get("loc") or ()
    return item.get("type") in ("greater_than_equal", "less_than_equal") and bool(loc) and loc[-1] in RANGED


def _wider(parameter: Parameter, bound: float, above: bool) -> str:
    """`(ComfyUI servers take up to 1024)`: the kinds that take more, as a hint."""
    side = 1 if above else 0
    hints = []
    for kind, bounds in parameter.by_kind.items():
        end = bounds[side]
        if end is not None and (end > bound if above else end < bound):
            hints.append(f"{KIND_NAMES.get(kind, kind)} take {'up to' if above else 'from'} {_number(end)}")
    return f" ({', '.join(hints)})" if hints else ""


def range_problems(values: Mapping[str, Any], limits: Limits | None = None) -> list[str]:
    """`frames: 81 is above 32, the most ... takes`: each value of `values` that some server cannot take
    (`limits`: job_limits(config); None: EVERY_SERVER). A value of the wrong type is the profile model's to
    report; the model's own bound errors on these parameters are dropped (is_range_error): these say more."""
    problems = []
    for limit in limits or EVERY_SERVER:
        value = values.get(limit.parameter.name)
        if isinstance(value, bool) or not isinstance(value, int if limit.parameter.type is int else (int, float)):
            continue
        name = limit.parameter.name
        if limit.high is not None and value > limit.high:
            problems.append(
                f"{name}: {value} is above {_number(limit.high)}, the most {limit.high_by} takes"
                + _wider(limit.parameter, limit.high, above=True)
            )
        elif limit.low is not None and value < limit.low:
            problems.append(
                f"{name}: {value} is below {_number(limit.low)}, the least {limit.low_by} takes"
                + _wider(limit.parameter, limit.low, above=False)
            )
    return problems
