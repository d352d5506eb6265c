"""Load and validate i2vd's YAML configuration.

`CONFIG_SCHEMA` is the single description of every key: it fills defaults,
validates types and the /predict ranges, and reports every problem at once with
its path. Relative paths are taken relative to the config file, so a config that
lives beside its folders works from any working directory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2.sandbox
import yaml

from i2vd.schema import REQUIRED, ListOf, MapOf, Scalar, Section, validate

DEFAULT_CONFIG_PATH = Path("/etc/i2vd/config.yaml")
DONE_FOLDER = ".i2vd-done"  # `after: move` puts finished sources here, inside their root
RESOLUTIONS = ("256p", "512p", "768p", "1024p")
DEFAULT_PROMPT = "{{ caption or ('A ' ~ subject ~ ' scene with smooth motion') }}"


def _template_syntax(text: str) -> str | None:
    try:
        jinja2.sandbox.SandboxedEnvironment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        return f"template error: {error.message} (line {error.lineno})"
    return None


def _gradio_inputs(value: Any) -> str | None:
    from i2vd.backends.gradio_protocol import input_problems  # the backend knows its own mapping's shape

    problems = input_problems(value)
    return "; ".join(problems) if problems else None


def _http_url(value: Any) -> str | None:
    return None if str(value).startswith(("http://", "https://")) else f"{value!r} is not an http:// or https:// URL"


def _auto_or_bool(value: Any) -> str | None:
    return None if value == "auto" or isinstance(value, bool) else f"{value!r} is not one of auto, true, false"


PROFILE_FIELDS = {
    "prompt": Scalar(str, DEFAULT_PROMPT, "Jinja2 template for the prompt", check=_template_syntax),
    "resolution": Scalar(str, "512p", "output resolution", choices=RESOLUTIONS),
    "frames": Scalar(int, 16, "number of frames", minimum=8, maximum=32),
    "fps": Scalar(int, 8, "frames per second", minimum=4, maximum=24),
    "steps": Scalar(int, 50, "diffusion steps", minimum=10, maximum=100),
    "guidance": Scalar(float, 9.0, "guidance scale", minimum=1, maximum=20),
    "seed": Scalar(int, None, "fixed seed, or empty for the server's choice", nullable=True, minimum=0),
    "output": Scalar(str, None, "output file name template, e.g. 'sku_{{ stem }}_rotate.mp4'", nullable=True, check=_template_syntax),
}
PROFILE_SCHEMA = Section(PROFILE_FIELDS, "a prompt profile; every field inherits from `default`")

SERVER_FIELDS = {
    "kind": Scalar(str, "builtin", "builtin (CPU preview engine), predict (I2VGen-XL /api/predict/), gradio (any Gradio app) or comfyui", choices=("builtin", "predict", "gradio", "comfyui")),
    "url": Scalar(str, "http://127.0.0.1:7860", "the server's base URL", check=_http_url),
    "path": Scalar(str, "/api/predict/", "predict endpoint path on the server"),
    "timeout_seconds": Scalar(float, 900.0, "longest one video may take", minimum=1),
    "connect_timeout_seconds": Scalar(float, 10.0, "longest a connection may take to open", minimum=0.1),
    "image_encoding": Scalar(str, "base64", "how the image is sent: base64 or data_url", choices=("base64", "data_url")),
    "api_name": Scalar(str, None, "gradio: the endpoint, e.g. /predict (default: the one taking an image and returning a video)", nullable=True),
    "inputs": Scalar(dict, None, "gradio: the app's parameters (by name or position) from i2vd fields or {value: constant}", nullable=True, check=_gradio_inputs),
    "transport": Scalar(str, "auto", "gradio 4+: auto, queue or call", choices=("auto", "queue", "call")),
    "workflow": Scalar(str, None, "comfyui: the API workflow (Export (API)) with I2VD: titles; relative to the config file", nullable=True),
    "free_after_job": Scalar(bool, False, "comfyui: POST /free after each job (frees VRAM; models stay loaded)"),
    "oom": Scalar(str, "wait", "on a GPU out-of-memory reply: wait (for VRAM, then retry), downgrade (one resolution step) or fail", choices=("wait", "downgrade", "fail")),
}
GPU_FIELDS = {
    "enabled": Scalar(object, "auto", "auto (on when NVML finds a GPU), true or false", check=_auto_or_bool),
    "source": Scalar(str, "nvml", "nvml, command, comfyui (the server's /system_stats) or none", choices=("nvml", "command", "comfyui", "none")),
    "max_used_mb": Scalar(int, 10000, "wait while the GPU uses more than this", minimum=0, nullable=True),
    "min_free_mb": Scalar(int, None, "wait while the GPU has less free than this", minimum=0, nullable=True),
    "poll_seconds": Scalar(float, 5.0, "how often a closed gate reads again", minimum=0.05),
    "index": Scalar(int, 0, "NVML index of the GPU", minimum=0),
    "command": Scalar(str, None, "with source: command, prints used MiB", nullable=True),
    "on_error": Scalar(str, "wait", "when the GPU cannot be read: wait or proceed", choices=("wait", "proceed")),
    "stuck_minutes": Scalar(float, 10.0, "closed this long with no job of i2vd's running: say so, with advice", minimum=0.1),
}

CONFIG_SCHEMA = Section(
    {
        "state_dir": Scalar(str, "/var/lib/i2vd", "where journal.sqlite3 and the lock live; local disk"),
        "output_dir": Scalar(str, REQUIRED, "where videos go, mirroring the input tree"),
        "log_level": Scalar(str, "info", "log verbosity", choices=("debug", "info", "warning", "error")),
        "stop_grace_seconds": Scalar(float, 30.0, "on stop, how long the running job may take to finish before it is released", minimum=0),
        "server": Section(SERVER_FIELDS, "the image-to-video server (or use `servers:` for several)"),
        "servers": ListOf(
            Section({"name": Scalar(str, None, "a short name for status and the log", nullable=True), **SERVER_FIELDS, "gpu": Section(GPU_FIELDS, "this server's own VRAM gate (keys not given come from `gpu:`)", partial=True)}),
            "several servers (one per GPU), each pulling jobs from the one journal",
            default=None,
            min_items=1,
        ),
        "gpu": Section(GPU_FIELDS, "the VRAM gate"),
        "retry": Section(
            {
                "attempts": Scalar(int, 3, "tries per job before it fails", minimum=1, maximum=100),
                "initial_backoff_seconds": Scalar(float, 10.0, "wait after the first failure", minimum=0),
                "max_backoff_seconds": Scalar(float, 600.0, "longest wait between tries", minimum=0),
                "max_interruptions": Scalar(int, 3, "daemon deaths during one job before it fails", minimum=1),
            },
            "retry policy",
        ),
        "watch": ListOf(
            Section(
                {
                    "path": Scalar(str, REQUIRED, "a hot folder, watched recursively"),
                    "settle_seconds": Scalar(float, 5.0, "size and mtime unchanged this long", minimum=0),
                    "poll": Scalar(object, "auto", "auto (polling on network filesystems), true or false", check=_auto_or_bool),
                    "rescan_seconds": Scalar(float, 300.0, "periodic reconcile", minimum=1),
                    "after": Scalar(str, "keep", "keep or move (into <root>/.i2vd-done/)", choices=("keep", "move")),
                    "output_dir": Scalar(str, None, "this root's own output folder", nullable=True),
                }
            ),
            "hot folders",
            default=list,
        ),
        "profiles": MapOf(PROFILE_SCHEMA, "prompt profiles by name; each inherits from `default`", partial=True),
    }
)


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s):"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True)
class ServerConfig:
    kind: str
    url: str
    path: str
    timeout_seconds: float
    connect_timeout_seconds: float
    image_encoding: str
    api_name: str | None = None
    inputs: dict | None = None
    transport: str = "auto"
    oom: str = "wait"
    workflow: str | None = None  # comfyui: the absolute path of the API workflow
    free_after_job: bool = False


@dataclass(frozen=True)
class GpuConfig:
    enabled: object
    source: str
    max_used_mb: int | None
    min_free_mb: int | None
    poll_seconds: float
    index: int
    command: str | None
    on_error: str
    stuck_minutes: float


@dataclass(frozen=True)
class ServerEntry:
    """One server and the gate of the GPU it runs on: one worker each."""

    name: str
    server: ServerConfig
    gpu: GpuConfig


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_backoff_seconds: float = 10.0
    max_backoff_seconds: float = 600.0
    max_interruptions: int = 3

    def backoff_seconds(self, failures: int) -> float:
        """Wait after the `failures`-th failure: doubles each time, capped."""
        return min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class WatchRoot:
    path: Path
    output_dir: Path
    settle_seconds: float
    poll: object
    rescan_seconds: float
    after: str


@dataclass(frozen=True)
class Config:
    source: str
    state_dir: Path
    output_dir: Path
    log_level: str
    stop_grace_seconds: float
    servers: tuple[ServerEntry, ...]
    gpu: GpuConfig
    retry: RetryPolicy
    watch: tuple[WatchRoot, ...]
    profiles: dict[str, dict[str, Any]]

    @property
    def server(self) -> ServerConfig:
        """The first (often the only) server."""
        return self.servers[0].server

    def profile(self, name: str) -> dict[str, Any]:
        """The named profile with everything it does not set taken from `default`."""
        return {**self.profiles["default"], **self.profiles[name]}

    def excluded_folders(self) -> tuple[Path, ...]:
        """i2vd's own outputs, state and done-folders: never inputs, even inside a root."""
        folders = {self.output_dir, self.state_dir}
        folders.update(root.output_dir for root in self.watch)
        folders.update(root.path / DONE_FOLDER for root in self.watch)
        return tuple(sorted(folders))

    def with_root(self, folder: Path, output_dir: Path | None = None) -> Config:
        """This config with `folder` as a root (or its existing root given `output_dir`): for batch and check."""
        existing = self.root_for(folder)
        if existing is not None:
            if output_dir is None:
                return self
            roots = tuple(dataclasses.replace(root, output_dir=output_dir) if root is existing else root for root in self.watch)
            return dataclasses.replace(self, watch=roots)
        root = WatchRoot(path=folder, output_dir=output_dir or self.output_dir, settle_seconds=0, poll=False, rescan_seconds=3600, after="keep")
        return dataclasses.replace(self, watch=self.watch + (root,))

    def root_for(self, path: Path) -> WatchRoot | None:
        for root in self.watch:
            if path == root.path or root.path in path.parents:
                return root
        return None


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("I2VD_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        hint = " (give the config with -c CONFIG or $I2VD_CONFIG)" if isinstance(error, FileNotFoundError) else ""
        raise ConfigError(str(path), [f"cannot read: {error.strerror}{hint}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"cannot read: not UTF-8 text ({error})"]) from None
    return parse_config(text, source=str(path), base_dir=Path(path).resolve().parent)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, [f"not valid YAML: {str(error).replace('<unicode string>', source)}"]) from None
    problems: list[str] = []
    values = validate(data, CONFIG_SCHEMA, "", problems, fill_defaults=True)
    profiles = _with_full_default(values.get("profiles", {}))
    if not values.get("watch"):
        problems.append("watch: needs at least one hot folder")
    gpu = values.get("gpu") or {}
    servers_given = isinstance(data, dict) and "servers" in data
    if not servers_given and gpu.get("source") == "command" and gpu.get("enabled") is not False and not gpu.get("command"):
        problems.append("gpu.command: is required when gpu.source is command")
    retry = values.get("retry") or {}
    if (retry.get("max_backoff_seconds") or 0) < (retry.get("initial_backoff_seconds") or 0):
        problems.append("retry.max_backoff_seconds: is below retry.initial_backoff_seconds")
    if servers_given:
        if "server" in data:
            problems.append("server: give either `server` or `servers`, not both")
        for index, entry in enumerate(values.get("servers") or []):
            merged = {**gpu, **(entry.get("gpu") or {})}
            if merged.get("source") == "command" and merged.get("enabled") is not False and not merged.get("command"):
                problems.append(f"servers[{index}].gpu.command: is required when gpu.source is command")
        names = [entry.get("name") or entry.get("url") for entry in values.get("servers") or []]
        for name in {name for name in names if names.count(name) > 1}:
            problems.append(f"servers: {name!r} appears twice: give each server its own name")
    base = base_dir or Path.cwd()

    def absolute(value: str) -> Path:
        return (base / os.path.expanduser(value)).resolve()

    if problems and not (values.get("output_dir") and values.get("watch") and all(entry.get("path") for entry in values["watch"])):
        raise ConfigError(source, problems)  # the folders cannot be checked against each other yet
    output_dir = absolute(values["output_dir"])
    roots = tuple(
        WatchRoot(
            path=absolute(entry["path"]),
            output_dir=absolute(entry["output_dir"]) if entry["output_dir"] else output_dir,
            settle_seconds=entry["settle_seconds"],
            poll=entry["poll"],
            rescan_seconds=entry["rescan_seconds"],
            after=entry["after"],
        )
        for entry in values["watch"]
    )
    _check_roots(roots, problems, state_dir=absolute(values["state_dir"] or "."))
    servers = _server_entries(values, raw_servers_given=servers_given)
    servers = tuple(_with_workflow(entry, index if servers_given else None, absolute, problems) for index, entry in enumerate(servers))
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        state_dir=absolute(values["state_dir"]),
        output_dir=output_dir,
        log_level=values["log_level"],
        stop_grace_seconds=values["stop_grace_seconds"],
        servers=servers,
        gpu=GpuConfig(**values["gpu"]),
        retry=RetryPolicy(**values["retry"]),
        watch=roots,
        profiles=profiles,
    )


def _server_entries(values: dict[str, Any], raw_servers_given: bool) -> tuple[ServerEntry, ...]:
    default_gpu = values["gpu"]
    if not raw_servers_given:
        server = ServerConfig(**values["server"])
        return (ServerEntry(name=server.kind if server.kind == "builtin" else server.url, server=server, gpu=GpuConfig(**default_gpu)),)
    entries = []
    for entry in values["servers"]:
        fields = {key: entry[key] for key in SERVER_FIELDS}
        server = ServerConfig(**fields)
        entries.append(ServerEntry(name=entry["name"] or server.url, server=server, gpu=GpuConfig(**{**default_gpu, **(entry.get("gpu") or {})})))
    return tuple(entries)


def _with_workflow(entry: ServerEntry, index: int | None, absolute, problems: list[str]) -> ServerEntry:
    """comfyui: the workflow is required, taken relative to the config file, and checked now (exit 78, not mid-job)."""
    where = "server" if index is None else f"servers[{index}]"
    server = entry.server
    if entry.gpu.source == "comfyui" and entry.gpu.enabled is not False and server.kind != "comfyui":
        problems.append(f"{where}.gpu.source: comfyui reads the VRAM of a ComfyUI server, but {where}.kind is {server.kind}")
    if server.kind != "comfyui":
        return entry
    if not server.workflow:
        problems.append(f"{where}.workflow: is required when kind is comfyui (an API workflow with I2VD: titles)")
        return entry
    path = absolute(server.workflow)
    problem = check_workflow(path)
    if problem:
        problems.append(f"{where}.workflow: {problem}")
    return dataclasses.replace(entry, server=dataclasses.replace(server, workflow=str(path)))


def check_workflow(path: Path) -> str | None:
    """What is wrong with a ComfyUI workflow for i2vd (no I2VD:image node, a title naming a missing input...)."""
    from i2vd.backends.comfyui_workflow import WorkflowError, load_workflow  # the backend knows its titles

    try:
        load_workflow(path)
    except WorkflowError as error:
        return str(error)
    return None


def _with_full_default(profiles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Profiles keep only the keys they set; `default` gets every built-in default."""
    default = validate(profiles.get("default") or {}, PROFILE_SCHEMA, "profiles.default", [], fill_defaults=True)
    return {**profiles, "default": default}


def _check_roots(roots: tuple[WatchRoot, ...], problems: list[str], state_dir: Path) -> None:
    for index, root in enumerate(roots):
        # i2vd's own folders are never input: one that is (or holds) a root would silently hide it.
        for name, folder in (("output_dir", root.output_dir), ("state_dir", state_dir)):
            if folder == root.path or folder in root.path.parents:
                problems.append(f"watch[{index}].path: {root.path} is {name} or inside it ({folder}): give {name} a folder of its own")
        for other_index, other in enumerate(roots):
            if index != other_index and other.path in root.path.parents:
                problems.append(f"watch[{index}].path: {root.path} is inside watch[{other_index}].path {other.path}")
            elif other_index < index and other.path == root.path:
                problems.append(f"watch[{index}].path: {root.path} is the same folder as watch[{other_index}].path")
