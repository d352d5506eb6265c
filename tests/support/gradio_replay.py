"""Replays of real Gradio apps: what they answered, recorded (tests/fixtures/gradio/*/session.json).

`ReplayedGradio("vgen-3.39", video=mp4)` serves, over real HTTP and a real websocket on
127.0.0.1, the replies that a real app gave i2vd when the recording was made (the README there
says which app, which Gradio, how). Only what must differ is substituted: the port in URLs, the
session hash and the video's bytes (the recording kept their size and digest). What a client
sends is checked against what the real app was sent: the same routes, message order, keys,
fn_index and number of inputs, each image a real image (a data URL on 3.x, an uploaded file on
4.x). Deviations land in `rejections` (the replay then answers as the app did not: 422 or a
closed socket); what the client sent lands in `calls`: the decoded image and the other inputs.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from tests.support.gradio_apps import _Handler3
from tests.support.serving import LoopbackFake

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gradio"
RECORDED_PORTS = ("127.0.0.1:7861", "127.0.0.1:7862", "127.0.0.1:7863", "127.0.0.1:7864", "127.0.0.1:7871")


@dataclass
class ReplayedCall:
    via: str  # "http" | "websocket" | "queue" (4.x)
    fn_index: int
    image: bytes = field(repr=False)
    values: list[Any]  # every input after the image's slot, as sent


class ReplayedGradio(LoopbackFake):
    """`with ReplayedGradio("vgen-3.39", video=mp4) as app: ... app.url, app.calls, app.requests`."""

    def __init__(self, name: str, *, video: bytes, fixtures: Path = FIXTURES) -> None:
        self.name = name
        self.video = video
        self.exchanges: list[dict] = json.loads((fixtures / name / "session.json").read_text(encoding="utf-8"))
        self._lock = threading.Lock()
        self._calls: list[ReplayedCall] = []
        self._rejections: list[str] = []
        self._requests: list[str] = []
        self._uploads: dict[str, bytes] = {}
        self._sessions: set[str] = set()

    calls = property(lambda self: self._copy("_calls"), doc="Predictions as the client sent them.")
    rejections = property(lambda self: self._copy("_rejections"), doc="Where the client left the recording.")
    requests = property(lambda self: self._copy("_requests"), doc='"METHOD /path STATUS", in order.')

    def _copy(self, name: str) -> list:
        with self._lock:
            return list(getattr(self, name))

    @property
    def version(self) -> str:
        return self.exchange("GET", "/config")["body"]["json"]["version"].strip()

    # -- the recording ---------------------------------------------------------------------------
    def exchange(self, method: str, path: str) -> dict | None:
        for entry in self.exchanges:
            if entry.get("method") == method and entry.get("path") == path:
                return entry
        if method == "GET" and path.startswith("/file="):
            files = (e for e in self.exchanges if e.get("method") == "GET" and e.get("path", "").startswith("/file="))
            return next(files, None)
        return None

    def websocket_messages(self, path: str) -> list[dict] | None:
        return next((e["messages"] for e in self.exchanges if e.get("websocket") == path), None)

    def localize(self, value: Any) -> Any:
        """The recorded value with this server's address in place of the recording's."""
        text = json.dumps(value)
        for recorded in RECORDED_PORTS:
            text = text.replace(f"http://{recorded}", self.url)
        return json.loads(text)

    # -- checks ----------------------------------------------------------------------------------
    def reject(self, why: str) -> None:
        with self._lock:
            self._rejections.append(why)

    def note(self, request: str) -> None:
        with self._lock:
            self._requests.append(request)

    def check_call(self, via: str, recorded: Any, sent: Any) -> bool:
        """`sent` has the recorded request's shape; the call is kept when it does."""
        if not isinstance(sent, dict) or set(sent) != set(recorded):
            keys = sorted(sent) if isinstance(sent, dict) else sent
            self.reject(f"{via}: keys {keys!r}, recorded {sorted(recorded)}")
            return False
        if sent.get("fn_index") != recorded.get("fn_index"):
            self.reject(f"{via}: fn_index {sent.get('fn_index')!r}, recorded {recorded.get('fn_index')!r}")
            return False
        data, expected = sent.get("data"), recorded["data"]
        if not isinstance(data, list) or len(data) != len(expected):
            self.reject(f"{via}: {len(data) if isinstance(data, list) else data!r} inputs, recorded {len(expected)}")
            return False
        image, values, image_slot = None, [], None
        for slot, (value, model) in enumerate(zip(data, expected)):
            if isinstance(model, dict) and "data_url" in model:
                image, image_slot = self._data_url_image(via, value), slot
            elif isinstance(model, dict) and model.get("meta", {}).get("_type") == "gradio.FileData":
                image, image_slot = self._uploaded_image(via, value), slot
            elif image_slot is not None:
                values.append(value)
            else:
                self.reject(f"{via}: input {slot} ({value!r}) comes before the image, recorded {model!r}")
        if image is None:
            return False
        with self._lock:
            self._calls.append(ReplayedCall(via, sent["fn_index"], image, values))
        return True

    def _data_url_image(self, via: str, value: Any) -> bytes | None:
        if not isinstance(value, str) or not value.startswith("data:image/"):
            self.reject(f"{via}: the image is not a data URL: {str(value)[:40]!r}")
            return None
        return self._image(via, base64.b64decode(value.partition(",")[2], validate=True))

    def _uploaded_image(self, via: str, value: Any) -> bytes | None:
        path = value.get("path") if isinstance(value, dict) else None
        with self._lock:
            raw = self._uploads.get(path)
        if raw is None:
            self.reject(f"{via}: the image {value!r} is no uploaded file")
            return None
        return self._image(via, raw)

    def _image(self, via: str, raw: bytes) -> bytes | None:
        try:
            with Image.open(io.BytesIO(raw)) as decoded:
                decoded.verify()
        except Exception as error:  # noqa: BLE001 - any decoder complaint means: not an image
            self.reject(f"{via}: the image does not decode: {error}")
            return None
        return raw

    def upload(self, name: str, raw: bytes, recorded_path: str) -> str:
        """Where the app keeps an upload: the recorded folder scheme, a fresh hash."""
        folder = recorded_path.rsplit("/", 2)[0]
        path = f"{folder}/{uuid.uuid4().hex}/{name}"
        with self._lock:
            self._uploads[path] = raw
        return path

    def open_session(self, session_hash: str) -> None:
        with self._lock:
            self._sessions.add(session_hash)

    def has_session(self, session_hash: str) -> bool:
        with self._lock:
            return session_hash in self._sessions


