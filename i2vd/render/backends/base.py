"""The one small interface every image-to-video backend implements, and its errors.

The worker treats errors by class, never by message: that is how a dead server
(no attempt used), a full GPU (wait, then retry) and a bad reply (an attempt used)
get different handling without the worker knowing any protocol.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Protocol

from i2vd.config.parameters import PARAMETERS
from i2vd.config.parameters import RESOLUTIONS as RESOLUTIONS  # the backends' view of the resolution steps


@dataclass(frozen=True, kw_only=True)
class _Request:
    image: bytes
    image_name: str
    prompt: str
    # Where the backend streams the reply: the video comes back as a file there (VideoReply.path),
    # never whole in memory. None: a private temp folder, and the video comes back as bytes.
    reply_dir: Path | None = None
    job_id: int | None = None  # for a server that names outputs after the job (ComfyUI: i2vd/<job id>)
    key: str | None = None  # the job's idempotency key: what a server-side job is found again by after a restart
    source_path: str | None = None  # where the image is (executor: celery sends a large one by a shared path)
    # Called once the request has left (its body handed to the connection) by a backend whose `signals_sent` is
    # True: the worker's work beside the call waits for it rather than compete with the sending (jobs/beside.py).
    on_sent: Callable[[], None] | None = field(default=None, compare=False, repr=False)


# One video to make: the image, its prompt, and each of the job's parameters (i2vd.config.parameters: one
# attribute each, `request.frames`; an optional one defaults to None). Every argument is given by name.
VideoRequest = make_dataclass(
    "VideoRequest",
    [
        (parameter.name, parameter.python_type(), field(default=None))
        if parameter.optional
        else (parameter.name, parameter.python_type())
        for parameter in PARAMETERS
    ],
    bases=(_Request,),
    frozen=True,
    kw_only=True,
)
VideoRequest.__module__ = __name__


def request_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """A job's parameters as its request takes them: one it has no value for (journaled before that parameter
    was declared) gets the declared default."""
    return {parameter.name: params.get(parameter.name, parameter.default) for parameter in PARAMETERS}


@dataclass(frozen=True)
class VideoReply:
    data: bytes | None = None
    server_seconds: float = 0.0
    path: Path | None = None  # the video file, in the request's reply_dir; the caller owns it


@contextmanager
def reply_folder(request: VideoRequest) -> Iterator[Path]:
    """The folder a backend writes its reply files into (made when missing)."""
    if request.reply_dir is not None:
        request.reply_dir.mkdir(parents=True, exist_ok=True)
        yield request.reply_dir
        return
    folder = Path(tempfile.mkdtemp(prefix="i2vd-reply-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def video_reply(request: VideoRequest, video: Path, server_seconds: float) -> VideoReply:
    """The reply as the request asked for it: the file (in reply_dir), or its bytes."""
    if request.reply_dir is None:
        return VideoReply(data=video.read_bytes(), server_seconds=server_seconds)
    return VideoReply(path=video, server_seconds=server_seconds)


class BackendError(Exception):
    """The job failed on the server side; a later attempt may succeed."""

    status: int | None = None  # the HTTP status that said so, when one did (failures.status_error)


class ServerUnavailable(BackendError):
    """The server could not be reached at all: not the job's fault, uses no attempt."""


class ServerOutOfMemory(BackendError):
    """The server ran out of GPU memory for this request."""


class BadReply(BackendError):
    """The server answered, but not with a usable video."""


class BadInput(BackendError):
    """The request itself cannot succeed (an image the engine cannot read): never retried."""


class CallTimedOut(BackendError):
    """timeout_seconds ran out before the server call finished (one attempt)."""


class ConnectionDropped(BackendError):
    """The server accepted the connection and lost it mid-call (one attempt)."""


class NotFound(BackendError):
    """HTTP 404: the route or the file is not (or no longer) there (one attempt; Gradio discovers again)."""


class LoginRequired(ServerUnavailable):
    """HTTP 401/403: the server wants credentials i2vd does not have; every job would fail the same way."""


class Backend(Protocol):
    kind: str
    url: str

    def describe(self) -> dict[str, str]:
        """kind, url and version of the server, for status and the audit record."""

    def generate(self, request: VideoRequest) -> VideoReply:
        """Make one video; raises a BackendError subclass on failure."""

    def close(self) -> None:
        """Release connections."""
