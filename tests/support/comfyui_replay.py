"""A replay of a real ComfyUI: what it answered, recorded (tests/fixtures/comfyui/<version>/<session>.json).

`ReplayedComfyUI("free")` serves, over real HTTP and a real websocket on 127.0.0.1, the replies and
websocket messages that ComfyUI 0.3.64 gave when the recording was made (the README there says how).
Only what must differ is substituted: the prompt_id and clientId (i2vd picks fresh ones), and the
video's bytes (the session's own video, kept beside the recording). Like the real server, a prompt
runs whether or not its client is connected (its messages go to whichever socket holds its clientId
then), is listed by `/queue` until it ends, and has a `/history` entry once it has. `hold_before`
stops a prompt just before the named message until `release()`; `drop_sockets()` cuts every
websocket (a network blip, or the daemon's death as the server sees it). What a client sends is
checked against what the real server was sent: the same nodes and classes, a LoadImage naming an
uploaded image that decodes. Deviations land in `rejections`.
"""

from __future__ import annotations

import io
import json
import select
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image

from tests.support.gradio_apps import _Handler3
from tests.support.serving import LoopbackFake

FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui"
VERSION = "0.3.64"  # the real ComfyUI these replays mirror


@dataclass
class _Prompt:
    prompt_id: str
    client_id: str
    number: int
    messages: deque = field(default_factory=deque)
    done: bool = False
    interrupted: bool = False


