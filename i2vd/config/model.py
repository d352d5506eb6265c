"""Every configuration key, declared once: its type, default, bounds and description.

These pydantic models validate the config file and the sidecars, and generate the
documented reference (`i2vd config --example`, config.example.yaml). The classes the
daemon reads at run time (ServerConfig, GpuConfig, RetryPolicy, WatchRoot) are the
frozen dataclasses declared here; `i2vd.config.load` loads a file into them. The validators and
annotated types are in `i2vd.config.checks`, the reference's examples in `i2vd.config.examples`, and
the job's parameters (a profile's resolution, frames, ...) in `i2vd.config.parameters`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    Strict,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from i2vd.config.checks import (
    AutoOrBool,
    Float,
    Folder,
    Int,
    Mapping,
    Template,
    Text,
    Url,
    Windows,
    _gradio_inputs,
    _mapping,
    _timezone,
    problem,
)
from i2vd.config.checks import input_problems as input_problems
from i2vd.config.examples import EXAMPLE_PROFILES, EXAMPLE_SERVERS
from i2vd.config.executor import ExecutorConfig
from i2vd.config.http_model import WEBHOOK_EVENTS as WEBHOOK_EVENTS
from i2vd.config.http_model import HttpConfig, WebhookConfig
from i2vd.config.model_base import SETTINGS, _EmptyIsDefaults, empty_dict, empty_list
from i2vd.config.parameter_limits import profile_field
from i2vd.config.parameters import FIELDS as FIELDS
from i2vd.config.parameters import PARAMETERS
from i2vd.config.parameters import RESOLUTIONS as RESOLUTIONS

DEFAULT_PROMPT = "{{ caption or ('A ' ~ subject ~ ' scene with smooth motion') }}"


SCHEDULE_HELP = (
    'time windows when jobs are dispatched here, in `timezone:` (e.g. ["mon-fri 20:00-07:00", '
    '"sat-sun"]; a range ending before it starts crosses midnight); outside them files are still '
    "journaled and a running job finishes. Empty: always"
)


class _Profile(_EmptyIsDefaults, BaseModel):
    model_config = SETTINGS


# The job's parameters come from their one declaration, between the prompt and the output's fields.
ProfileFields = create_model(
    "ProfileFields",
    __base__=_Profile,
    __doc__="A prompt profile; every field it does not set comes from the `default` profile.",
    __module__=__name__,
    prompt=(Template, Field(DEFAULT_PROMPT, description="Jinja2 template for the prompt")),
    **{parameter.name: profile_field(parameter) for parameter in PARAMETERS},
    output=(
        Template | None,
        Field(None, description="output file name template, e.g. 'sku_{{ stem }}_rotate.mp4'; empty: <stem>.mp4"),
    ),
    collision=(
        Literal["suffix", "overwrite", "fail"],
        Field(
            "suffix",
            description="when the output name holds another job's video: suffix (name-1.mp4, ...), "
            "overwrite (replaced atomically) or fail (the job fails naming the existing video)",
        ),
    ),
)


class SidecarFields(ProfileFields):
    """A folder sidecar (i2vd.yaml) or an image sidecar (<image>.yaml): profile fields, vars, profile, priority."""

    profile: Text | None = Field(None, description="profile for the images here")
    vars: Mapping | None = Field(None, description="extra template variables")
    priority: Int | None = Field(
        None, ge=-1000, le=1000, description="higher goes first (default 0); not part of the video's settings"
    )


@dataclass(frozen=True, config=SETTINGS)
class ServerConfig(_EmptyIsDefaults):
    """The image-to-video server."""

    kind: Literal["builtin", "predict", "gradio", "comfyui"] = Field(
        "builtin",
        description="builtin: the CPU preview engine shipped with i2vd (camera motion from the prompt; "
        "no GPU). predict: an I2VGen-XL Gradio WebUI's /api/predict/. gradio: any Gradio image-to-video app "
        "(3.x to 6.x; version and protocol are detected, `i2vd probe` shows the mapping i2vd would use). "
        "comfyui: a ComfyUI server running `workflow`",
        examples=["predict"],
    )
    url: Url = Field("http://127.0.0.1:7860", description="the server's base URL (gradio: the app's root)")
    path: Text = Field("/api/predict/", description="predict endpoint; some deployments use /predict or /run/predict")
    timeout_seconds: Float = Field(
        900.0, ge=1.0, description="longest one video may take, connect to last byte, before the attempt fails"
    )
    connect_timeout_seconds: Float = Field(10.0, ge=0.1, description="longest a connection may take to open")
    image_encoding: Literal["base64", "data_url"] = Field(
        "base64", description="how the image is sent (data_url: data:image/jpeg;base64,...)"
    )
    api_name: Text | None = Field(
        None,
        description="gradio: the endpoint, e.g. /predict or /generate; empty: the one that takes an image "
        "and returns a video",
    )
    inputs: Annotated[Mapping | None, PlainValidator(lambda value: _gradio_inputs(_mapping(value)))] = Field(
        None,
        description="gradio: the app's parameters, by name or position, from i2vd's fields "
        f"({', '.join(FIELDS)}) or {{value: constant}}; empty: matched by name",
        examples=[{"image": "image", "seed": "seed", "motion_bucket_id": {"value": 127}, "fps_id": "fps"}],
    )
    transport: Literal["auto", "queue", "call"] = Field("auto", description="gradio 4+: how a job is sent")
    oom: Literal["wait", "downgrade", "fail"] = Field(
        "wait",
        description="on a GPU out-of-memory reply: wait (backoff, then the VRAM gate), downgrade (one "
        "resolution step down, recorded) or fail",
    )
    workflow: Folder | None = Field(
        None,
        description="comfyui: the workflow from ComfyUI's Workflow > Export (API), its nodes titled I2VD:image, "
        "I2VD:prompt, I2VD:seed,steps,guidance ... (relative to this file; see examples/workflows/); "
        "`i2vd probe -c` shows what each node gets",
    )
    free_after_job: Annotated[bool, Strict()] = Field(
        False, description="comfyui: POST /free after each job (VRAM back to the GPU; models stay loaded)"
    )
    schedule: Windows = Field(None, description=SCHEDULE_HELP, examples=[["mon-fri 20:00-07:00", "sat-sun"]])


@dataclass(frozen=True, config=SETTINGS)
class GpuConfig(_EmptyIsDefaults):
    """The VRAM gate: a job starts only while the GPU has room."""

    enabled: AutoOrBool = Field(
        "auto", description="auto: on when NVML finds a GPU, off (and said so) otherwise; true or false"
    )
    source: Literal["nvml", "command", "comfyui", "none"] = Field(
        "nvml", description="where the GPU's memory use is read (comfyui: the ComfyUI server's /system_stats)"
    )
    max_used_mb: Int | None = Field(10000, ge=0, description="wait while the GPU uses more than this")
    min_free_mb: Int | None = Field(
        None, ge=0, description="or: wait while less than this is free (for servers that keep weights resident)"
    )
    poll_seconds: Float = Field(5.0, ge=0.05, description="how often a closed gate reads again")
    index: Int = Field(0, ge=0, description="NVML index of the GPU")
    command: Text | None = Field(
        None,
        description='with source: command, prints used MiB, e.g. "ssh gpu-host nvidia-smi '
        '--query-gpu=memory.used,memory.total --format=csv,noheader,nounits"',
    )
    on_error: Literal["wait", "proceed"] = Field("wait", description="when the GPU cannot be read")
    stuck_minutes: Float = Field(
        10.0, ge=0.1, description="closed this long while i2vd runs nothing there: status and log say so, with advice"
    )


# A server's own `gpu:` sets only the keys it gives; the rest come from the top-level `gpu:`.
GpuOverrides = create_model(
    "GpuOverrides",
    __config__=SETTINGS,
    __base__=None,
    **{name: (info.annotation, info) for name, info in GpuConfig.__pydantic_fields__.items()},
)


@dataclass(frozen=True, config=SETTINGS)
class ServerItem(ServerConfig):
    """One of several servers: every `server` key, a name, and a gpu of its own."""

    name: Text | None = Field(None, description="a short name for status and the log (default: the url)")
    gpu: GpuOverrides | None = Field(None, description="this server's VRAM gate; keys not given come from `gpu:`")


@dataclass(frozen=True, config=SETTINGS)
class RetryPolicy(_EmptyIsDefaults):
    """Retry policy: only the job's own failures count."""

    attempts: Int = Field(3, ge=1, le=100, description="tries per job before it fails")
    initial_backoff_seconds: Float = Field(
        10.0, ge=0.0, description="wait after the first failure; then twice as long each time"
    )
    max_backoff_seconds: Float = Field(600.0, ge=0.0, description="longest wait between tries")
    max_interruptions: Int = Field(3, ge=1, description="daemon deaths during one job (in a row) before it fails")

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise problem("is below retry.initial_backoff_seconds", key="max_backoff_seconds")
        return self

    def backoff_seconds(self, failures: int) -> float:
        """Wait after the `failures`-th failure: doubles each time, capped."""
        return min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** max(0, failures - 1))


