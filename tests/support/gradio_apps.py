"""Gradio apps for the gradio backend tests, and a fake Gradio 3.x server.

- `predict_app` / `svd_app`: real Gradio Blocks (4.x-6.x) shaped like the apps i2vd meets: the
  seven /predict inputs (as /generate, and again as /generate_hidden, which /info does not list),
  and Stable Video Diffusion's (image, seed, randomize_seed,
  motion_bucket_id, fps_id). Both return a real MP4 and record every call in a `CallLog`. The
  prompt steers the 7-input app: "!fail <message>" raises gr.Error(message), "!none" returns
  None, "!slow" runs (with progress) until it is cancelled. The functions are async, so a
  cancelled job stops at once and no worker thread stays busy after a test.
- `FakeGradio3`: a Gradio 3.50 app shaped like `predict_app` (gradio 3 cannot be installed beside
  6): its /config, /info, replies to `POST /run/<api>` (video, gr.Error, None), the 404 of a closed
  API and the websocket queue's messages are replays of what a real Gradio 3.50.2 app of that
  shape answered (tests/fixtures/gradio/predict7-3.50, README there); the knobs (errors, hangs,
  other reply forms, a second endpoint) vary them. The websocket is a minimal RFC 6455 server,
  written here so the client is checked against an implementation of its own. Replays of real
  public apps (VGen, DynamiCrafter) are in tests/support/gradio_replay.py.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import hashlib
import io
import json
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from i2vd.render.backends.base import VideoRequest
from i2vd.render.backends.gradio import GradioBackend
from tests.support.fakes import make_test_mp4, write_image
from tests.support.serving import LoopbackFake, LoopbackServer

log = logging.getLogger(__name__)

RESOLUTION_CHOICES = ["256p", "512p", "768p", "1024p"]
SLOW_SECONDS = 60.0  # "!slow" runs this long unless cancelled first


class CallLog:
    """What an app was called with, in order; safe to read while the app serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def add(self, **entry: Any) -> None:
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def last(self, app: str) -> dict[str, Any] | None:
        found = [entry for entry in self.entries if entry["app"] == app]
        return found[-1] if found else None


def _image_digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def predict_app(video: Path, calls: CallLog):
    """Seven inputs like the /predict contract, a real MP4 out; plus an endpoint that returns no video."""
    import gradio as gr

    async def generate(image, prompt, resolution, frames, fps, steps, guidance, progress=gr.Progress()):
        calls.add(
            app="predict",
            image_sha256=_image_digest(image),
            prompt=prompt,
            resolution=resolution,
            frames=frames,
            fps=fps,
            steps=steps,
            guidance=guidance,
            outcome="running",
        )
        if prompt.startswith("!fail "):
            raise gr.Error(prompt.removeprefix("!fail "))
        if prompt == "!none":
            return None
        if prompt == "!slow":
            try:
                for tenth in range(int(SLOW_SECONDS * 10)):
                    progress(tenth / (SLOW_SECONDS * 10), desc="denoising")
                    await asyncio.sleep(0.1)
            except asyncio.CancelledError:
                calls.add(app="predict", outcome="cancelled")
                raise
        return str(video)

    def caption(image):
        return "an image"

    with gr.Blocks(analytics_enabled=False, title="i2vd test: predict") as blocks:
        image = gr.Image(type="filepath", label="Input image")
        prompt = gr.Textbox(label="Prompt")
        resolution = gr.Dropdown(RESOLUTION_CHOICES, value="512p", label="Resolution")
        frames = gr.Slider(8, 32, value=16, step=1, label="Frames")
        fps = gr.Slider(4, 24, value=8, step=1, label="FPS")
        steps = gr.Slider(10, 100, value=50, step=1, label="Steps")
        guidance = gr.Slider(1, 20, value=9.0, step=0.5, label="Guidance")
        output = gr.Video(label="Video")
        text = gr.Textbox(label="Caption")
        inputs = [image, prompt, resolution, frames, fps, steps, guidance]
        gr.Button("Generate").click(generate, inputs, output)
        gr.Button("Caption").click(caption, [image], text)
        # The same job, left out of /info: i2vd reads it from /config.
        hidden = {"api_visibility": "undocumented"} if int(gr.__version__.split(".")[0]) >= 6 else {"show_api": False}
        gr.Button("Generate (hidden)").click(generate, inputs, output, api_name="generate_hidden", **hidden)
    return blocks