class ReplayedComfyUI(LoopbackFake):
    """`with ReplayedComfyUI("free") as comfy: ... comfy.url, comfy.prompts, comfy.requests`."""

    def __init__(self, session: str, *, version: str = VERSION, fixtures: Path = FIXTURES) -> None:
        folder = fixtures / version
        self.session, self.version_folder = session, folder
        self.exchanges: list[dict] = json.loads((folder / f"{session}.json").read_text(encoding="utf-8"))
        sockets = [entry for entry in self.exchanges if "websocket" in entry]
        self._recorded_client = parse_qs(sockets[0]["query"])["clientId"][0]
        self._greeting, self._script = self._split(sockets[0]["messages"])
        submitted = self.exchange("POST", "/prompt")
        self._recorded_prompt = submitted["request"]["json"]["prompt"]
        self._recorded_id = (submitted["body"]["json"] or {}).get("prompt_id") if submitted["status"] == 200 else None
        video = folder / f"{session}.mp4"
        self.video = video.read_bytes() if video.exists() else b""
        self.hold_before: str | None = None
        self._cond = threading.Condition()
        self._prompts: dict[str, _Prompt] = {}
        self._outboxes: dict[str, deque] = {}
        self._uploads: dict[str, bytes] = {}
        self._log: dict[str, list] = {"requests": [], "rejections": [], "prompts": [], "posts": []}
        self._stopping = False
        self._runner: threading.Thread | None = None

    requests = property(lambda self: self._copy("requests"), doc='"METHOD /path STATUS", in order.')
    rejections = property(lambda self: self._copy("rejections"), doc="Where the client left the recording.")
    prompts = property(lambda self: self._copy("prompts"), doc="Each POST /prompt body as sent.")
    posts = property(lambda self: self._copy("posts"), doc="(path, JSON body) of /interrupt, /free, /queue.")

    def _copy(self, name: str) -> list:
        with self._cond:
            return list(self._log[name])

    def _add(self, name: str, item: Any) -> None:
        with self._cond:
            self._log[name].append(item)

    @staticmethod
    def _split(messages: list[dict]) -> tuple[list[dict], list[dict]]:
        """(what a socket hears on connecting, what a prompt sends): the server's messages only."""
        sent = [message for message in messages if message["from"] == "server" and "close" not in message]
        return sent[:1], sent[1:]

    # -- life --------------------------------------------------------------------------------------
    def _after_start(self) -> None:
        self._runner = threading.Thread(target=self._run, name=f"ReplayedComfyUI:{self.session}:runner")
        self._runner.start()

    def _before_stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self) -> None:
        super().stop()
        if self._runner is not None:
            self._runner.join()
            self._runner = None

    @property
    def version(self) -> str:
        return self.exchange("GET", "/system_stats")["body"]["json"]["system"]["comfyui_version"]

    def release(self) -> None:
        with self._cond:
            self.hold_before = None
            self._cond.notify_all()

    def drop_sockets(self) -> None:
        with self._cond:
            for outbox in self._outboxes.values():
                outbox.append(None)  # the socket's thread closes the connection
            self._cond.notify_all()

    def running(self) -> list[str]:
        with self._cond:
            return [prompt.prompt_id for prompt in self._prompts.values() if not prompt.done]

    # -- the recording -------------------------------------------------------------------------------
    def exchange(self, method: str, path: str) -> dict | None:
        for entry in self.exchanges:
            if entry.get("method") == method and (
                entry.get("path") == path
                or (path.startswith("/history/") and entry.get("path", "").startswith("/history/"))
            ):
                return entry
        return None

    def localize(self, value: Any, prompt_id: str | None = None, client_id: str | None = None) -> Any:
        text = json.dumps(value)
        if prompt_id and self._recorded_id:
            text = text.replace(self._recorded_id, prompt_id)
        if client_id:
            text = text.replace(self._recorded_client, client_id)
        return json.loads(text)

    # -- what the server does --------------------------------------------------------------------------
    def _run(self) -> None:
        """ComfyUI's prompt worker: each prompt's messages in order, to its client's socket if connected."""
        with self._cond:
            while not self._stopping:
                for prompt in self._prompts.values():
                    while prompt.messages and not prompt.interrupted:
                        message = prompt.messages[0]
                        if self.hold_before and message.get("data", {}).get("type") == self.hold_before:
                            break
                        prompt.messages.popleft()
                        outbox = self._outboxes.get(prompt.client_id)
                        if outbox is not None:
                            outbox.append(message)
                    if (not prompt.messages or prompt.interrupted) and not prompt.done:
                        prompt.done = True
                self._cond.notify_all()
                self._cond.wait(0.05)

    def submit(self, body: Any) -> tuple[int, Any]:
        """POST /prompt: (status, reply)."""
        self._add("prompts", body)
        recorded = self.exchange("POST", "/prompt")
        if not isinstance(body, dict) or not {"prompt", "client_id"} <= set(body):
            self._add("rejections", f"POST /prompt: keys {sorted(body) if isinstance(body, dict) else body!r}")
            return 400, {"error": {"type": "invalid_prompt", "message": "no prompt"}, "node_errors": {}}
        prompt = body["prompt"]
        classes = {node: spec.get("class_type") for node, spec in prompt.items()} if isinstance(prompt, dict) else None
        recorded_classes = {node: spec["class_type"] for node, spec in self._recorded_prompt.items()}
        if classes != recorded_classes:
            self._add("rejections", f"POST /prompt: nodes {classes}, recorded {recorded_classes}")
        for node, spec in prompt.items():
            if spec.get("class_type") == "LoadImage" and spec["inputs"].get("image") not in self._uploads:
                self._add(
                    "rejections", f"POST /prompt: node {node} loads {spec['inputs'].get('image')!r}, never uploaded"
                )
        prompt_id = str(body.get("prompt_id") or "")
        if recorded["status"] != 200:
            return recorded["status"], self.localize(recorded["body"]["json"], prompt_id)
        with self._cond:
            number = len(self._prompts) + 1
            messages = [self.localize(message, prompt_id, body["client_id"]) for message in self._script]
            self._prompts[prompt_id] = _Prompt(prompt_id, body["client_id"], number, deque(messages))
            self._cond.notify_all()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": {}}

    def history(self, prompt_id: str) -> dict:
        with self._cond:
            prompt = self._prompts.get(prompt_id)
            if prompt is None or not prompt.done or prompt.interrupted:
                return {}
        recorded = self.exchange("GET", "/history/")
        return self.localize(recorded["body"]["json"], prompt_id) if recorded else {}

    def queue(self) -> dict:
        with self._cond:
            running = [
                [p.number, p.prompt_id, {}, {"client_id": p.client_id}, []]
                for p in self._prompts.values()
                if not p.done
            ]
        return {"queue_running": running[:1], "queue_pending": running[1:]}

    def interrupt(self, body: Any) -> None:
        with self._cond:
            prompt = self._prompts.get((body or {}).get("prompt_id", "")) if isinstance(body, dict) else None
            for candidate in [prompt] if prompt else list(self._prompts.values()):
                if not candidate.done:
                    candidate.interrupted = True
            self._cond.notify_all()

    def upload(self, form: dict[str, Any]) -> tuple[int, Any]:
        image = form.get("image")
        if not isinstance(image, tuple):
            self._add("rejections", "POST /upload/image: no file named 'image'")
            return 400, "no image"
        name, raw = image
        try:
            with Image.open(io.BytesIO(raw)) as decoded:
                decoded.verify()
        except Exception as error:  # noqa: BLE001 - any decoder complaint means: not an image
            self._add("rejections", f"POST /upload/image: the image does not decode: {error}")
        subfolder = form.get("subfolder", "")
        with self._cond:
            self._uploads[f"{subfolder}/{name}" if subfolder else name] = raw
        return 200, {"name": name, "subfolder": subfolder, "type": form.get("type", "input")}

    def outbox(self, client_id: str) -> deque:
        with self._cond:
            outbox = self._outboxes[client_id] = deque(self.localize(self._greeting, None, client_id))
            return outbox

    def wait_outbox(self, client_id: str, outbox: deque) -> Any:
        """The next message for this socket; None to close it; "" for nothing yet."""
        with self._cond:
            if not outbox and not self._stopping:
                self._cond.wait(0.05)
            if self._stopping:
                return None
            return outbox.popleft() if outbox else ""

    def forget_socket(self, client_id: str, outbox: deque) -> None:
        with self._cond:
            if self._outboxes.get(client_id) is outbox:
                del self._outboxes[client_id]


