"""`server.kind: comfyui`: one API workflow per server, its `I2VD:` nodes filled per job.

The job: `POST /upload/image` (subfolder i2vd) → `POST /prompt {"prompt", "client_id", "prompt_id"}`
→ the `/ws?clientId=` messages (`progress` into status; done on `executing` with `node: null` or
`execution_success`) → `GET /history/<prompt_id>` → `GET /view` of the video.

i2vd picks the prompt_id (ComfyUI takes a client's) and writes it under state_dir, keyed by the
job's idempotency key, *before* sending (PromptStore): after a restart a prompt that ComfyUI
queues, runs or has finished is followed again, never submitted twice; one it never received is
sent with the same id. No journal column: the file lives as long as the prompt is in flight.

Errors, by whose they are: an HTTP 400 refusal of the workflow (`node_errors`: a missing model, a
bad value) is the operator's, WorkflowRejected, which the worker treats as a server that is down
(queue paused, the node and message in status, no attempt used); `execution_error` saying "out of
memory" is ServerOutOfMemory (server.oom decides); any other `execution_error`, an interruption or
a history `status_str: error` is the job's own failure. Past timeout_seconds i2vd sends `POST
/interrupt {"prompt_id"}` (and drops it from the queue when it never started) and abandons the job.
Every request and websocket read is bounded by the one http.Deadline (_http talks HTTP).
"""

from __future__ import annotations

import io
import json
import logging
import mimetypes
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

import requests

from i2vd import __version__
from i2vd.config.comfyui_workflow import Workflow, WorkflowError, WorkflowFile, field_values
from i2vd.config.parameters import PARAMETER_NAMES
from i2vd.render.backends import failures, http, sessions
from i2vd.render.backends.base import (
    BackendError,
    BadInput,
    BadReply,
    ServerUnavailable,
    VideoReply,
    VideoRequest,
    reply_folder,
    video_reply,
)
from i2vd.render.backends.comfyui_protocol import (
    PromptStore,
    WorkflowRejected,
    execution_failure,
    history_failure,
    pick_video,
    rejection,
)
from i2vd.render.backends.failures import BODY_EXCERPT

log = logging.getLogger(__name__)

HISTORY_POLL_SECONDS = 2.0  # no websocket message this long: ask /history (a message may have been missed)
CANCEL_SECONDS = 10.0  # /interrupt and the queue delete after a timeout
ProgressCallback = Callable[[str], None]


_Deadline = http.CallTimedOut  # timeout_seconds ran out (http.Deadline bounds the whole call)


