"""Gradio 3.x: `POST /run/<api>` (then `/api/<api>/`), or its websocket queue when the app refuses direct calls.

A mixin of GradioBackend, which provides `url`, `connect_timeout_seconds`, `_http`, `_completed` and
`_report`. The /run body streams the image as it is sent and the reply is read from a file
(http.StreamedBody, replies.py); the websocket queue (the `websockets` package, imported only then)
also reports queue position and progress.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from i2vd import __version__
from i2vd.render.backends import failures, http
from i2vd.render.backends.base import BadReply, ServerUnavailable, VideoRequest
from i2vd.render.backends.gradio_app import AppMismatch
from i2vd.render.backends.gradio_wire import Target, refuses_direct_calls, v3_outputs, whole
from i2vd.render.backends.predict import image_prefix

WEBSOCKETS_MAJOR = 15  # the sync client with keepalive off (ping_interval=None) and recv(timeout)
_Deadline = http.CallTimedOut


class Gradio3Transport:
    url: str
    connect_timeout_seconds: float

    def _run_v3(self, target: Target, request: VideoRequest, deadline: float, reply_file: Path) -> list:
        """POST /run/<api>: the image streamed into the JSON body, the reply streamed into `reply_file`.

        An app with a queue (`.queue()`, `enable_queue`) gets the job through its websocket queue, as Gradio's own
        client sends it: a direct call would skip the queue (api_open=True lets it) and run beside the app's other
        users on the same GPU, past its concurrency limit.
        """
        endpoint = target.mapping.endpoint
        image = "\x00i2vd-image"
        body = {"data": target.mapping.arguments(request, image), "fn_index": endpoint.fn_index}
        prefix = image_prefix(request.image_name, "data_url")
        name = endpoint.api_name or "predict"
        if target.app.queue and endpoint.queued:
            paths = []
        elif target.v3_http_path is None:
            paths = [f"/run/{name}", f"/api/{name}/"]
        else:  # what answered before, or nothing once the app refused direct calls
            paths = [target.v3_http_path] if target.v3_http_path else []
        for path in paths:
            upload = http.StreamedBody(body, image, request.image, prefix=prefix)  # a body is read once: one a try
            response = self._http(
                "POST",
                path,
                deadline,
                allow=(401, 404, 500),
                stream=True,
                data=upload,
                headers={"Content-Type": "application/json"},
            )
            if response.status_code == 404:
                response.close()
                continue
            if response.status_code == 401 and refuses_direct_calls(response):
                break  # 3.20 and 3.39 answer api_open=False so: not a login
            target.v3_http_path = path
            http.save_body(response, whole(), reply_file)
            return v3_outputs(response.status_code, reply_file, f"POST {path}")
        target.v3_http_path = ""  # a queued app, or api_open=False: only the websocket queue takes jobs
        data = target.mapping.arguments(request, prefix + base64.b64encode(request.image).decode("ascii"))
        return self._run_v3_websocket(target, {"data": data, "fn_index": endpoint.fn_index}, deadline)

    def _run_v3_websocket(self, target: Target, body: dict, deadline: float) -> list:
        try:
            import websockets
            from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
            from websockets.sync.client import connect
        except ImportError:
            websockets = None
        if websockets is None or int(websockets.__version__.split(".")[0]) < WEBSOCKETS_MAJOR:
            raise AppMismatch(
                f"the Gradio {target.app.version} app at {self.url} takes jobs only through its "
                f"websocket queue, which needs the package websockets>={WEBSOCKETS_MAJOR} "
                f"(pip install 'websockets>={WEBSOCKETS_MAJOR}')"
            )
        session_hash = uuid.uuid4().hex[:11]
        parts = urlsplit(self.url)
        ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}/queue/join"
        sent = False  # once the data is sent, the job is the server's: a dropped connection uses an attempt
        try:
            opening = min(self.connect_timeout_seconds, max(0.001, deadline - time.monotonic()))
            with connect(
                ws_url,
                open_timeout=opening,
                close_timeout=2,
                max_size=None,
                ping_interval=None,
                user_agent_header=f"i2vd/{__version__}",
            ) as websocket:
                whole().watch(lambda: websocket.socket.shutdown(socket.SHUT_RDWR))  # a send blocked past the deadline
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
        except InvalidStatus as error:  # an HTTP answer instead of the websocket: what its status says
            answer = error.response
            text = bytes(answer.body or b"").decode("utf-8", "replace")
            raise failures.status_error(answer.status_code, text, f"the websocket queue {ws_url}") from None
        except ConnectionClosed as error:
            if whole().expired:
                raise _Deadline() from None
            if sent:
                raise http.ConnectionDropped(f"the websocket queue {ws_url} closed mid-job: {error}") from None
            raise ServerUnavailable(f"the websocket queue {ws_url} closed before taking the job: {error}") from None
        except (OSError, WebSocketException) as error:  # refused, DNS, open timeout, a failed handshake
            if whole().expired:
                raise _Deadline() from None
            if sent and not failures.never_connected(error):
                raise http.ConnectionDropped(
                    f"lost the websocket queue {ws_url} mid-job: {failures.reason(error)}"
                ) from None
            raise ServerUnavailable(f"cannot reach {ws_url}: {failures.reason(error)}") from None
        except ValueError:
            raise BadReply(f"the websocket queue {ws_url} sent a message that is not JSON") from None