def svd_app(video: Path, calls: CallLog):
    """Stable Video Diffusion's signature: no prompt, a seed, a motion bucket without a default, an fps id."""
    import gradio as gr

    async def sample(image, seed, randomize_seed, motion_bucket_id, fps_id):
        calls.add(
            app="svd",
            image_sha256=_image_digest(image),
            seed=seed,
            randomize_seed=randomize_seed,
            motion_bucket_id=motion_bucket_id,
            fps_id=fps_id,
        )
        return str(video)

    with gr.Blocks(analytics_enabled=False, title="i2vd test: svd") as blocks:
        image = gr.Image(type="filepath", label="Upload your image")
        seed = gr.Number(value=42, precision=0, label="Seed")
        randomize_seed = gr.Checkbox(value=True, label="Randomize seed")
        motion_bucket_id = gr.Number(value=None, precision=0, label="Motion bucket id")
        fps_id = gr.Slider(5, 30, value=6, step=1, label="Frames per second")
        output = gr.Video(label="Generated video")
        gr.Button("Generate").click(sample, [image, seed, randomize_seed, motion_bucket_id, fps_id], output)
    return blocks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(blocks, allowed: Path) -> str:
    """Start a Blocks app on 127.0.0.1 in this process; returns its URL. Stop it with blocks.close()."""
    port = free_port()
    blocks.queue(default_concurrency_limit=4)
    blocks.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=port,
        quiet=True,
        show_error=False,
        allowed_paths=[str(allowed)],
    )
    return f"http://127.0.0.1:{port}"


# -- a fake Gradio 3.x app --------------------------------------------------------------------

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_LABELS = ("Input image", "Prompt", "Resolution", "Frames", "FPS", "Steps", "Guidance")


@dataclass
class Gradio3Call:
    via: str  # "http" | "websocket"
    path: str
    fn_index: int
    image: bytes = field(repr=False)
    values: list[Any]  # prompt, resolution, frames, fps, steps, guidance
    state: Any


