"""Load and validate i2vd's YAML configuration.

The keys, their defaults and bounds are declared once, in `i2vd.config.model`; this
module reads a file with them, reports every problem at once with its path
(`profiles.beach.fps: 40 is above 24`, `servr: unknown key (did you mean 'server'?)`),
and assembles the Config the daemon runs on. Relative paths are taken relative to the
config file, so a config that lives beside its folders works from any working directory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from i2vd.config.checks import split_listen
from i2vd.config.executor import ExecutorConfig
from i2vd.config.messages import did_you_mean as did_you_mean
from i2vd.config.messages import validation_problems as validation_problems
from i2vd.config.model import (
    DEFAULT_PROMPT as DEFAULT_PROMPT,
)
from i2vd.config.model import (
    RESOLUTIONS as RESOLUTIONS,
)
from i2vd.config.model import (
    ConfigFile,
    GpuConfig,
    HttpConfig,
    ProfileFields,
    RetryPolicy,
    ServerConfig,
    WatchRoot,
)
from i2vd.config.parameter_limits import (
    ANY_SERVER,
    Limits,
    is_range_error,
    limits_for,
    range_problems,
    written_limits,
    written_on_gpu_hosts,
)

DEFAULT_CONFIG_PATH = Path("/etc/i2vd/config.yaml")
DONE_FOLDER = ".i2vd-done"  # `after: move` puts finished sources here, inside their root
FAILED_FOLDER = ".i2vd-failed"  # `on_failure: move` puts failed sources here, inside their root


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
class ServerEntry:
    """One server and the gate of the GPU it runs on: one worker each."""

    name: str
    server: ServerConfig
    gpu: GpuConfig


@dataclass(frozen=True)
class HttpSettings:
    """`http:` as the server uses it: where to listen and the token (read from token_file at load)."""

    listen: str
    host: str
    port: int
    token: str | None


@dataclass(frozen=True)
class WebhookSettings:
    """A webhook as the sender uses it: the secret read from secret_file at load."""

    url: str
    events: tuple[str, ...]
    secret: str | None
    timeout_seconds: float


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
    http: HttpSettings | None = None
    timezone: str | None = None
    webhooks: tuple[WebhookSettings, ...] = ()
    executor: ExecutorConfig = ExecutorConfig()

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
        folders.update(root.path / FAILED_FOLDER for root in self.watch)
        return tuple(sorted(folders))

    def with_root(self, folder: Path, output_dir: Path | None = None) -> Config:
        """This config with `folder` as a root (or its existing root given `output_dir`): for batch and check."""
        existing = self.root_for(folder)
        if existing is not None:
            if output_dir is None:
                return self
            roots = tuple(
                dataclasses.replace(root, output_dir=output_dir) if root is existing else root for root in self.watch
            )
            return dataclasses.replace(self, watch=roots)
        root = WatchRoot(
            path=folder,
            output_dir=output_dir or self.output_dir,
            settle_seconds=0,
            poll=False,
            rescan_seconds=3600,
            after="keep",
            on_failure="keep",
        )
        return dataclasses.replace(self, watch=self.watch + (root,))

    def root_for(self, path: Path) -> WatchRoot | None:
        for root in self.watch:
            if path == root.path or path_under(path, root.path):
                return root
        return None


def path_under(path: Path, folder: Path) -> bool:
    """`folder in path.parents` for absolute paths, by their text: Path's way is slow per file of a big scan."""
    text, prefix = str(path), str(folder)
    if not prefix.endswith(os.sep):
        prefix += os.sep
    return len(text) > len(prefix) and text.startswith(prefix) and path.is_absolute() == folder.is_absolute()


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("I2VD_CONFIG") or DEFAULT_CONFIG_PATH)


def read_config_text(path: Path) -> str:
    """A config file's text (the daemon's or a GPU host's); ConfigError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        hint = " (give the config with -c CONFIG or $I2VD_CONFIG)" if isinstance(error, FileNotFoundError) else ""
        raise ConfigError(str(path), [f"cannot read: {error.strerror}{hint}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"cannot read: not UTF-8 text ({error})"]) from None


def read_config_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """The YAML document, and the problems seen before any model: `server` and `servers` both given."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, [f"not valid YAML: {str(error).replace('<unicode string>', source)}"]) from None
    problems: list[str] = []
    if isinstance(data, dict) and "server" in data and "servers" in data:
        problems.append("server: give either `server` or `servers`, not both")
    return data, problems