class ComfyUIBackend:
    kind = "comfyui"

    def __init__(
        self,
        url: str,
        workflow: Workflow | Path,  # a file is read again when it changes
        *,
        timeout_seconds: float = 900,
        connect_timeout_seconds: float = 10,
        free_after_job: bool = False,
        state_dir: Path | None = None,
        session: requests.Session | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._file = None if isinstance(workflow, Workflow) else WorkflowFile(workflow)
        self.workflow = workflow if isinstance(workflow, Workflow) else self._file.current()
        self.timeout_seconds = float(timeout_seconds)
        self.connect_timeout_seconds = float(connect_timeout_seconds)
        self.free_after_job = free_after_job
        self.on_progress = on_progress
        self.store = PromptStore(Path(state_dir) / "comfyui" if state_dir is not None else None)
        self._session = sessions.server_session(session)
        self._lock = threading.Lock()
        self._version: str | None = None

    # -- the Backend interface -------------------------------------------------------------
    def describe(self) -> dict[str, str]:
        with self._lock:  # asked once, and again only after a job ran: status calls this, a dead host is slow
            if self._version is None:
                try:
                    with http.Deadline(self.connect_timeout_seconds + 5, self.url) as bound:
                        stats = self.system_stats(bound.ends)
                    self._version = str((stats.get("system") or {}).get("comfyui_version") or "unknown")
                except BackendError:
                    self._version = ""
        return {
            "kind": self.kind,
            "url": self.url,
            "version": self._version or "unknown",
            "workflow": self.workflow.source,
        }

    def close(self) -> None:
        self._session.close()

    def system_stats(self, deadline: float) -> dict:
        stats = _json(self._http("GET", "/system_stats", deadline), "GET /system_stats")
        if not isinstance(stats, dict):
            raise BadReply(f"GET /system_stats is not a JSON object: {stats!r:.{BODY_EXCERPT}}")
        return stats

    def generate(self, request: VideoRequest) -> VideoReply:
        started = time.monotonic()
        with http.Deadline(self.timeout_seconds, self.url) as whole, reply_folder(request) as folder:
            return self._generate(request, started, whole.ends, folder)

    def _generate(self, request: VideoRequest, started: float, deadline: float, folder: Path) -> VideoReply:
        self._version = self._version or None  # unknown before: describe() asks again
        try:
            self.workflow = self._file.current() if self._file is not None else self.workflow
        except WorkflowError as error:  # exported again, badly: the queue waits for the fix
            raise WorkflowRejected(str(error)) from None
        key = request.key
        record = self.store.get(key)
        if record is not None and record.get("url") != self.url:
            record = None  # sent to another server (servers: changed): that one may still run it, this one never had it
        prompt_id = None
        try:
            if record is not None:
                prompt_id = record["prompt_id"]
                entry, queued = self._where(prompt_id, deadline)
                if entry is not None:
                    log.info("prompt %s of this job already finished on %s; taking its result", prompt_id, self.url)
                    return self._finish(request, prompt_id, entry, started, deadline, folder)
                if queued:
                    log.info("prompt %s of this job is still on %s; following it again", prompt_id, self.url)
                    entry = self._follow(prompt_id, record["client_id"], deadline, submit=None)
                    return self._finish(request, prompt_id, entry, started, deadline, folder)
                log.info("prompt %s was recorded but %s never had it; sending it now", prompt_id, self.url)
            else:
                record = {
                    "prompt_id": str(uuid.uuid4()),
                    "client_id": uuid.uuid4().hex,
                    "url": self.url,
                    "job_id": request.job_id,
                    "recorded_at": time.time(),
                }
                self.store.put(key, record)
            prompt_id = record["prompt_id"]
            prompt = self._prompt(request, deadline)
            entry = self._follow(
                prompt_id,
                record["client_id"],
                deadline,
                submit=lambda: self._submit(prompt, prompt_id, record["client_id"], deadline),
            )
            return self._finish(request, prompt_id, entry, started, deadline, folder)
        except _Deadline:
            self._cancel(prompt_id)
            self.store.drop(key)
            raise _Deadline(f"{_current().error()}; prompt {prompt_id} interrupted on {self.url}") from None
        except WorkflowRejected:
            self.store.drop(key)  # the next try, after the operator's fix, sends the prompt afresh
            raise
        except (ServerUnavailable, http.ConnectionDropped):
            raise  # the prompt may still run there: the record stays, the next try reattaches
        except BackendError:
            self.store.drop(key)
            raise
        finally:
            if self.free_after_job and prompt_id is not None:
                self._free()

    # -- steps -----------------------------------------------------------------------------
    def _prompt(self, request: VideoRequest, deadline: float) -> dict:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(request.image)) as image:
                size = image.size
        except Exception as error:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            raise BadInput(f"cannot read the image {request.image_name}: {error}") from None
        uploaded = self._upload(request, deadline)
        values = field_values(
            image_name=uploaded,
            prompt=request.prompt,
            params={name: getattr(request, name) for name in PARAMETER_NAMES},
            image_size=size,
            image=request.image,
            job_id=request.job_id,
        )
        return self.workflow.build(values)

    def _upload(self, request: VideoRequest, deadline: float) -> str:
        suffix = PurePath(request.image_name).suffix.lower()
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ".png"
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", request.key or uuid.uuid4().hex)[:64]
        response = self._http(  # 413: BadInput, the image is too large for this server (failures.status_error)
            "POST",
            "/upload/image",
            deadline,
            files={"image": (f"{stem}{suffix}", request.image, mimetypes.guess_type(f"x{suffix}")[0] or "image/png")},
            data={"subfolder": "i2vd", "type": "input", "overwrite": "true"},
        )
        reply = _json(response, "POST /upload/image")
        if not isinstance(reply, dict) or not isinstance(reply.get("name"), str):
            raise BadReply(f"POST /upload/image answered without a name: {response.text[:BODY_EXCERPT]!r}")
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def _submit(self, prompt: dict, prompt_id: str, client_id: str, deadline: float) -> None:
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        response = self._http("POST", "/prompt", deadline, allow=(400,), json=body)
        reply = _json(response, "POST /prompt")
        if response.status_code == 400:
            raise WorkflowRejected(
                f"ComfyUI at {self.url} refused the workflow {self.workflow.source}: {rejection(reply)}"
            )
        if not isinstance(reply, dict) or reply.get("prompt_id") != prompt_id:
            raise BadReply(f"POST /prompt answered without our prompt_id: {response.text[:BODY_EXCERPT]!r}")

    def _where(self, prompt_id: str, deadline: float) -> tuple[dict | None, bool]:
        """(its history entry, or None; whether it is queued or running)."""
        entry = self._history(prompt_id, deadline)
        if entry is not None:
            return entry, False
        queue = _json(self._http("GET", "/queue", deadline), "GET /queue")
        items = [item for name in ("queue_running", "queue_pending") for item in (queue or {}).get(name) or []]
        return None, any(isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in items)

    def _history(self, prompt_id: str, deadline: float) -> dict | None:
        history = _json(self._http("GET", f"/history/{prompt_id}", deadline), "GET /history")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        return entry if isinstance(entry, dict) and entry.get("status") is not None else None

    def _follow(self, prompt_id: str, client_id: str, deadline: float, submit: Callable[[], None] | None) -> dict:
        """Wait for the prompt over the websocket (submitting it once connected); its history entry."""
        try:
            from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
            from websockets.sync.client import connect
        except ImportError:
            raise BackendError(
                "server.kind comfyui needs the package websockets (pip install 'websockets>=15')"
            ) from None
        parts = urlsplit(self.url)
        ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}/ws?clientId={client_id}"
        try:
            with connect(
                ws_url,
                open_timeout=min(self.connect_timeout_seconds, _left(deadline)),
                close_timeout=2,
                max_size=None,
                ping_interval=None,
                user_agent_header=f"i2vd/{__version__}",
            ) as websocket:
                if submit is not None:
                    submit()
                over = False  # a message said the prompt is over; its history may come a moment later
                while True:
                    try:
                        raw = websocket.recv(timeout=min(HISTORY_POLL_SECONDS, _left(deadline)))
                    except TimeoutError:
                        if time.monotonic() >= deadline:
                            raise _current().error() from None
                        raw = None  # nothing heard for a while: ask /history (a message may have been missed)
                    if raw is not None:
                        over = self._message(raw, prompt_id) or over
                        if not over:
                            continue
                    entry = self._history(prompt_id, deadline)
                    if entry is not None:
                        return entry
        except ConnectionClosed as error:  # made, then lost (one attempt); the next one finds the prompt again
            raise http.ConnectionDropped(f"ComfyUI at {self.url} closed the websocket mid-job: {error}") from None
        except InvalidStatus as error:  # an HTTP answer instead of the websocket: what its status says
            text = bytes(error.response.body or b"").decode("utf-8", "replace")
            raise failures.status_error(error.response.status_code, text, f"GET {ws_url}") from None
        except (OSError, WebSocketException) as error:
            raise ServerUnavailable(f"cannot reach {ws_url}: {failures.reason(error)}") from None

    def _message(self, raw: str | bytes, prompt_id: str) -> bool:
        """Act on one websocket message; True when it says the prompt is over."""
        if isinstance(raw, bytes):
            return False  # a preview image
        try:
            message = json.loads(raw)
        except ValueError:
            raise BadReply(f"ComfyUI sent a websocket message that is not JSON: {raw[:BODY_EXCERPT]!r}") from None
        kind, data = (message.get("type"), message.get("data")) if isinstance(message, dict) else (None, None)
        if not isinstance(data, dict) or data.get("prompt_id", prompt_id) != prompt_id:
            return False
        if kind == "progress" and self.on_progress is not None:
            self.on_progress(f"step {data.get('value')}/{data.get('max')} (node {data.get('node')})")
        elif kind == "execution_error":
            raise execution_failure(data)
        elif kind == "execution_interrupted":
            raise BackendError(
                f"ComfyUI interrupted the prompt at node {data.get('node_id')} ({data.get('node_type')})"
            )
        return (kind == "executing" and data.get("node") is None and "prompt_id" in data) or kind == "execution_success"

    def _finish(
        self, request: VideoRequest, prompt_id: str, entry: dict, started: float, deadline: float, folder: Path
    ) -> VideoReply:
        status = entry.get("status") or {}
        if status.get("status_str") != "success":
            raise history_failure(status, prompt_id)
        video = pick_video(entry.get("outputs") or {}, self.workflow.output_nodes(), prompt_id)
        params = {
            "filename": video["filename"],
            "subfolder": video.get("subfolder", ""),
            "type": video.get("type", "output"),
        }
        target = http.spool_name(folder, PurePath(video["filename"]).suffix or ".mp4")
        try:
            if not http.save_body(self._http("GET", "/view", deadline, params=params, stream=True), _current(), target):
                raise BadReply(f"GET /view of {video['filename']} sent nothing")
            reply = video_reply(request, target, time.monotonic() - started)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.store.drop(request.key)
        return reply

    def _cancel(self, prompt_id: str | None) -> None:
        if prompt_id is None:
            return
        for path, body in (("/interrupt", {"prompt_id": prompt_id}), ("/queue", {"delete": [prompt_id]})):
            try:
                with http.Deadline(CANCEL_SECONDS, self.url) as bound:  # the job's own deadline has passed
                    self._http("POST", path, bound.ends, json=body)
            except BackendError as error:
                log.warning("could not %s prompt %s on %s: %s", path.strip("/"), prompt_id, self.url, error)

    def _free(self) -> None:
        try:
            with http.Deadline(CANCEL_SECONDS, self.url) as bound:
                self._http("POST", "/free", bound.ends, json={"unload_models": False, "free_memory": True})
        except BackendError as error:
            log.warning("POST /free on %s failed: %s", self.url, error)

    # -- HTTP: the one place -----------------------------------------------------------------
    def _http(
        self, method: str, path: str, deadline: float, *, allow: tuple[int, ...] = (), **kwargs: Any
    ) -> requests.Response:
        """Inside the current http.Deadline: refused is ServerUnavailable, made and lost ConnectionDropped."""
        left = _left(deadline)
        if left <= 0:
            raise _current().error()
        try:
            response = self._session.request(
                method, self.url + path, timeout=(min(self.connect_timeout_seconds, left), left), **kwargs
            )
        except requests.RequestException as error:
            raise http.classify(error, _current(), self.url + path) from None
        if _current().expired:  # the deadline shut the connection under a reply: not a reply
            response.close()
            raise _current().error()
        if response.ok or response.status_code in allow:
            return response
        # a proxy's 502 with ComfyUI down behind it, a login in front of it, ...: failures.status_error
        raise failures.status_error(response.status_code, response.text, f"{method} {path} on {self.url}")


def _current() -> http.Deadline:
    deadline = http.current_deadline()
    assert deadline is not None, "ComfyUIBackend's HTTP calls run inside an http.Deadline"
    return deadline


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _json(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise BadReply(f"{what} did not answer JSON: {response.text[:BODY_EXCERPT]!r}") from None