class FakeGradio3(LoopbackFake):
    """`with FakeGradio3(video=mp4) as app: ... app.url`;
    set `reply` to "video", "none", "hang", "drop" or ("error", text).

    "drop": the app dies on the job (the connection closes with no answer, after the data arrived).
    `file_drip`, `config_drip` (seconds): GET /file=, GET /config send one byte per that many seconds.
    """

    handler_class: type[BaseHTTPRequestHandler]  # _Handler3, set below; a test may serve other routes

    def __init__(
        self,
        video: bytes,
        *,
        version: str = "3.50.2",
        api_open: bool = True,
        queue: bool = True,
        info: str = "ok",
        second_video_endpoint: bool = False,
        port: int = 0,
    ) -> None:
        self.video = video
        self.version = version
        self.api_open = api_open
        self.queue = queue  # False: an app that never called .queue() (`enable_queue: false`): direct calls only
        self.info = info  # "ok" | "error" (500, like 4.44 with new pydantic) | "missing" (404)
        self.second_video_endpoint = second_video_endpoint
        self.reply: Any = "video"
        self.reply_form = "3.x"  # with reply "video": "3.x", "path", "4.x", "url" or "inline"
        self.file_drip = 0.0
        self.config_drip = 0.0  # the same for GET /config
        self._port = port  # 0: a free one; a test may ask for the port of an app it stopped (a restart)
        self._lock = threading.Lock()
        self._calls: list[Gradio3Call] = []
        self._rejections: list[str] = []
        self._events: list[str] = []
        self._files: dict[str, bytes] = {}
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()

    calls = property(lambda self: self._copy("_calls"), doc="Valid predictions, in order.")
    rejections = property(
        lambda self: self._copy("_rejections"), doc="Malformed requests: a correct client makes none."
    )
    events = property(lambda self: self._copy("_events"), doc="Websocket milestones: joined, data, left ...")

    def _copy(self, name: str) -> list:
        with self._lock:
            return list(getattr(self, name))

    def _before_stop(self) -> None:
        self._stopping.set()

    def _release_connections(self) -> None:
        with self._lock:  # a websocket's thread waits on its socket: shut it so the thread ends
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def start(self) -> FakeGradio3:
        self._stopping.clear()
        return super().start()

    # -- what the app says about itself: what the real 3.50.2 app answered ------------------------
    def config(self) -> dict:
        config = copy.deepcopy(_recorded("open", "GET", "/config")["body"]["json"])
        config["version"] = self.version
        config["enable_queue"] = self.queue
        if self.second_video_endpoint:
            predict = next(d for d in config["dependencies"] if d.get("api_name") == "predict")
            config["dependencies"].append({**copy.deepcopy(predict), "api_name": "predict_hd"})
        return config

    def api_info(self) -> dict:
        info = copy.deepcopy(_recorded("open", "GET", "/info")["body"]["json"])
        if self.second_video_endpoint:
            info["named_endpoints"]["/predict_hd"] = info["named_endpoints"]["/predict"]
        return info

    # -- predictions ---------------------------------------------------------------------------
    def predict(self, via: str, path: str, body: Any) -> tuple[bool, dict]:
        """(success, output) for one request, as Gradio 3's process_api makes them."""
        try:
            call = _parse_call(via, path, body)
        except ValueError as invalid:
            with self._lock:
                self._rejections.append(str(invalid))
            return False, {"error": f"invalid request: {invalid}"}
        with self._lock:
            self._calls.append(call)
        reply = self.reply
        if reply == "hang":
            self._stopping.wait()
            return False, {"error": "server stopped"}
        if reply == "drop":
            return False, {}
        if isinstance(reply, tuple) and reply[0] == "error":
            return False, {"error": repr(reply[1])}  # as 3.x sends gr.Error(text): "'text'"
        if reply == "none":
            return True, _recorded_output("!none")
        file_path = f"/tmp/gradio/{secrets.token_hex(20)}/video.mp4"
        with self._lock:
            self._files[file_path] = self.video
        output = _recorded_output("Waves crashing")
        recorded = output["data"][0]  # [{"name": path, "data": None, "is_file": True, "orig_name": ...}, None]
        video = {  # how Gradio 3 sends a video (recorded), and the other forms the client reads
            "3.x": [{**recorded[0], "name": file_path}, *recorded[1:]],
            "path": file_path,
            "4.x": {"video": {"path": file_path, "url": None, "orig_name": "video.mp4"}, "subtitles": None},
            "url": {"path": None, "url": f"{self.url}/file={file_path}", "meta": {"_type": "gradio.FileData"}},
            "inline": {
                "name": "video.mp4",
                "data": "data:video/mp4;base64," + base64.b64encode(self.video).decode(),
                "is_file": False,
            },
        }[self.reply_form]
        output["data"][0] = video
        return True, output

    def file(self, path: str) -> bytes | None:
        with self._lock:
            return self._files.get(path)

    def note(self, event: str) -> None:
        with self._lock:
            self._events.append(event)

    def track(self, sock: socket.socket, active: bool) -> None:
        with self._lock:
            (self._sockets.add if active else self._sockets.discard)(sock)


RECORDED = Path(__file__).parents[1] / "fixtures" / "gradio" / "predict7-3.50"  # see the README there


@functools.cache
def _recording(name: str) -> list[dict]:
    return json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))


def _recorded(name: str, method: str, path: str) -> dict:
    return next(e for e in _recording(name) if e.get("method") == method and e.get("path") == path)


