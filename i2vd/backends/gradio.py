"""`server.kind: gradio`: any Gradio image-to-video app, 3.x to 6.x, over its own HTTP API.

Discovery (lazy, re-done after ServerUnavailable): `GET /config` tells the version, the protocol
and the API prefix; `GET {prefix}/info` (or /config alone when /info is hidden or broken) tells the
endpoints, of which one is chosen and its parameters bound to i2vd's fields (gradio_protocol.py).

Transports, by what the app speaks:
- 3.x ("ws"): `POST /run/<api>` (then `/api/<api>/`) with `{"data", "fn_index"}`, the image as a
  data URL; when the app refuses direct calls (api_open=False: 404, or 401 "Not authorized to skip the
  queue" on 3.20 and 3.39), its websocket queue
  `/queue/join` (the `websockets` package, imported only then), which also reports queue position.
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
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from i2vd import __version__
from i2vd.backends import http, replies
from i2vd.backends.base import (
    BackendError,
    BadInput,
    BadReply,
    ServerOutOfMemory,
    ServerUnavailable,
    VideoReply,
    VideoRequest,
    reply_folder,
    video_reply,
)
from i2vd.backends.gradio_protocol import (
    App,
    AppMismatch,
    ParameterMap,
    build_mapping,
    choose_endpoint,
    error_text,
    input_problems,
    iter_sse,
    progress_message,
    read_app,
)
from i2vd.backends.predict import BODY_EXCERPT, _reason, encode_image, looks_out_of_memory

log = logging.getLogger(__name__)

QUEUE_PROTOCOLS = ("sse", "sse_v1", "sse_v2", "sse_v2.1", "sse_v3")
TRANSPORTS = ("auto", "queue", "call")
DISCOVERY_READ_TIMEOUT = 30.0
WEBSOCKETS_MAJOR = 15  # the sync client with keepalive off (ping_interval=None) and recv(timeout)
ProgressCallback = Callable[[str], None]


@dataclass
class _Target:
    """What discovery found: the app, the chosen endpoint's parameter map, and how to call it."""

    app: App
    mapping: ParameterMap
    v3_http_path: str | None = None  # 3.x: the path that answered; "" once the app refused direct calls


_Deadline = http.CallTimedOut  # timeout_seconds ran out (the job is cancelled first where the app allows)


