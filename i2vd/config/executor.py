"""`executor:` — where jobs run: on this host's servers (local), or on GPU hosts through a Celery queue (celery).

Declared here, beside the other models (model.py), with its rules: a celery executor needs a Redis broker and
the celery package; `path_map` maps absolute folders to absolute folders. The timing rule (SPEC "More than one
machine"): a task's visibility timeout is the longest job (`job_timeout_seconds`, by default the longest
`timeout_seconds` of the config's servers) plus half of `redelivery_margin_seconds`; a worker sweeps for
abandoned tasks every quarter of the margin, so a task whose worker died is delivered again within
`timeout_seconds` + the margin (60 s unless set).
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PlainValidator, field_validator, model_validator
from pydantic.dataclasses import dataclass

from i2vd.config.checks import Float, Int, Text, problem
from i2vd.config.model_base import SETTINGS

BROKER_SCHEMES = ("redis", "rediss")
CELERY_MISSING = "celery is not installed here: pip install 'i2vd[celery]'"


def celery_installed() -> bool:
    """Whether `import celery` would work, without importing it (local users never import celery)."""
    try:
        return importlib.util.find_spec("celery") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["celery"] is None (import blocked)
        return False


def _broker(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problem(f"{value!r} is not a string")
    parts = urlsplit(value)
    if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
        raise problem(f"{safe_url(value)!r} is not a Redis URL (redis://host:6379/0 or rediss://...)")
    return value


def _absolute(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.startswith("/")):
        raise problem(f"{value!r} is not an absolute folder")
    return value.rstrip("/") or "/" if value is not None else None


def _path_map(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise problem(f"{value!r} is not a mapping of folder (this host) to folder (the GPU hosts)")
    problems, mapped = [], {}
    for here, there in value.items():
        for side, path in (("key", here), ("value", there)):
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"{here!r}: the {side} {path!r} is not an absolute folder")
        if isinstance(here, str) and isinstance(there, str):
            mapped[here.rstrip("/") or "/"] = there.rstrip("/") or "/"
    if problems:
        raise problem("; ".join(problems))
    if len(set(mapped.values())) < len(mapped):
        raise problem("two folders map to the same folder: results could not be mapped back")
    return mapped


def safe_url(url: str) -> str:
    """The URL without its password, for status, logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, config=SETTINGS)
class ExecutorConfig:
    """Where jobs run: here, or on GPU hosts through a Celery queue."""

    kind: Literal["local", "celery"] = Field(
        "local",
        description="local: this host's server(s). celery: `i2vd run` publishes each due job as a task on "
        "`queue`; `i2vd worker -c gpu-host.yaml` on each GPU host takes them (its own servers and VRAM gate) "
        "and returns the video; this host writes every output and keeps the journal",
    )
    broker: Annotated[str | None, PlainValidator(_broker)] = Field(
        None,
        description="celery: the Redis broker, redis://[:password@]host:6379/0 (also the result store, unless "
        "result_backend is set)",
        examples=["redis://queue-host:6379/0"],
    )
    result_backend: Annotated[str | None, PlainValidator(_broker)] = Field(
        None, description="celery: where results are kept (a Redis URL); empty: the broker"
    )
    queue: Text = Field("i2vd", min_length=1, description="celery: the queue's name (the same on every host)")
    concurrency: Int = Field(
        1,
        ge=1,
        le=256,
        description="celery, on the ingest host: jobs in flight across the cluster at once: the number of GPUs "
        "the workers have (a task no worker starts within job_timeout_seconds + the margin is sent again)",
    )
    max_inline_mb: Float = Field(
        32.0,
        ge=0.0,
        description="celery: an image up to this size travels inside the task, a larger one by its shared path "
        "(path_map); so does a video (through spool_dir)",
    )
    path_map: Annotated[dict[str, str] | None, PlainValidator(_path_map)] = Field(
        None,
        description="celery: folder on the ingest host -> the same folder as the GPU hosts mount it (the same "
        "path twice when they mount it alike), for images and videos above max_inline_mb",
        examples=[{"/srv/i2v/in": "/mnt/i2v/in"}],
    )
    spool_dir: Annotated[str | None, PlainValidator(_absolute)] = Field(
        None,
        description="celery: a folder every host mounts, as the ingest host sees it (under a path_map folder, "
        "which gives the GPU hosts' view): a video above max_inline_mb comes back through it; empty: inside the "
        "result",
        examples=["/srv/i2v/spool"],
    )
    job_timeout_seconds: Float | None = Field(
        None,
        ge=1.0,
        description="celery: the longest one job may take on any GPU host; empty: the longest "
        "timeout_seconds of this config's servers. Give every host the same value when they differ",
    )
    redelivery_margin_seconds: Float = Field(
        60.0,
        ge=1.0,
        description="celery: a task whose worker died is delivered again within job_timeout_seconds + this",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, queue: str) -> str:
        if not queue.strip() or any(character.isspace() for character in queue):
            raise problem(f"{queue!r} is not a queue name (no spaces)")
        return queue

    @model_validator(mode="after")
    def _celery_needs(self) -> ExecutorConfig:
        if self.kind != "celery":
            return self
        if self.broker is None:
            raise problem("is required when executor.kind is celery (e.g. redis://queue-host:6379/0)", key="broker")
        if not celery_installed():
            raise problem(CELERY_MISSING, key="kind")
        if self.spool_dir is not None and not any(
            self.spool_dir == here or self.spool_dir.startswith(here.rstrip("/") + "/") for here in self.path_map or {}
        ):
            raise problem(f"{self.spool_dir} is under no folder of executor.path_map", key="spool_dir")
        return self