def _recorded_output(prompt: str) -> dict:
    """The real app's reply to a POST /run/predict with this prompt (a deep copy, to fill in)."""
    for entry in _recording("open"):
        if entry.get("path") == "/run/predict" and entry["request"]["json"]["data"][1] == prompt:
            return copy.deepcopy(entry["body"]["json"])
    raise KeyError(prompt)


def _recorded_queue_messages() -> list[dict]:
    """What the real app sent on its websocket queue for a job that made a video, in order."""
    for entry in _recording("queue"):
        if "websocket" in entry:
            return [m["data"] for m in entry["messages"] if m["from"] == "server" and "data" in m]
    raise KeyError("websocket")


def _parse_call(via: str, path: str, body: Any) -> Gradio3Call:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ValueError('the body must be an object with a "data" list')
    data = body["data"]
    if len(data) != 8:
        raise ValueError(f"fn 0 takes 8 inputs (7 and a state), got {len(data)}")
    image = data[0]
    if not isinstance(image, str) or not image.startswith("data:image/"):
        raise ValueError(f"the image must be a data URL, got {str(image)[:40]!r}")
    raw = base64.b64decode(image.partition(",")[2], validate=True)
    with Image.open(io.BytesIO(raw)) as decoded:
        decoded.verify()
    if data[2] not in RESOLUTION_CHOICES:
        raise ValueError(f"resolution {data[2]!r} is not one of the choices")
    return Gradio3Call(via, path, int(body.get("fn_index", -1)), raw, data[1:7], data[7])


class _Handler3(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: threads end with their request
    server: LoopbackServer
    timeout = 30

    def do_GET(self) -> None:
        fake, path = self.server.fake, urlsplit(self.path).path
        if path == "/config":
            if fake.config_drip:
                return self._drip(json.dumps(fake.config()).encode(), fake.config_drip, "application/json")
            return self._send(200, fake.config())
        if path == "/info":
            if fake.info == "error":
                return self._send(500, "Internal Server Error")
            return (
                self._send(404, {"detail": "Not Found"}) if fake.info == "missing" else self._send(200, fake.api_info())
            )
        if path.startswith("/file="):
            data = fake.file(unquote(path.removeprefix("/file=")))
            if data and fake.file_drip:
                return self._drip(data, fake.file_drip)
            return self._send(200, data, "video/mp4") if data else self._send(404, {"detail": "File not allowed"})
        if path == "/queue/join" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        fake, path = self.server.fake, urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        names = {"predict"} | ({"predict_hd"} if fake.second_video_endpoint else set())
        route = path.strip("/").split("/")
        if len(route) != 2 or route[0] not in ("run", "api") or route[1] not in names:
            return self._send(404, {"detail": "Not Found"})
        if fake.queue and not fake.api_open:  # 3.50's answer (3.39's is 401, see tests/support/gradio_replay.py)
            return self._send(404, _recorded("queue", "POST", "/run/predict")["body"]["json"])
        success, output = fake.predict("http", path, json.loads(body or b"null"))
        if fake.reply == "drop":
            return  # HTTP/1.0: the connection closes with no answer at all
        self._send(200 if success else 500, output)

    def _drip(self, data: bytes, interval: float, content_type: str = "video/mp4") -> None:
        self.wfile.write(
            f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        )
        for byte in data:
            if self.server.fake._stopping.wait(interval):
                return
            self.wfile.write(bytes([byte]))  # OSError once the client hung up: the handler's end
            self.wfile.flush()

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body, content_type = body.encode(), "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # -- the websocket queue, as Gradio 3 runs it -----------------------------------------------
    def _websocket(self) -> None:
        fake = self.server.fake
        self._ws_accept()
        fake.track(self.connection, True)
        try:
            fake.note("joined")
            recorded = _recorded_queue_messages()  # send_hash, estimation, send_data, process_starts, progress, ...
            body = None
            for message in recorded[: recorded.index({"msg": "process_starts"}) + 1]:
                self._ws_send(message)
                if message["msg"] == "send_hash":
                    hello = self._ws_recv()
                    if not isinstance(hello, dict) or "session_hash" not in hello or "fn_index" not in hello:
                        return fake.note(f"bad hash message {hello!r}")
                elif message["msg"] == "send_data":
                    body = self._ws_recv()
                    fake.note("data")
            for message in recorded:
                if message["msg"] == "progress":
                    self._ws_send(message)
            if fake.reply == "hang":
                self._ws_recv()  # until the client closes
                return fake.note("left")
            if fake.reply == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)  # no close frame: the app died
                return fake.note("dropped")
            success, output = fake.predict("websocket", "/queue/join", body)
            self._ws_send({"msg": "process_completed", "output": output, "success": success})
            self._ws_recv()  # the client's close
            fake.note("closed")
        except (OSError, ConnectionError):
            fake.note("left")
        finally:
            fake.track(self.connection, False)

    def _ws_accept(self) -> None:
        """The websocket handshake (RFC 6455): this connection speaks frames from now on."""
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + _WS_GUID).encode()).digest()
        ).decode()
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.close_connection = True

    def _ws_send(self, message: dict, opcode: int = 0x1) -> None:
        payload = json.dumps(message).encode() if opcode == 0x1 else b""
        length = len(payload)
        header = bytes([0x80 | opcode]) + (
            bytes([length])
            if length < 126
            else struct.pack("!BH", 126, length)
            if length < 65536
            else struct.pack("!BQ", 127, length)
        )
        self.wfile.write(header + payload)

    def _ws_recv(self) -> Any:
        """The next text message as JSON; None when the client closes (answered with a close frame)."""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b"\0\0\0\0"
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(self._read(length)))
            if opcode == 0x8:
                self._ws_send({}, opcode=0x8)
                return None
            if opcode == 0x1:
                return json.loads(payload)

    def _read(self, count: int) -> bytes:
        data = self.rfile.read(count)
        if len(data) < count:
            raise ConnectionError("the client went away")
        return data

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