class GradioBackend:
    kind = "gradio"

    def __init__(self, url: str, *, api_name: str | None = None, inputs: dict | None = None,
                 timeout_seconds: float = 900, connect_timeout_seconds: float = 10,
                 session: requests.Session | None = None, on_progress: ProgressCallback | None = None,
                 transport: str = "auto") -> None:
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
        self._session = http.mount_deadline_adapter(session or requests.Session())
        self._session.headers["User-Agent"] = f"i2vd/{__version__}"
        self._lock = threading.Lock()  # guards _target and _describe_failed
        self._target: _Target | None = None
        self._describe_failed = False
        self._last_progress = ""  # on_progress hears each new message once

    # -- the Backend interface -------------------------------------------------------------
    def describe(self) -> dict[str, str]:
        with self._lock:
            target = self._target
            if target is None and not self._describe_failed:
                try:
                    # bounded as a whole too: status and records call this, a dripping server must not hang them
                    with http.Deadline(self.connect_timeout_seconds + min(self.timeout_seconds, DISCOVERY_READ_TIMEOUT),
                                       self.url):
                        target = self._target = self._discover()
                except BackendError:
                    self._describe_failed = True  # not again until a generate() has run
        if target is None:
            return {"kind": self.kind, "url": self.url, "version": "unknown", "protocol": "unknown",
                    "api_name": f"/{self.api_name}" if self.api_name else ""}
        return {"kind": self.kind, "url": self.url, "version": target.app.version, "protocol": target.app.protocol,
                "api_name": target.mapping.endpoint.title}

    def close(self) -> None:
        self._session.close()

    def generate(self, request: VideoRequest) -> VideoReply:
        started = time.monotonic()
        self._last_progress = ""
        # The whole call, discovery to the last byte of the video, inside one deadline (http.py).
        with http.Deadline(self.timeout_seconds, self.url) as whole, reply_folder(request) as folder:
            deadline = whole.ends
            video, reply = http.spool_name(folder, ".mp4"), None
            try:
                target = self._ensure_target()
                if target.app.is_v3:
                    outputs = self._run_v3(target, request, deadline)
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
            except BackendError as error:
                if getattr(error, "status", None) == 404:  # the app may have restarted with other routes
                    self._forget()
                raise
            finally:
                if reply is None:
                    video.unlink(missing_ok=True)

    # -- discovery -------------------------------------------------------------------------
    def _ensure_target(self) -> _Target:
        with self._lock:
            self._describe_failed = False
            if self._target is None:
                self._target = self._discover()
            return self._target

    def _forget(self) -> None:
        with self._lock:
            self._target = None

    def _discover(self) -> _Target:
        app = discover_app(self._session, self.url, self.connect_timeout_seconds, min(self.timeout_seconds, DISCOVERY_READ_TIMEOUT))
        endpoint = choose_endpoint(app, self.api_name)
        return _Target(app, build_mapping(endpoint, self.inputs))

    def _transport(self, target: _Target) -> str:
        if self.transport != "auto":
            return self.transport
        return "queue" if target.app.protocol in QUEUE_PROTOCOLS else "call"

    # -- Gradio 3.x ------------------------------------------------------------------------
    def _run_v3(self, target: _Target, request: VideoRequest, deadline: float) -> list:
        endpoint = target.mapping.endpoint
        body = {"data": target.mapping.arguments(request, encode_image(request, "data_url")), "fn_index": endpoint.fn_index}
        name = endpoint.api_name or "predict"
        if target.v3_http_path is None:
            paths = [f"/run/{name}", f"/api/{name}/"]
        else:  # what answered before, or nothing once the app refused direct calls
            paths = [target.v3_http_path] if target.v3_http_path else []
        for path in paths:
            response = self._http("POST", path, deadline, allow=(401, 404, 500), json=body)
            if response.status_code == 404:
                continue
            if response.status_code == 401 and _refuses_direct_calls(response):
                break  # 3.20 and 3.39 answer api_open=False so: not a login
            target.v3_http_path = path
            try:
                reply = response.json()
            except ValueError:
                raise _http_error(response, f"POST {path}") if response.status_code >= 400 else \
                    BadReply(f"POST {path} answered no JSON: {response.text[:BODY_EXCERPT]!r}") from None
            if isinstance(reply, dict) and "error" in reply and "data" not in reply:
                raise _app_error(reply["error"])
            if response.status_code >= 400:
                raise _http_error(response, f"POST {path}")
            if not isinstance(reply, dict) or not isinstance(reply.get("data"), list):
                raise BadReply(f"POST {path} answered without a data list: {response.text[:BODY_EXCERPT]!r}")
            return reply["data"]
        target.v3_http_path = ""  # api_open=False: only the websocket queue takes jobs
        return self._run_v3_websocket(target, body, deadline)

    def _run_v3_websocket(self, target: _Target, body: dict, deadline: float) -> list:
        try:
            import websockets
            from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
            from websockets.sync.client import connect
        except ImportError:
            websockets = None
        if websockets is None or int(websockets.__version__.split(".")[0]) < WEBSOCKETS_MAJOR:
            raise AppMismatch(f"the Gradio {target.app.version} app at {self.url} takes jobs only through its websocket "
                              f"queue, which needs the package websockets>={WEBSOCKETS_MAJOR} (pip install 'websockets>={WEBSOCKETS_MAJOR}')")
        session_hash = uuid.uuid4().hex[:11]
        parts = urlsplit(self.url)
        ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}/queue/join"
        sent = False  # once the data is sent, the job is the server's: a dropped connection uses an attempt
        try:
            opening = min(self.connect_timeout_seconds, max(0.001, deadline - time.monotonic()))
            with connect(ws_url, open_timeout=opening, close_timeout=2, max_size=None,
                         ping_interval=None, user_agent_header=f"i2vd/{__version__}") as websocket:
                _whole().watch(lambda: websocket.socket.shutdown(socket.SHUT_RDWR))  # a send blocked past the deadline
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Deadline()  # leaving the block closes the socket: Gradio 3 drops the job
                    try:
                        message = json.loads(websocket.recv(timeout=remaining))
                    except TimeoutError:
                        raise _Deadline() from None
                    kind = message.get("msg") if isinstance(message, dict) else None
                    if kind == "send_hash":
                        websocket.send(json.dumps({"fn_index": body["fn_index"], "session_hash": session_hash}))
                    elif kind == "send_data":
                        sent = True
                        websocket.send(json.dumps({**body, "event_data": None, "session_hash": session_hash}))
                    elif kind == "queue_full":
                        raise ServerUnavailable(f"the queue of {self.url} is full")
                    elif kind == "process_completed":
                        return self._completed(message)
                    else:
                        self._report(message)
        except InvalidStatus as error:
            raise BackendError(f"the websocket queue {ws_url} refused the connection: {error}") from None
        except ConnectionClosed as error:
            if _whole().expired:
                raise _Deadline() from None
            if sent:
                raise http.ConnectionDropped(f"the websocket queue {ws_url} closed mid-job: {error}") from None
            raise ServerUnavailable(f"the websocket queue {ws_url} closed before taking the job: {error}") from None
        except (OSError, WebSocketException) as error:  # refused, DNS, open timeout, a failed handshake
            if _whole().expired:
                raise _Deadline() from None
            if sent:
                raise http.ConnectionDropped(f"lost the websocket queue {ws_url} mid-job: {_reason(error)}") from None
            raise ServerUnavailable(f"cannot reach {ws_url}: {_reason(error)}") from None
        except ValueError:
            raise BadReply(f"the websocket queue {ws_url} sent a message that is not JSON") from None

    # -- Gradio 4.x-6.x --------------------------------------------------------------------
    def _upload(self, target: _Target, request: VideoRequest, deadline: float) -> dict:
        suffix = PurePath(request.image_name).suffix.lower()
        name = "input" + (suffix if suffix[1:].isalnum() and len(suffix) <= 6 else "")  # the app's file name: plain ASCII
        path = f"{target.app.api_prefix}/upload"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        upload = http.MultipartBody("files", name, request.image, mime)  # streamed: no copy of the image
        response = self._http("POST", path, deadline, allow=(413,), data=upload,
                              headers={"Content-Type": upload.content_type})
        if response.status_code == 413:
            raise BadInput(f"the server refuses the image as too large ({len(request.image)} bytes): {response.text[:BODY_EXCERPT]}")
        paths = _json(response, f"POST {path}")
        if not (isinstance(paths, list) and paths and isinstance(paths[0], str)):
            raise BadReply(f"POST {path} answered without a file path: {response.text[:BODY_EXCERPT]!r}")
        return {"path": paths[0], "orig_name": request.image_name, "meta": {"_type": "gradio.FileData"}}

    def _run_queue(self, target: _Target, request: VideoRequest, deadline: float) -> list:
        prefix, endpoint = target.app.api_prefix, target.mapping.endpoint
        data = target.mapping.arguments(request, self._upload(target, request, deadline))
        session_hash = uuid.uuid4().hex[:11]
        body = {"data": data, "event_data": None, "fn_index": endpoint.fn_index, "session_hash": session_hash, "trigger_id": None}
        event_id = None
        if target.app.protocol == "sse":  # Gradio 4.0: the stream is opened first and asks for the data
            stream = self._stream(f"{prefix}/queue/join", deadline, params={"fn_index": endpoint.fn_index, "session_hash": session_hash})
        else:
            event_id = self._event_id(self._http("POST", f"{prefix}/queue/join", deadline, json=body), f"{prefix}/queue/join")
            stream = self._stream(f"{prefix}/queue/data", deadline, params={"session_hash": session_hash})
        try:
            for _, text in stream:
                message = _json_text(text, f"{prefix}/queue/data")
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

    def _run_call(self, target: _Target, request: VideoRequest, deadline: float) -> list:
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
                    outputs = _json_text(text, path)
                    if not isinstance(outputs, list):
                        raise BadReply(f"{path} completed without an output list: {text[:BODY_EXCERPT]!r}")
                    return outputs
                if event == "error":
                    raise _app_error(_json_text(text, path) if text.strip() not in ("", "null") else None)
        except _Deadline:
            stream.close()
            self._cancel(target, session_hash, event_id)
            raise
        finally:
            stream.close()
        raise BackendError(f"{self.url} closed the event stream of {path} without a result")

    def _event_id(self, response: requests.Response, path: str) -> str:
        reply = _json(response, f"POST {path}")
        if not isinstance(reply, dict) or not reply.get("event_id"):
            raise BadReply(f"POST {path} answered without an event_id: {response.text[:BODY_EXCERPT]!r}")
        return str(reply["event_id"])

    def _cancel(self, target: _Target, session_hash: str, event_id: str | None) -> None:
        """Best effort: /cancel (4.29+), else /reset (older 4.x); the closed stream does the rest."""
        if event_id is None:
            return
        prefix = target.app.api_prefix
        body = {"session_hash": session_hash, "fn_index": target.mapping.endpoint.fn_index, "event_id": event_id}
        for path, payload in ((f"{prefix}/cancel", body), (f"{prefix}/reset", {"event_id": event_id})):
            try:
                with http.Deadline(self.connect_timeout_seconds + 5, self.url):  # the job's own deadline has passed
                    response = self._session.post(self.url + path, json=payload,
                                                  timeout=(self.connect_timeout_seconds, 5))
            except requests.RequestException:
                return
            if response.status_code < 400:
                return

    def _completed(self, message: dict) -> list:
        output = message.get("output")
        if not message.get("success", True) or (isinstance(output, dict) and "error" in output and "data" not in output):
            raise _app_error(output)
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

    # -- the video -------------------------------------------------------------------------
    def _video(self, target: _Target, outputs: list, deadline: float, video: Path) -> None:
        slot = target.mapping.endpoint.video_slot
        if slot is None or slot >= len(outputs):
            raise BadReply(f"the app returned {len(outputs)} output(s), no video at position {slot}")
        item = outputs[slot]
        if isinstance(item, dict) and "video" in item and not ("path" in item or "name" in item):
            item = item["video"]  # 4.x VideoData: {"video": FileData, "subtitles": ...}
        if isinstance(item, list):  # 3.x: [video, subtitles]
            item = item[0] if item else None
        if item is None or item == "":
            raise BadReply(f"the app returned no video ({target.mapping.endpoint.title} output {slot} is empty)")
        if isinstance(item, dict):
            inline = item.get("data")
            if isinstance(inline, str) and inline.startswith("data:"):
                return _save_data_url(inline, video)
            reference = item.get("path") or item.get("name")
            if isinstance(reference, str) and reference:
                return self._download(target, reference, deadline, video)
            if isinstance(item.get("url"), str):
                return self._download_url(item["url"], deadline, video)
            raise BadReply(f"video file reference without a path: {json.dumps(item)[:BODY_EXCERPT]}")
        if not isinstance(item, str):
            raise BadReply(f"video is not a file reference: {item!r}"[:BODY_EXCERPT])
        if item.startswith("data:"):
            return _save_data_url(item, video)
        if item.startswith(("http://", "https://")):
            return self._download_url(item, deadline, video)
        return self._download(target, item.removeprefix("file="), deadline, video)

    def _download(self, target: _Target, server_path: str, deadline: float, video: Path) -> None:
        """GET /file=<path> streamed into `video`: the video is never whole in memory."""
        response = self._http("GET", f"{target.app.api_prefix}/file={quote(server_path)}", deadline, stream=True)
        if not http.save_body(response, _whole(), video):
            raise BadReply(f"server file {server_path} is empty")

    def _download_url(self, url: str, deadline: float, video: Path) -> None:
        if not url.startswith(self.url + "/"):
            raise BadReply(f"video URL {url} is not on the server {self.url}")
        response = self._http("GET", url.removeprefix(self.url), deadline, stream=True)
        if not http.save_body(response, _whole(), video):
            raise BadReply(f"video at {url} is empty")

    # -- HTTP ------------------------------------------------------------------------------
    def _http(self, method: str, path: str, deadline: float, *, allow: tuple[int, ...] = (), stream: bool = False,
              **kwargs: Any) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        try:
            response = self._session.request(method, self.url + path, timeout=(min(self.connect_timeout_seconds, remaining), remaining),
                                             stream=stream, **kwargs)
        except requests.RequestException as error:
            # refused: the server is down (no attempt); made, then lost: dropped mid-job (one attempt)
            raise http.classify(error, _whole(), self.url + path) from None
        if _whole().expired:  # the deadline shut the connection under a reply: not a reply
            response.close()
            raise _Deadline()
        if response.status_code >= 400 and response.status_code not in allow:
            raise _http_error(response, f"{method} {path}")
        return response

    def _stream(self, path: str, deadline: float, **kwargs: Any) -> _EventStream:
        response = self._http("GET", path, deadline, stream=True, headers={"Accept": "text/event-stream"}, **kwargs)
        return _EventStream(response, deadline)