def load_config(path: Path) -> Config:
    return parse_config(read_config_text(path), source=str(path), base_dir=Path(path).resolve().parent)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    data, problems = read_config_yaml(text, source)
    context = {"base_dir": base_dir or Path.cwd()}
    try:
        values = ConfigFile.model_validate(data, context=context)
    except ValidationError as error:
        problems = validation_problems(error, ConfigFile, skip=_profile_range_error) + problems
        rest, whole = _valid_rest(data, error, context)
        if rest is not None:  # the checks across keys, over the keys without problems of their own
            _check_across(rest, problems, roots=whole)
        servers_known = rest is not None and not {"server", "servers"} & {item["loc"][0] for item in error.errors()}
        _check_profile_ranges(
            data, limits_for(_server_entries(rest)) if servers_known else written_limits(data), problems
        )
        raise ConfigError(source, problems) from None
    _check_across(values, problems, roots=True)
    _check_profile_ranges(data, limits_for(_server_entries(values)), problems)
    http = _http(values.http, problems)
    webhooks = _webhooks(values, problems)
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source=source,
        state_dir=values.state_dir,
        output_dir=values.output_dir,
        log_level=values.log_level,
        stop_grace_seconds=values.stop_grace_seconds,
        servers=_server_entries(values),
        gpu=values.gpu,
        retry=values.retry,
        watch=_roots(values),
        profiles=_with_full_default(values.profiles),
        http=http,
        timezone=values.timezone,
        webhooks=webhooks,
        executor=values.executor,
    )


def _webhooks(values: ConfigFile, problems: list[str]) -> tuple[WebhookSettings, ...]:
    """Secrets are read now: a missing or empty one stops start-up and reload like any other problem."""
    hooks = []
    for index, hook in enumerate(values.webhooks or []):
        secret = None
        if hook.secret_file is not None:
            try:
                secret = hook.secret_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                problems.append(
                    f"webhooks[{index}].secret_file: cannot read {hook.secret_file}: "
                    f"{getattr(error, 'strerror', None) or error}"
                )
                continue
            if not secret:
                problems.append(f"webhooks[{index}].secret_file: {hook.secret_file} is empty")
                continue
        hooks.append(WebhookSettings(hook.url, tuple(dict.fromkeys(hook.events)), secret, hook.timeout_seconds))
    return tuple(hooks)


def _http(http: HttpConfig | None, problems: list[str]) -> HttpSettings | None:
    """The token file is read now, so a bad one stops start-up and reload like any other config problem."""
    if http is None:
        return None
    token = http.token.strip() if http.token is not None else None
    if http.token_file is not None:
        try:
            token = http.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            problems.append(f"http.token_file: cannot read {http.token_file}: {reason}")
            return None
        if not token:
            problems.append(f"http.token_file: {http.token_file} is empty")
            return None
    host, port = split_listen(http.listen)
    return HttpSettings(listen=http.listen, host=host, port=int(port), token=token)


def _valid_rest(data: Any, error: ValidationError, context: dict) -> tuple[ConfigFile | None, bool]:
    """The config without its top-level keys that have problems (placeholders for the required ones), and
    whether its folders are all real; None when nothing can be checked further."""
    bad = {item["loc"][0] if item["loc"] else None for item in error.errors()}
    if not isinstance(data, dict) or None in bad:
        return None, False
    rest = {key: value for key, value in data.items() if key not in bad}
    placeholders = {"output_dir": "/", "watch": [{"path": "/"}]}
    whole = not placeholders.keys() - rest.keys() and "state_dir" not in bad
    try:
        return ConfigFile.model_validate({**placeholders, **rest}, context=context), whole
    except ValidationError:
        return None, False


def _check_across(values: ConfigFile, problems: list[str], roots: bool) -> None:
    """What no single key can say: a command for gpu.source command; folders that overlap."""
    for index, entry in enumerate(_server_entries(values)):
        gpu = entry.gpu
        if gpu.source == "command" and gpu.enabled is not False and not gpu.command:
            place = f"servers[{index}].gpu" if values.servers is not None else "gpu"
            problems.append(f"{place}.command: is required when gpu.source is command")
        _check_comfyui(entry, "server" if values.servers is None else f"servers[{index}]", problems)
    if roots:
        _check_roots(_roots(values), problems, state_dir=values.state_dir)


