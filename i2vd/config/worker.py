"""The config of a GPU host (`i2vd worker -c gpu-host.yaml`): state_dir, server or servers, gpu, retry, executor.

A GPU host watches no folder and writes no output (the ingest host does both), so `watch`, `output_dir` and
`profiles` are not needed; given (one file shared by both hosts), they are validated and not used. Every
problem is reported at once with its path, as for `i2vd run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, Strict, ValidationError, field_validator

from i2vd.config.checks import Folder
from i2vd.config.executor import ExecutorConfig
from i2vd.config.load import (
    ConfigError,
    GpuConfig,
    RetryPolicy,
    ServerEntry,
    _check_across,
    _server_entries,
    read_config_text,
    read_config_yaml,
    validation_problems,
)
from i2vd.config.model import ConfigFile, WatchRoot
from i2vd.config.model_base import empty_list


class WorkerConfigFile(ConfigFile):
    """A GPU host's config: what ConfigFile takes, with no hot folder and no output folder required."""

    output_dir: Folder | None = Field(None, description="not used by `i2vd worker`")
    watch: Annotated[list[WatchRoot], Strict()] = Field(
        default_factory=empty_list, description="not used by `i2vd worker`"
    )

    @field_validator("watch")
    @classmethod
    def _some_folder(cls, roots: list[WatchRoot]) -> list[WatchRoot]:  # overrides ConfigFile's: none is fine here
        return roots


@dataclass(frozen=True)
class WorkerConfig:
    source: str
    state_dir: Path
    log_level: str
    servers: tuple[ServerEntry, ...]
    gpu: GpuConfig
    retry: RetryPolicy
    executor: ExecutorConfig
    stop_grace_seconds: float = 30.0  # on SIGTERM, running jobs may finish this long, then go back to the queue


def load_worker_config(path: Path) -> WorkerConfig:
    return parse_worker_config(read_config_text(path), source=str(path), base_dir=Path(path).resolve().parent)


def parse_worker_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> WorkerConfig:
    data, problems = read_config_yaml(text, source)
    try:
        values = WorkerConfigFile.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as error:
        raise ConfigError(source, validation_problems(error, WorkerConfigFile) + problems) from None
    _check_across(values, problems, roots=False)
    servers = _server_entries(values)
    executor = values.executor
    if executor.kind != "celery":
        problems.append(
            "executor.kind: `i2vd worker` takes jobs from a Celery queue: set executor.kind: celery and "
            "executor.broker (the ingest host's broker)"
        )
    limit = executor.job_timeout_seconds
    for index, entry in enumerate(servers):
        if limit is not None and entry.server.timeout_seconds > limit:
            place = "server" if values.servers is None else f"servers[{index}]"
            problems.append(
                f"{place}.timeout_seconds: {entry.server.timeout_seconds:g} is above executor.job_timeout_seconds "
                f"{limit:g}: a job that long would be delivered to a second worker while it runs"
            )
    if problems:
        raise ConfigError(source, problems)
    return WorkerConfig(
        source=source,
        state_dir=values.state_dir,
        log_level=values.log_level,
        servers=servers,
        gpu=values.gpu,
        retry=values.retry,
        executor=executor,
        stop_grace_seconds=values.stop_grace_seconds,
    )