class _ReplayHandler(_Handler3):
    server: Any

    def do_GET(self) -> None:
        replay, parts = self.server.fake, urlsplit(self.path)
        path = unquote(parts.path)
        if path == "/queue/join" and self.headers.get("Upgrade", "").lower() == "websocket":
            replay.note("WEBSOCKET /queue/join")
            return self._replay_websocket(replay.websocket_messages(path))
        recorded = replay.exchange("GET", path)
        if recorded is None:
            replay.note(f"GET {path} 404")
            return self._send(404, {"detail": "Not Found"})
        if path.startswith("/file="):
            replay.note(f"GET /file= {recorded['status']}")
            return self._send(200, replay.video, recorded["reply_type"])
        if "events" in recorded:
            session = parse_qs(parts.query).get("session_hash", [""])[0]
            if not replay.has_session(session):
                replay.reject(f"GET {path}: session_hash {session!r} joined no queue")
                return self._send(404, {"detail": "Session not found."})
            replay.note(f"GET {path} {recorded['status']}")
            return self._send_events(replay.localize(recorded["events"]))
        replay.note(f"GET {path} {recorded['status']}")
        self._send_recorded(recorded)

    def do_POST(self) -> None:
        replay, path = self.server.fake, unquote(urlsplit(self.path).path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        recorded = replay.exchange("POST", path)
        if recorded is None:
            replay.note(f"POST {path} 404")
            return self._send(404, {"detail": "Not Found"})
        replay.note(f"POST {path} {recorded['status']}")
        if path.endswith("/upload"):
            return self._upload(recorded, raw)
        try:
            sent = json.loads(raw or b"null")
        except ValueError:
            replay.reject(f"POST {path}: the body is no JSON")
            return self._send(422, {"detail": "invalid JSON"})
        model = recorded["request"]["json"]
        via = "queue" if path.endswith("/queue/join") else "http"
        if recorded["status"] < 400 and not replay.check_call(via, model, sent):
            return self._send(422, {"detail": "not what the app takes"})
        if path.endswith("/queue/join") and isinstance(sent, dict):
            replay.open_session(str(sent.get("session_hash")))
        self._send_recorded(recorded)

    def _send_recorded(self, recorded: dict) -> None:
        body = recorded.get("body") or {}
        if "json" in body:
            return self._send(recorded["status"], self.server.fake.localize(body["json"]))
        self._send(recorded["status"], body.get("text", ""))

    def _upload(self, recorded: dict, raw: bytes) -> None:
        replay = self.server.fake
        from email.parser import BytesParser
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
        )
        files = [
            part for part in message.iter_parts() if part.get_param("name", header="content-disposition") == "files"
        ]
        if len(files) != 1:
            replay.reject(f"POST /upload: {len(files)} parts named 'files'")
            return self._send(422, {"detail": "no files"})
        name = files[0].get_filename() or "file"
        self._send(200, [replay.upload(name, files[0].get_payload(decode=True), recorded["body"]["json"][0])])

    def _send_events(self, events: list[dict]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in events:
            lines = [f"{key}: {value}" for key, value in event.items() if key not in ("data", "data_text")]
            if "data" in event:
                lines.append("data: " + json.dumps(event["data"]))
            elif "data_text" in event:
                lines.append("data: " + event["data_text"])
            self.wfile.write(("\n".join(lines) + "\n\n").encode())
            self.wfile.flush()

    def _replay_websocket(self, messages: list[dict] | None) -> None:
        replay = self.server.fake
        if messages is None:
            return self._send(404, {"detail": "Not Found"})
        self._ws_accept()
        session, completed = None, False
        try:
            for message in messages:
                if message["from"] == "server" and "data" in message:
                    self._ws_send(replay.localize(message["data"]))
                    completed = message["data"].get("msg") == "process_completed"
                elif message["from"] == "client" and "data" in message:
                    sent = self._ws_recv()
                    model = message["data"]
                    if "data" in model:
                        if not replay.check_call("websocket", model, sent):
                            return
                    elif (
                        not isinstance(sent, dict)
                        or set(sent) != set(model)
                        or sent.get("fn_index") != model.get("fn_index")
                    ):
                        return replay.reject(f"websocket: sent {sent!r}, recorded {model!r}")
                    if session is None:
                        session = sent.get("session_hash")
                    elif sent.get("session_hash") != session:
                        changed = sent.get("session_hash")
                        return replay.reject(f"websocket: session_hash changed from {session!r} to {changed!r}")
                else:  # a close: the app's (sent, then the client's read) or the client's (read and answered)
                    if message["from"] == "server":
                        self._ws_send({}, opcode=0x8)
                    self._ws_recv()
                    return
        except (OSError, ConnectionError):
            if not completed:
                replay.reject("websocket: the client left mid-job")


ReplayedGradio.handler_class = _ReplayHandler
