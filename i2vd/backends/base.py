"""The one small interface every image-to-video backend implements, and its errors.

The worker treats errors by class, never by message: that is how a dead server
(no attempt used), a full GPU (wait, then retry) and a bad reply (an attempt used)
get different handling without the worker knowing any protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from i2vd.config import RESOLUTIONS  # noqa: F401 - re-exported: the backends' view of the resolution steps



@dataclass(frozen=True)
class VideoRequest:
    image: bytes
    image_name: str
    prompt: str
    resolution: str
    frames: int
    fps: int
    steps: int
    guidance: float
    seed: int | None = None
    job_id: int | None = None  # for a server that names outputs after the job (ComfyUI: i2vd/<job id>)
    key: str | None = None  # the job's idempotency key: what a server-side job is found again by after a restart


@dataclass(frozen=True)
class VideoReply:
    data: bytes
    server_seconds: float


class BackendError(Exception):
    """The job failed on the server side; a later attempt may succeed."""


class ServerUnavailable(BackendError):
    """The server could not be reached at all: not the job's fault, uses no attempt."""


class ServerOutOfMemory(BackendError):
    """The server ran out of GPU memory for this request."""


class BadReply(BackendError):
    """The server answered, but not with a usable video."""


class BadInput(BackendError):
    """The request itself cannot succeed (an image the engine cannot read): never retried."""


class Backend(Protocol):
    kind: str
    url: str

    def describe(self) -> dict[str, str]:
        """kind, url and version of the server, for status and the audit record."""

    def generate(self, request: VideoRequest) -> VideoReply:
        """Make one video; raises a BackendError subclass on failure."""

    def close(self) -> None:
        """Release connections."""