def _profile_range_error(item: dict) -> bool:
    """pydantic's bound error on a profile's frames, fps or steps: _check_profile_ranges words it."""
    return len(item["loc"]) == 3 and item["loc"][0] == "profiles" and is_range_error(item)


def _check_profile_ranges(data: Any, limits: Limits, problems: list[str]) -> None:
    """Each profile's frames, fps, steps as written, against what every configured server takes (any job
    may go to any server): `profiles.wan.frames: 81 is above 32, the most the predict server at ... takes`."""
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict):
        return
    if written_on_gpu_hosts(data):  # the GPU hosts' servers are not known here: each checks its own jobs
        limits = ANY_SERVER
    for name, fields in profiles.items():
        if isinstance(fields, dict):
            problems.extend(f"profiles.{name}.{problem}" for problem in range_problems(fields, limits))


def _check_comfyui(entry: ServerEntry, where: str, problems: list[str]) -> None:
    """comfyui: a workflow i2vd can fill is required now (exit 78), not found wanting mid-job."""
    server, gpu = entry.server, entry.gpu
    if gpu.source == "comfyui" and gpu.enabled is not False and server.kind != "comfyui":
        place = "gpu" if where == "server" else f"{where}.gpu"
        problems.append(
            f"{place}.source: comfyui reads the VRAM of a ComfyUI server, but {where}.kind is {server.kind}"
        )
    if server.kind != "comfyui":
        return
    if server.workflow is None:
        problems.append(f"{where}.workflow: is required when kind is comfyui (an API workflow with I2VD: titles)")
        return
    problem = check_workflow(server.workflow)
    if problem:
        problems.append(f"{where}.workflow: {problem}")


def check_workflow(path: Path) -> str | None:
    """What is wrong with a ComfyUI workflow for i2vd (no I2VD:image node, a title naming a missing input...)."""
    from i2vd.config.comfyui_workflow import WorkflowError, load_workflow  # the backend knows its titles

    try:
        load_workflow(path)
    except WorkflowError as error:
        return str(error)
    return None


def _roots(values: ConfigFile) -> tuple[WatchRoot, ...]:
    """The hot folders, each with its output folder (its own, or the config's)."""
    return tuple(dataclasses.replace(root, output_dir=root.output_dir or values.output_dir) for root in values.watch)


def _server_entries(values: ConfigFile) -> tuple[ServerEntry, ...]:
    if values.servers is None:
        server = values.server
        name = server.kind if server.kind == "builtin" else server.url
        return (ServerEntry(name=name, server=server, gpu=values.gpu),)
    entries = []
    for entry in values.servers:
        server = ServerConfig(**{key: getattr(entry, key) for key in ServerConfig.__pydantic_fields__})
        overrides = entry.gpu.model_dump(exclude_unset=True) if entry.gpu is not None else {}
        gpu = dataclasses.replace(values.gpu, **overrides)
        entries.append(ServerEntry(name=entry.name or server.url, server=server, gpu=gpu))
    return tuple(entries)


def _with_full_default(profiles: dict[str, ProfileFields]) -> dict[str, dict[str, Any]]:
    """Profiles keep only the keys they set; `default` gets every built-in default."""
    kept = {name: profile.model_dump(exclude_unset=True) for name, profile in profiles.items()}
    return {**kept, "default": profiles.get("default", ProfileFields()).model_dump()}


def _check_roots(roots: tuple[WatchRoot, ...], problems: list[str], state_dir: Path) -> None:
    for index, root in enumerate(roots):
        # i2vd's own folders are never input: one that is (or holds) a root would silently hide it.
        for name, folder in (("output_dir", root.output_dir), ("state_dir", state_dir)):
            if folder == root.path or folder in root.path.parents:
                problems.append(
                    f"watch[{index}].path: {root.path} is {name} or "
                    f"inside it ({folder}): give {name} a folder of its own"
                )
        for other_index, other in enumerate(roots):
            if index != other_index and other.path in root.path.parents:
                problems.append(f"watch[{index}].path: {root.path} is inside watch[{other_index}].path {other.path}")
            elif other_index < index and other.path == root.path:
                problems.append(f"watch[{index}].path: {root.path} is the same folder as watch[{other_index}].path")