class _EventStream:
    """(event, data) pairs of an SSE response; each read may wait only until the deadline."""

    def __init__(self, response: requests.Response, deadline: float) -> None:
        self.response = response
        self.deadline = deadline

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter_sse(self._lines())

    def _lines(self) -> Iterator[str]:
        connection = getattr(self.response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        chunks = self.response.iter_content(chunk_size=None)
        buffer = b""
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            if sock is not None:
                sock.settimeout(remaining)  # one read may not outlast the call's deadline
            try:
                chunk = next(chunks)
            except StopIteration:
                if _whole().expired:
                    raise _Deadline() from None
                break
            except requests.RequestException as error:
                # the job was in the server's hands: a lost stream uses one attempt (server down or not)
                raise http.classify(error, _whole(), self.response.url) from None
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if buffer:
            yield buffer.decode("utf-8", "replace")
        yield ""

    def close(self) -> None:
        self.response.close()


def _whole() -> http.Deadline:
    """The deadline of the call this thread is in (GradioBackend.generate sets it)."""
    deadline = http.current_deadline()
    assert deadline is not None, "a Gradio request outside generate()"
    return deadline


def _save_data_url(text: str, video: Path) -> None:
    with open(video, "wb") as sink:
        replies.decode_base64(iter([text]), sink, skip_prefix=True)


def discover_app(session: requests.Session, url: str, connect_timeout: float, read_timeout: float) -> App:
    """GET /config, then {prefix}/info; raises ServerUnavailable (down) or AppMismatch (not a Gradio app)."""
    config = _discovery_get(session, url, "/config", connect_timeout, read_timeout)
    if config.status_code == 404:
        raise AppMismatch(f"{url} is not a Gradio app (GET /config: 404); an I2VGen-XL /predict server? "
                          "then use server.kind: predict")
    if config.status_code >= 400:
        raise _http_error(config, "GET /config")
    body = _json(config, "GET /config")
    if not isinstance(body, dict) or not ("version" in body or "dependencies" in body):
        raise AppMismatch(f"{url} is not a Gradio app: GET /config answered {config.text[:BODY_EXCERPT]!r}")
    prefix = str(body.get("api_prefix") or "").rstrip("/")
    info, problem = None, None
    response = _discovery_get(session, url, f"{prefix}/info", connect_timeout, read_timeout)
    if response.status_code >= 400:
        problem = f"GET {prefix}/info answered HTTP {response.status_code}"
    else:
        try:
            info = response.json()
        except ValueError:
            problem = f"GET {prefix}/info answered no JSON"
    return read_app(body, info, problem)


def _discovery_get(session: requests.Session, url: str, path: str, connect_timeout: float, read_timeout: float) -> requests.Response:
    try:
        return session.get(url + path, timeout=(connect_timeout, read_timeout))
    except requests.ConnectionError as error:
        if _is_read_timeout(error):
            raise ServerUnavailable(f"{url} accepted the connection but did not answer GET {path} within {read_timeout:g} s") from None
        raise ServerUnavailable(f"cannot reach {url}: {_reason(error)}") from None
    except requests.Timeout:
        raise ServerUnavailable(f"{url} did not answer GET {path} within {read_timeout:g} s") from None
    except requests.RequestException as error:
        raise ServerUnavailable(f"GET {url + path} failed: {error}") from None


def _is_read_timeout(error: Exception) -> bool:
    return isinstance(error, requests.ReadTimeout) or "Read timed out" in str(error)


def _http_error(response: requests.Response, what: str) -> BackendError:
    text, status = response.text, response.status_code
    if looks_out_of_memory(text):
        error: BackendError = ServerOutOfMemory(f"server out of GPU memory (HTTP {status} on {what}): {text[:BODY_EXCERPT]}")
    elif status in (502, 503, 504):
        error = ServerUnavailable(f"server unavailable (HTTP {status} on {what}): {text[:BODY_EXCERPT]}")
    elif status in (401, 403):
        error = AppMismatch(f"the app wants a login (HTTP {status} on {what}), which i2vd does not do")
    else:
        error = BackendError(f"HTTP {status} on {what}: {text[:BODY_EXCERPT]}")
    error.status = status  # type: ignore[attr-defined]
    return error


def _refuses_direct_calls(response: requests.Response) -> bool:
    """Gradio 3.20-3.39: 401 to a direct call when the queue has api_open=False (a login answers /config with 401)."""
    return "skip the queue" in response.text.lower()


def _app_error(output: Any) -> BackendError:
    message = error_text(output)
    if message is None:
        return BackendError("the app failed without saying why (Gradio hides exception text unless the app sets show_error=True)")
    if looks_out_of_memory(message):
        return ServerOutOfMemory(f"the app ran out of GPU memory: {message[:BODY_EXCERPT]}")
    return BackendError(f"the app failed: {message[:BODY_EXCERPT]}")


def _json(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadReply(f"{what} answered no JSON (HTTP {response.status_code}): {response.text[:BODY_EXCERPT]!r}") from None


def _json_text(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BadReply(f"{what} sent an event that is not JSON: {text[:BODY_EXCERPT]!r}") from None