FakeGradio3.handler_class = _Handler3


# -- the running apps, shared by every test module through the session fixture `apps` --------


SVD_INPUTS = {"image": "image", "seed": "seed", "motion_bucket_id": {"value": 127}, "fps_id": "fps"}
TRANSPORTS = ("queue", "call")


@dataclass(frozen=True)
class RunningApps:
    predict_url: str
    svd_url: str
    calls: CallLog
    video: bytes
    version: str


def start_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApps]:
    """The body of the session fixture `apps` (tests/conftest.py): both apps started, warmed up, closed after."""
    gradio = pytest.importorskip("gradio")
    if int(gradio.__version__.split(".")[0]) < 4:
        pytest.skip(f"these tests need Gradio 4 or later, this is {gradio.__version__}")
    folder = tmp_path_factory.mktemp("gradio-apps")
    video = make_test_mp4(folder / "clip.mp4")
    image = write_image(folder / "warm.jpg")
    calls = CallLog()
    predict, svd = predict_app(folder / "clip.mp4", calls), svd_app(folder / "clip.mp4", calls)
    try:
        running = RunningApps(launch(predict, folder), launch(svd, folder), calls, video, gradio.__version__)
        # Warm-up: every route a test uses, once, so Gradio's worker threads exist before the tests.
        for transport in TRANSPORTS:
            for url, inputs in ((running.predict_url, None), (running.svd_url, SVD_INPUTS)):
                backend = GradioBackend(url, inputs=inputs, transport=transport, timeout_seconds=30)
                try:
                    assert (
                        backend.generate(
                            VideoRequest(
                                image=image,
                                image_name="warm.jpg",
                                prompt="warm up",
                                resolution="512p",
                                frames=16,
                                fps=8,
                                steps=50,
                                guidance=9.0,
                            )
                        ).data
                        == video
                    )
                finally:
                    backend.close()
        yield running
    finally:
        predict.close()
        svd.close()