@dataclass(frozen=True, config=SETTINGS)
class WatchRoot(_EmptyIsDefaults):
    """A hot folder, watched recursively."""

    path: Folder = Field(description="the folder", examples=["/srv/i2v/in"])
    settle_seconds: Float = Field(5.0, ge=0.0, description="size and mtime unchanged this long, and the image decodes")
    poll: AutoOrBool = Field(
        "auto", description="auto (polling on network filesystems), true (for network shares) or false"
    )
    rescan_seconds: Float = Field(300.0, ge=1.0, description="periodic reconcile: catches missed events")
    after: Literal["keep", "move"] = Field(
        "keep", description="keep, or move (into <root>/.i2vd-done/, same relative path); never delete"
    )
    output_dir: Folder | None = Field(
        None, description="this root's own output folder (default: output_dir)", examples=["/srv/i2v/out-in"]
    )
    on_failure: Literal["keep", "move"] = Field(
        "keep",
        description="a source whose job failed for good: keep it in place, or move it into "
        "<root>/.i2vd-failed/ (same relative path) with <image filename>.error.txt beside it; "
        "`i2vd retry` moves it back",
    )
    schedule: Windows = Field(None, description=SCHEDULE_HELP, examples=[["sat-sun"]])
    max_image_mb: Float = Field(
        256.0,
        gt=0.0,
        description="a bigger file fails its job without being read (a 2 GB layered TIFF must not fill the daemon's "
        "memory); raise it if your server takes such files",
    )