class _ReplayHandler(_Handler3):
    server: Any

    def do_GET(self) -> None:
        replay, parts = self.server.fake, urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            replay._add("requests", "WEBSOCKET /ws")
            return self._websocket(query.get("clientId", [""])[0])
        if path == "/system_stats":
            return self._reply(f"GET {path}", 200, replay.exchange("GET", path)["body"]["json"])
        if path.startswith("/history/"):
            return self._reply(f"GET {path}", 200, replay.history(path.removeprefix("/history/")))
        if path == "/queue":
            return self._reply("GET /queue", 200, replay.queue())
        if path == "/view":
            wanted = {key: values[0] for key, values in query.items()}
            recorded = dict(item.split("=", 1) for item in replay.exchange("GET", "/view")["query"].split("&"))
            if wanted != recorded:
                replay._add("rejections", f"GET /view {wanted}, recorded {recorded}")
                return self._reply("GET /view", 404, "404: Not Found")
            replay._add("requests", "GET /view 200")
            return self._send(200, replay.video, "video/mp4")
        self._reply(f"GET {path}", 404, "404: Not Found")

    def do_POST(self) -> None:
        replay, path = self.server.fake, unquote(urlsplit(self.path).path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/upload/image":
            return self._reply("POST /upload/image", *replay.upload(self._form(raw)))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            replay._add("rejections", f"POST {path}: the body is no JSON")
            return self._reply(f"POST {path}", 400, "invalid JSON")
        if path == "/prompt":
            return self._reply("POST /prompt", *replay.submit(body))
        if path in ("/interrupt", "/free", "/queue"):
            replay._add("posts", (path, body))
            if path == "/interrupt":
                replay.interrupt(body)
            return self._reply(f"POST {path}", 200, b"")
        self._reply(f"POST {path}", 404, "404: Not Found")

    def _reply(self, request: str, status: int, body: Any) -> None:
        self.server.fake._add("requests", f"{request} {status}")
        self._send(status, body, "application/json" if isinstance(body, (dict, list)) else "text/plain")

    def _form(self, raw: bytes) -> dict[str, Any]:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
        )
        form: dict[str, Any] = {}
        for part in message.iter_parts():
            name, payload = part.get_param("name", header="content-disposition"), part.get_payload(decode=True) or b""
            form[name] = (part.get_filename(), payload) if part.get_filename() is not None else payload.decode()
        return form

    def _websocket(self, client_id: str) -> None:
        replay = self.server.fake
        self._ws_accept()
        outbox = replay.outbox(client_id)
        try:
            while True:
                message = replay.wait_outbox(client_id, outbox)
                if message is None:
                    return self._ws_send({}, opcode=0x8)
                if message:
                    self._ws_message(message)
                if select.select([self.connection], [], [], 0)[0] and self._ws_recv() is None:
                    return  # the client closed (answered in _ws_recv); a text message ComfyUI would ignore
        except (OSError, ConnectionError):
            return
        finally:
            replay.forget_socket(client_id, outbox)

    def _ws_message(self, message: dict) -> None:
        if "binary" in message:  # a preview: its recorded head, padded to its recorded size
            head = bytes.fromhex(message["binary"]["head"])
            payload = head + b"\0" * max(0, message["binary"]["bytes"] - len(head))
            length = len(payload)
            header = bytes([0x82]) + (
                bytes([length])
                if length < 126
                else struct.pack("!BH", 126, length)
                if length < 65536
                else struct.pack("!BQ", 127, length)
            )
            self.wfile.write(header + payload)
            return
        self._ws_send(message["data"])


ReplayedComfyUI.handler_class = _ReplayHandler
