"""`server.kind: gradio`: any Gradio image-to-video app, 3.x to 6.x, over its own HTTP API.

Discovery (lazy, re-done after ServerUnavailable): `GET /config` tells the version, the protocol
and the API prefix; `GET {prefix}/info` (or /config alone when /info is hidden or broken) tells the
endpoints, of which one is chosen and its parameters bound to i2vd's fields (gradio_app.py, gradio_mapping.py).

Transports, by what the app speaks:
- 3.x ("ws"): an app with a queue (`enable_queue`, after `.queue()`) gets each job through its websocket
  queue `/queue/join`, as Gradio's own client sends it (the `websockets` package, imported only then), which
  also reports queue position; a direct call would skip that queue even where api_open=True allows it. An
  app without a queue gets `POST /run/<api>` (then `/api/<api>/`) with `{"data", "fn_index"}`, the image as
  a data URL; a refusal there (404, or 401 "Not authorized to skip the queue" on 3.20 and 3.39) also
  means the websocket queue.
- 4.x-6.x ("sse", "sse_v1" ... "sse_v3"): the image is uploaded (`POST {prefix}/upload`), then the
  job joins the queue as the official clients do (`POST {prefix}/queue/join` + the SSE stream
  `GET {prefix}/queue/data`; 4.0-4.9's "sse": `GET {prefix}/queue/join` + `send_data`): it reports
  queue position and progress, and a job past timeout_seconds is cancelled with `POST {prefix}/cancel`.
  `transport="call"` (also the choice for a protocol newer than this module knows) uses the
  public curl API instead: `POST {prefix}/call/<api>` + `GET {prefix}/call/<api>/<event_id>`.
  It is not the default because it reports no progress, does not exist before 4.2x, hung on
  4.20, and before 6.x sends an app's error as `null` (so "CUDA out of memory" is lost).
The video comes back as a file reference, downloaded with `GET {prefix}/file=<path>`.
Every network wait is bounded by what is left of timeout_seconds; SSE reads included.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

import requests

from i2vd.config.checks import input_problems
from i2vd.render.backends import http, sessions
from i2vd.render.backends.base import (
    BackendError,
    BadReply,
    NotFound,
    ServerUnavailable,
    VideoReply,
    VideoRequest,
    reply_folder,
    video_reply,
)
from i2vd.render.backends.failures import BODY_EXCERPT
from i2vd.render.backends.gradio_app import AppMismatch, choose_endpoint
from i2vd.render.backends.gradio_mapping import build_mapping
from i2vd.render.backends.gradio_protocol import progress_message
from i2vd.render.backends.gradio_v3 import Gradio3Transport
from i2vd.render.backends.gradio_video import GradioVideo
from i2vd.render.backends.gradio_wire import (
    EventStream,
    Target,
    app_error,
    discover_app,
    http_error,
    json_of,
    json_text,
    whole,
)

log = logging.getLogger(__name__)

QUEUE_PROTOCOLS = ("sse", "sse_v1", "sse_v2", "sse_v2.1", "sse_v3")
TRANSPORTS = ("auto", "queue", "call")
DISCOVERY_READ_TIMEOUT = 30.0
ProgressCallback = Callable[[str], None]


_Deadline = http.CallTimedOut  # timeout_seconds ran out (the job is cancelled first where the app allows)


class GradioBackend(Gradio3Transport, GradioVideo):
    kind = "gradio"

    def __init__(
        self,
        url: str,
        *,
        api_name: str | None = None,
        inputs: dict | None = None,
        timeout_seconds: float = 900,
        connect_timeout_seconds: float = 10,
        session: requests.Session | None = None,
        on_progress: ProgressCallback | None = None,
        transport: str = "auto",
    ) -> None:
        problems = input_problems(inputs)
        if problems:
            raise ValueError("; ".join(problems))
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.url = url.rstrip("/")
        self.api_name = api_name.lstrip("/") if api_name else None
        self.inputs = dict(inputs) if inputs else None
        self.timeout_seconds = float(timeout_seconds)
        self.connect_timeout_seconds = float(connect_timeout_seconds)
        self.transport = transport
        self.on_progress = on_progress
        self._session = sessions.server_session(session)
        self._lock = threading.Lock()  # guards _target and _describe_failed
        self._target: Target | None = None
        self._describe_failed = False
        self._last_progress = ""  # on_progress hears each new message once

    # -- the Backend interface -------------------------------------------------------------
    def describe(self) -> dict[str, str]:
        with self._lock:
            target = self._target
            if target is None and not self._describe_failed:
                try:
                    # bounded as a whole too: status and records call this, a dripping server must not hang them
                    with http.Deadline(
                        self.connect_timeout_seconds + min(self.timeout_seconds, DISCOVERY_READ_TIMEOUT), self.url
                    ):
                        target = self._target = self._discover()
                except BackendError:
                    self._describe_failed = True  # not again until a generate() has run
        if target is None:
            return {
                "kind": self.kind,
                "url": self.url,
                "version": "unknown",
                "protocol": "unknown",
                "api_name": f"/{self.api_name}" if self.api_name else "",
            }
        return {
            "kind": self.kind,
            "url": self.url,
            "version": target.app.version,
            "protocol": target.app.protocol,
            "api_name": target.mapping.endpoint.title,
        }

    def close(self) -> None:
        self._session.close()

    def generate(self, request: VideoRequest) -> VideoReply:
        started = time.monotonic()
        self._last_progress = ""
        # The whole call, discovery to the last byte of the video, inside one deadline (http.py).
        with http.Deadline(self.timeout_seconds, self.url) as whole, reply_folder(request) as folder:
            deadline = whole.ends
            video, reply = http.spool_name(folder, ".mp4"), None
            reply_file = http.spool_name(folder, ".json")  # 3.x: the /run reply, read from there (replies.py)
            try:
                target = self._ensure_target()
                if target.app.is_v3:
                    outputs = self._run_v3(target, request, deadline, reply_file)
                elif self._transport(target) == "queue":
                    outputs = self._run_queue(target, request, deadline)
                else:
                    outputs = self._run_call(target, request, deadline)
                self._video(target, outputs, deadline, video)
                reply = video_reply(request, video, time.monotonic() - started)
                return reply
            except ServerUnavailable:
                self._forget()
                raise
            except _Deadline:
                raise whole.error() from None
            except NotFound:  # the app may have restarted with other routes
                self._forget()
                raise
            finally:
                reply_file.unlink(missing_ok=True)
                if reply is None:
                    video.unlink(missing_ok=True)

    # -- discovery -------------------------------------------------------------------------
    def _ensure_target(self) -> Target:
        with self._lock:
            self._describe_failed = False
            if self._target is None:
                self._target = self._discover()
            return self._target

    def _forget(self) -> None:
        with self._lock:
            self._target = None

    def _discover(self) -> Target:
        app = discover_app(
            self._session, self.url, self.connect_timeout_seconds, min(self.timeout_seconds, DISCOVERY_READ_TIMEOUT)
        )
        endpoint = choose_endpoint(app, self.api_name)
        return Target(app, build_mapping(endpoint, self.inputs))

    def _transport(self, target: Target) -> str:
        if self.transport != "auto":
            return self.transport
        return "queue" if target.app.protocol in QUEUE_PROTOCOLS else "call"

    def _upload(self, target: Target, request: VideoRequest, deadline: float) -> dict:
        suffix = PurePath(request.image_name).suffix.lower()
        name = "input" + (
            suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
        )  # the app's file name: plain ASCII
        path = f"{target.app.api_prefix}/upload"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        upload = http.MultipartBody("files", name, request.image, mime)  # streamed: no copy of the image
        # 413: BadInput, the image is too large for this server (failures.status_error)
        response = self._http("POST", path, deadline, data=upload, headers={"Content-Type": upload.content_type})
        paths = json_of(response, f"POST {path}")
        if not (isinstance(paths, list) and paths and isinstance(paths[0], str)):
            raise BadReply(f"POST {path} answered without a file path: {response.text[:BODY_EXCERPT]!r}")
        return {"path": paths[0], "orig_name": request.image_name, "meta": {"_type": "gradio.FileData"}}

    def _run_queue(self, target: Target, request: VideoRequest, deadline: float) -> list:
        prefix, endpoint = target.app.api_prefix, target.mapping.endpoint
        data = target.mapping.arguments(request, self._upload(target, request, deadline))
        session_hash = uuid.uuid4().hex[:11]
        body = {
            "data": data,
            "event_data": None,
            "fn_index": endpoint.fn_index,
            "session_hash": session_hash,
            "trigger_id": None,
        }
        event_id = None
        if target.app.protocol == "sse":  # Gradio 4.0: the stream is opened first and asks for the data
            stream = self._stream(
                f"{prefix}/queue/join", deadline, params={"fn_index": endpoint.fn_index, "session_hash": session_hash}
            )
        else:
            event_id = self._event_id(
                self._http("POST", f"{prefix}/queue/join", deadline, json=body), f"{prefix}/queue/join"
            )
            stream = self._stream(f"{prefix}/queue/data", deadline, params={"session_hash": session_hash})
        try:
            for _, text in stream:
                message = json_text(text, f"{prefix}/queue/data")
                kind = message.get("msg") if isinstance(message, dict) else None
                if kind == "send_data":
                    event_id = message.get("event_id")
                    self._http("POST", f"{prefix}/queue/data", deadline, json={**body, "event_id": event_id})
                elif kind == "queue_full":
                    raise ServerUnavailable(f"the queue of {self.url} is full")
                elif kind == "unexpected_error":
                    raise BackendError(f"the Gradio server failed: {message.get('message')}")
                elif kind == "process_completed" and message.get("event_id") in (None, event_id):
                    return self._completed(message)
                elif kind == "close_stream":
                    break
                else:
                    self._report(message)
        except _Deadline:
            stream.close()
            self._cancel(target, session_hash, event_id)
            raise
        finally:
            stream.close()
        raise BackendError(f"{self.url} closed the event stream without a result")

    def _run_call(self, target: Target, request: VideoRequest, deadline: float) -> list:
        prefix, endpoint = target.app.api_prefix, target.mapping.endpoint
        if not endpoint.api_name:
            raise AppMismatch(f"{endpoint.title} has no api_name, which the /call API needs; use the queue transport")
        data = target.mapping.arguments(request, self._upload(target, request, deadline))
        path = f"{prefix}/call/{endpoint.api_name}"
        # No session_hash of our own: before 6.x the result stream looks the job up by its event id
        # as the session ("404: Session not found" otherwise), which is also what /cancel then needs.
        event_id = self._event_id(self._http("POST", path, deadline, json={"data": data}), path)
        session_hash = event_id
        stream = self._stream(f"{path}/{event_id}", deadline)
        try:
            for event, text in stream:
                if event == "complete":
                    outputs = json_text(text, path)
                    if not isinstance(outputs, list):
                        raise BadReply(f"{path} completed without an output list: {text[:BODY_EXCERPT]!r}")
                    return outputs
                if event == "error":
                    raise app_error(json_text(text, path) if text.strip() not in ("", "null") else None)
        except _Deadline:
            stream.close()
            self._cancel(target, session_hash, event_id)
            raise
        finally:
            stream.close()
        raise BackendError(f"{self.url} closed the event stream of {path} without a result")

    def _event_id(self, response: requests.Response, path: str) -> str:
        reply = json_of(response, f"POST {path}")
        if not isinstance(reply, dict) or not reply.get("event_id"):
            raise BadReply(f"POST {path} answered without an event_id: {response.text[:BODY_EXCERPT]!r}")
        return str(reply["event_id"])

    def _cancel(self, target: Target, session_hash: str, event_id: str | None) -> None:
        """Best effort: /cancel (4.29+), else /reset (older 4.x); the closed stream does the rest."""
        if event_id is None:
            return
        prefix = target.app.api_prefix
        body = {"session_hash": session_hash, "fn_index": target.mapping.endpoint.fn_index, "event_id": event_id}
        for path, payload in ((f"{prefix}/cancel", body), (f"{prefix}/reset", {"event_id": event_id})):
            try:
                with http.Deadline(self.connect_timeout_seconds + 5, self.url):  # the job's own deadline has passed
                    response = self._session.post(
                        self.url + path, json=payload, timeout=(self.connect_timeout_seconds, 5)
                    )
            except requests.RequestException:
                return
            if response.status_code < 400:
                return

    def _completed(self, message: dict) -> list:
        output = message.get("output")
        if not message.get("success", True) or (
            isinstance(output, dict) and "error" in output and "data" not in output
        ):
            raise app_error(output)
        data = output.get("data") if isinstance(output, dict) else None
        if not isinstance(data, list):
            raise BadReply(f"the job completed without outputs: {json.dumps(message)[:BODY_EXCERPT]}")
        return data

    def _report(self, message: Any) -> None:
        if self.on_progress is not None and isinstance(message, dict):
            text = progress_message(message)
            if text and text != self._last_progress:
                self._last_progress = text
                try:
                    self.on_progress(text)
                except Exception:  # a broken observer must not fail the job
                    log.exception("on_progress callback failed")

    # -- HTTP ------------------------------------------------------------------------------
    def _http(
        self,
        method: str,
        path: str,
        deadline: float,
        *,
        allow: tuple[int, ...] = (),
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        try:
            response = self._session.request(
                method,
                self.url + path,
                timeout=(min(self.connect_timeout_seconds, remaining), remaining),
                stream=stream,
                **kwargs,
            )
        except requests.RequestException as error:
            # refused: the server is down (no attempt); made, then lost: dropped mid-job (one attempt)
            raise http.classify(error, whole(), self.url + path) from None
        if whole().expired:  # the deadline shut the connection under a reply: not a reply
            response.close()
            raise _Deadline()
        if response.status_code >= 400 and response.status_code not in allow:
            raise http_error(response, f"{method} {path}")
        return response

    def _stream(self, path: str, deadline: float, **kwargs: Any) -> EventStream:
        response = self._http("GET", path, deadline, stream=True, headers={"Accept": "text/event-stream"}, **kwargs)
        return EventStream(response, deadline)