class ConfigFile(_EmptyIsDefaults, BaseModel):
    """The config file as written: `i2vd.config.load.parse_config` turns it into a Config."""

    model_config = SETTINGS

    state_dir: Folder = Field(
        Path("/var/lib/i2vd"),
        description="the SQLite journal (journal.sqlite3) and the daemon lock live here, and "
        "incoming/: replies in transit and received videos not yet written (room for the largest video you expect). "
        "Local disk only: SQLite locking is not reliable on NFS/SMB",
    )
    output_dir: Folder = Field(
        description="videos mirror the input tree: <output_dir>/<folder inside the root>/<stem>.mp4, with "
        "<video>.json beside each. Outputs inside a watched root are never taken as input",
        examples=["/srv/i2v/out"],
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log verbosity")
    timezone: Annotated[str | None, PlainValidator(_timezone)] = Field(
        None,
        description="IANA time zone for every `schedule:` (e.g. Europe/Berlin); empty: the host's",
        examples=["Europe/Berlin"],
    )
    stop_grace_seconds: Float = Field(
        30.0,
        ge=0.0,
        description="on stop, the running job may finish this long, then goes back to the queue "
        "(keep it below the unit's TimeoutStopSec=60)",
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="the image-to-video server")
    servers: Annotated[list[ServerItem], Strict()] | None = Field(
        None,
        min_length=1,
        description="several servers (one per GPU) pull from the one journal, one job at a time "
        "each: give `servers:` instead of `server:`. Each takes every `server` key, a `name`, and a `gpu:` of its "
        "own whose keys override the top-level `gpu:` below",
        examples=[EXAMPLE_SERVERS],
    )
    gpu: GpuConfig = Field(
        default_factory=GpuConfig, description="the VRAM gate: a job starts only while the GPU has room"
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="retry policy: only the job's own failures count"
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="where jobs run (local or celery)")
    watch: Annotated[list[WatchRoot], Strict()] = Field(
        default_factory=empty_list,
        validate_default=True,
        description="hot folders",
        examples=[[{"path": "/srv/i2v/in"}]],
    )
    profiles: Annotated[dict[str, ProfileFields], Strict()] = Field(
        default_factory=empty_dict,
        description="profiles inherit every field from `default`. Prompts and `output` are Jinja2 templates with: "
        'stem, subject ("golden_retriever-2" -> "golden retriever 2"), filename, folder, caption, exif_date, '
        "exif_camera and the sidecar's vars. A folder picks its profile with an i2vd.yaml sidecar: `profile: beach` "
        "(plus `vars:` and field overrides). Frames, fps, steps must suit every server (celery: each GPU host's)",
        examples=[EXAMPLE_PROFILES],
    )

    http: HttpConfig | None = Field(
        None,
        description="the web dashboard (GET /), JSON API (/api/...), videos, /metrics and /healthz",
        examples=[{"listen": "127.0.0.1:8787", "token_file": "/etc/i2vd/token"}],
    )

    webhooks: Annotated[list[WebhookConfig], Strict()] | None = Field(
        None,
        description="POST each event (done, failed, parked, server_down, server_up) as "
        "{event, at, job: <the audit record>} (server events carry the server); kept in the journal until "
        "delivered, retried 2 s, 4 s ... up to every 5 min for 24 h; header X-I2VD-Delivery is a stable id "
        "to dedupe",
        examples=[
            [
                {
                    "url": "https://hooks.example.com/i2vd",
                    "events": ["done", "failed"],
                    "secret_file": "/etc/i2vd/webhook-secret",
                }
            ]
        ],
    )

    @field_validator("http", mode="before")
    @classmethod
    def _empty_http(cls, value: Any) -> Any:
        return {} if value is None else value  # `http:` alone: the dashboard on its default address

    @field_validator("watch")
    @classmethod
    def _some_folder(cls, roots: list[WatchRoot]) -> list[WatchRoot]:
        if not roots:
            raise problem("needs at least one hot folder")
        return roots

    @field_validator("servers")
    @classmethod
    def _distinct_names(cls, servers: list[ServerItem] | None) -> list[ServerItem] | None:
        names = [entry.name or entry.url for entry in servers or []]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise problem("; ".join(f"{name!r} appears twice: give each server its own name" for name in twice))
        return servers

    @field_validator("profiles", mode="before")
    @classmethod
    def _names_are_text(cls, profiles: Any) -> Any:
        return {str(name): value for name, value in profiles.items()} if isinstance(profiles, dict) else profiles
