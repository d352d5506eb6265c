"""Test doubles and helpers: a fake I2V "/predict" server, real small media files, polling.

FakePredictServer is a real HTTP server on 127.0.0.1 that speaks the contract in
SPEC.md ("The I2V server contract"): it validates every request like a strict server,
records it, answers with the video given to it in any of the reply forms real servers
use, and can be told to fail, hang, answer garbage or go down while a test runs.
Every wait in it is interruptible, so stop() returns at once and leaves no thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import imageio_ffmpeg
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
Predicate = Callable[["ReceivedRequest"], bool] | None  # selects requests by image, prompt...; None: all
REPLY_FORMS = ("base64", "data_url", "path", "file_dict", "gradio3_list")
PREDICT_PATHS = ("/api/predict/", "/api/predict", "/run/predict", "/run/predict/")
OOM_MESSAGE = (
    "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB "
    "(GPU 0; 23.65 GiB total capacity; 21.02 GiB already allocated)"
)
_FIELDS = ("image", "prompt", "resolution_index", "frames", "fps", "steps", "guidance")
_RANGES = {"resolution_index": (0, 3), "frames": (8, 32), "fps": (4, 24), "steps": (10, 100), "guidance": (1, 20)}
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(.*)", re.DOTALL)


@dataclass(frozen=True)
class ReceivedRequest:
    """One valid predict call, as the server understood it."""

    image: bytes = field(repr=False)
    image_sha256: str
    prompt: str
    resolution_index: int
    frames: int
    fps: int
    steps: int
    guidance: float
    image_encoding: str  # "base64" | "data_url"
    received_at: float  # time.time(), comparable across processes
    path: str


@dataclass
class _Fault:
    kind: str  # "error" | "garbage" | "empty" | "hang" | "drip" | "drop_mid_reply"
    when: Predicate
    remaining: int | None  # None: forever
    status: int = 200
    body: Any = None
    interval: float = 0.0


class _Invalid(ValueError):
    """The payload breaks the contract: answered with 422 and this message."""


class FakePredictServer:
    """A fake I2V server; `with FakePredictServer(video=mp4) as server: ... server.url`.

    Faults are checked in the order they were added; the first that matches a request
    (its `when` predicate, or any request when None) and has uses left applies.
    """

    def __init__(
        self,
        video: bytes,
        paths: tuple[str, ...] = PREDICT_PATHS,
        reply_form: str = "base64",
        latency_seconds: float = 0.0,
    ) -> None:
        self.video = video
        self.paths = frozenset(paths)
        self.reply_form = reply_form
        self.latency_seconds = latency_seconds
        self._port = 0
        self._http: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._cond = threading.Condition()  # guards every attribute below
        self._up = False
        self._epoch = 0  # bumped by go_down()/stop(): aborts waits of requests begun before
        self._releases = 0  # bumped by clear_faults(): releases hanging requests
        self._faults: list[_Fault] = []
        self._requests: list[ReceivedRequest] = []
        self._rejections: list[str] = []
        self._files: dict[str, bytes] = {}
        self._file_downloads: list[str] = []
        self._errors: list[str] = []
        self._active = 0
        self._max_concurrent = 0

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakePredictServer:
        self._listen(self._port)
        return self

    def stop(self) -> None:
        """Close the socket and every connection (waiting requests get no reply), join all threads."""
        self._halt()

    go_down = stop  # like a crash: connections refused, no reply to requests in flight; see come_up()

    def come_up(self) -> None:
        """Listen again on the same port as before go_down()."""
        assert self._port, "come_up() needs a server that was started once"
        self._listen(self._port)

    def __enter__(self) -> FakePredictServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._port, "the server was never started"
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._up

    def _listen(self, port: int) -> None:
        assert self._http is None, "the server is already listening"
        self._http = _HTTPServer(port, self)
        self._port = self._http.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakePredictServer:{self._port}",
            daemon=True,
        )
        with self._cond:
            self._up = True
        self._serve_thread.start()

    def _halt(self) -> None:
        with self._cond:
            self._up = False
            self._epoch += 1
            self._cond.notify_all()
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        self._serve_thread.join()
        self._http.close_connections()
        self._http = self._serve_thread = None

    # -- what the server saw: copies, safe to read while it serves -------------------
    requests = property(lambda self: self._copy("_requests"), doc="Every valid predict call, in order.")
    rejections = property(lambda self: self._copy("_rejections"), doc="422 messages: a correct client gets none.")
    file_downloads = property(lambda self: self._copy("_file_downloads"), doc="Paths fetched with GET /file=.")
    errors = property(lambda self: self._copy("_errors"), doc="Exceptions inside the fake itself: stays empty.")
    in_flight = property(lambda self: self._active, doc="Predict calls being processed now.")
    max_concurrent = property(lambda self: self._max_concurrent, doc="The most predict calls processed at once.")

    def _copy(self, name: str) -> list:
        with self._cond:
            return list(getattr(self, name))

    @property
    def reply_form(self) -> str:
        return self._reply_form

    @reply_form.setter
    def reply_form(self, form: str) -> None:
        if form not in REPLY_FORMS:
            raise ValueError(f"reply_form must be one of {REPLY_FORMS}, not {form!r}")
        self._reply_form = form

    # -- faults ----------------------------------------------------------------------
    def fail_with(
        self,
        status: int = 500,
        body: str | bytes | dict = "Internal Server Error",
        when: Predicate = None,
        times: int | None = None,
    ) -> None:
        self._add(_Fault("error", when, times, status, body))

    def reply_oom(self, when: Predicate = None, times: int | None = None) -> None:
        self._add(_Fault("error", when, times, 500, {"error": OOM_MESSAGE}))

    def reply_garbage(self, when: Predicate = None, times: int | None = None, data: bytes | None = None) -> None:
        """200 with non-video bytes (random, or `data`; b"" for an empty video) in the reply form."""
        self._add(_Fault("garbage", when, times, body=data))

    def reply_empty(self, when: Predicate = None, times: int | None = None, body: dict | None = None) -> None:
        """200 without a video: {"data": []} by default, or `body` (e.g. {})."""
        self._add(_Fault("empty", when, times, body={"data": []} if body is None else body))

    def hang(self, when: Predicate = None, times: int | None = None) -> None:
        """Accept and never answer, until clear_faults() (then reply normally) or stop/go_down."""
        self._add(_Fault("hang", when, times))

    def drip(self, interval: float = 0.05, when: Predicate = None, times: int | None = None) -> None:
        """Answer normally, but one byte every `interval` seconds, headers included: never a silent read."""
        self._add(_Fault("drip", when, times, interval=interval))

    def drop_mid_reply(self, when: Predicate = None, times: int | None = None) -> None:
        """Send the headers and half the reply, then close the connection (a server that crashed mid-reply)."""
        self._add(_Fault("drop_mid_reply", when, times))

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()
            self._releases += 1
            self._cond.notify_all()

    def _add(self, fault: _Fault) -> None:
        assert fault.remaining is None or fault.remaining > 0, "times must be positive or None"
        with self._cond:
            self._faults.append(fault)

    def _take_fault(self, request: ReceivedRequest) -> _Fault | None:
        for fault in self._faults:
            if fault.when is None or fault.when(request):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None

    # -- request handling (runs in connection threads) -------------------------------
    def _serve_predict(self, handler: _Handler, body: bytes) -> None:
        with self._cond:
            if not self._up:
                return handler.drop()
            epoch = self._epoch
            self._active += 1
            self._max_concurrent = max(self._max_concurrent, self._active)
        try:
            self._answer(handler, body, epoch)
        finally:
            with self._cond:
                self._active -= 1

    def _answer(self, handler: _Handler, body: bytes, epoch: int) -> None:
        started = time.monotonic()
        try:
            request = _parse_predict(body, urlsplit(handler.path).path)
        except _Invalid as invalid:
            with self._cond:
                self._rejections.append(str(invalid))
            return handler.send(422, {"detail": str(invalid)})
        with self._cond:
            self._requests.append(request)
            fault = self._take_fault(request)
            releases = self._releases
        if fault and fault.kind == "hang" and not self._pause(epoch, None, releases):
            return handler.drop()
        if not self._pause(epoch, self.latency_seconds):
            return handler.drop()
        if fault and fault.kind == "error":
            return handler.send(fault.status, fault.body)
        if fault and fault.kind == "empty":
            return handler.send(200, fault.body)
        video = self.video
        if fault and fault.kind == "garbage":
            # random bytes after a fixed start: base64 of pure random bytes begins with "/" one time in 64,
            # which a client rightly reads as a server path (a real video's base64 never begins so)
            video = b"garbage " + os.urandom(2048) if fault.body is None else fault.body
        duration = time.monotonic() - started
        reply = {
            "data": [self._encode(video)],
            "is_generating": False,
            "duration": duration,
            "average_duration": duration,
        }
        if fault and fault.kind == "drip":
            return handler.send_dripping(200, reply, fault.interval, lambda: self._epoch != epoch)
        if fault and fault.kind == "drop_mid_reply":
            return handler.send_partial(200, reply)
        handler.send(200, reply)

    def _pause(self, epoch: int, seconds: float | None, releases: int | None = None) -> bool:
        """Wait `seconds` (None: until released); False when stop()/go_down() cut it short."""
        if seconds is not None and seconds <= 0:
            return self._epoch == epoch
        with self._cond:
            self._cond.wait_for(
                lambda: self._epoch != epoch or (releases is not None and self._releases != releases), timeout=seconds
            )
            return self._epoch == epoch

    def _encode(self, video: bytes) -> Any:
        text = base64.b64encode(video).decode("ascii")
        form = self.reply_form
        if form == "base64":
            return text
        if form == "data_url":
            return "data:video/mp4;base64," + text
        path = f"/tmp/gradio/{secrets.token_hex(20)}/video.mp4"
        with self._cond:
            self._files[path] = video
        file_dict = {"name": path, "data": None, "is_file": True, "orig_name": "video.mp4"}
        return {"path": path, "file_dict": file_dict, "gradio3_list": [file_dict, None]}[form]

    def _serve_file(self, handler: _Handler, path: str) -> None:
        with self._cond:
            data = self._files.get(path)
            if data is not None:
                self._file_downloads.append(path)
        if data is None:
            return handler.send(404, {"detail": f"File not allowed: {path}"})
        handler.send(200, data, "video/mp4")


def _parse_predict(body: bytes, path: str) -> ReceivedRequest:
    try:
        payload = json.loads(body)
    except ValueError:
        raise _Invalid("request body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise _Invalid('request body must be an object with a "data" list')
    data = payload["data"]
    if len(data) != len(_FIELDS):
        raise _Invalid(f"data must hold {len(_FIELDS)} inputs {_FIELDS}, got {len(data)}")
    image, prompt, *numbers = data
    if not isinstance(image, str):
        raise _Invalid(f"data[0] (image) must be a base64 string or data URL, got {type(image).__name__}")
    if not isinstance(prompt, str):
        raise _Invalid(f"data[1] (prompt) must be a string, got {type(prompt).__name__}")
    for index, (name, value) in enumerate(zip(_FIELDS[2:], numbers), start=2):
        kinds = (int, float) if name == "guidance" else int
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise _Invalid(
                f"data[{index}] ({name}) must be {'a number' if name == 'guidance' else 'an integer'}, got {value!r}"
            )
        low, high = _RANGES[name]
        if not low <= value <= high:
            raise _Invalid(f"data[{index}] ({name}) must be between {low} and {high}, got {value!r}")
    encoding = "data_url" if image.startswith("data:") else "base64"
    match = _DATA_URL.fullmatch(image)
    if encoding == "data_url" and not match:
        raise _Invalid("data[0] (image) data URL must look like data:image/<type>;base64,<data>")
    try:
        raw = base64.b64decode(match.group(1) if match else image, validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid("data[0] (image) is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as decoded:
            decoded.verify()
    except Exception:
        raise _Invalid(f"data[0] (image) is not a decodable image ({len(raw)} bytes)") from None
    return ReceivedRequest(
        raw,
        hashlib.sha256(raw).hexdigest(),
        prompt,
        *numbers[:4],
        float(numbers[4]),
        image_encoding=encoding,
        received_at=time.time(),
        path=path,
    )


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connection threads so they can be closed and joined (daemon ones are not)."""

    daemon_threads = True
    allow_reuse_address = True  # SO_REUSEADDR: come_up() re-binds the same port at once

    def __init__(self, port: int, fake: FakePredictServer) -> None:
        self.fake = fake
        self.connections: dict[threading.Thread, socket.socket] = {}
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:  # HTTPServer's own calls getfqdn(), slow where DNS is odd
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._connection,
            args=(request, client_address),
            name=f"FakePredictServer:{self.server_port}:{client_address[1]}",
            daemon=True,
        )
        with self.connections_lock:
            self.connections[thread] = request
        thread.start()

    def _connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.pop(threading.current_thread(), None)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections.items())
        for _, request in connections:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread, _ in connections:
            thread.join(timeout=5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client went away, or stop() closed the connection
            return
        log.exception("FakePredictServer failed on a request")
        with self.fake._cond:
            self.fake._errors.append(repr(error))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn behind Gradio
    # TCP_NODELAY, as uvicorn (asyncio) sets it: without, a keep-alive reply's body waits behind its headers for
    # the client's delayed ACK, 40 ms a request that no real server adds (benchmarks/RESULTS.md, overhead).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            return self.send(411, {"detail": "Content-Length required"})
        body = self.rfile.read(int(length))
        if urlsplit(self.path).path not in self.server.fake.paths:
            return self.send(404, {"detail": "Not Found"})
        self.server.fake._serve_predict(self, body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/file="):
            return self.server.fake._serve_file(self, unquote(path[len("/file=") :]))
        if path == "/":
            return self.send(200, b"<html><body>fake I2V server</body></html>", "text/html")
        self.send(404 if path not in self.server.fake.paths else 405, {"detail": "Not Found"})

    def send(self, status: int, body: Any, content_type: str | None = None) -> None:
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            body, content_type = body.encode(), content_type or "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without an answer, as a dying server does."""
        self.close_connection = True

    def _encoded(self, status: int, body: Any) -> bytes:
        body = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body

    def send_dripping(self, status: int, body: Any, interval: float, stopped: Callable[[], bool]) -> None:
        """The whole answer one byte at a time; stops when the client goes away or the server stops."""
        self.close_connection = True
        for byte in self._encoded(status, body):
            if stopped():
                return
            self.wfile.write(bytes([byte]))  # OSError once the client hung up: the handler's end
            self.wfile.flush()
            time.sleep(interval)

    def send_partial(self, status: int, body: Any) -> None:
        """Headers promising the whole body, half of it, then the connection closes."""
        data = self._encoded(status, body)
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_test_mp4(path: Path, frames: int = 8, width: int = 64, height: int = 48, fps: int = 8) -> bytes:
    """Write a real, small H.264 MP4 (a moving gradient) and return its bytes."""
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=2,
        ffmpeg_log_level="quiet",
    )
    writer.send(None)  # start the generator
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    for index in range(frames):
        shade = (ramp + index * 255 / max(frames, 1)) % 256
        frame = np.stack([np.tile(shade, (height, 1))] * 3, axis=-1).astype(np.uint8)
        frame[..., 2] = 255 - frame[..., 0]
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return Path(path).read_bytes()


def write_text(path: Path, text: str) -> Path:
    """A text file (a sidecar, a caption), its folders made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_image(
    path: Path, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 80, 40), format: str | None = None
) -> bytes:
    """Write a real image (format from the extension, JPEG when unknown) and return its bytes.

    The same arguments give the same bytes, which i2vd treats as one image: vary `color`
    (or `size`) for images that must make distinct videos.
    """
    path = Path(path)
    if format is None:
        format = Image.registered_extensions().get(path.suffix.lower(), "JPEG")
    image = Image.new("RGB", size, color)
    image.paste(tuple(255 - channel for channel in color), (0, 0, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_slowly(path: Path, data: bytes, chunks: int, pause: threading.Event | float, timeout: float = 30) -> None:
    """Write `data` in `chunks` parts, flushed and fsynced, pausing between parts.

    `pause` is seconds to sleep (a slow writer), or an Event the writer waits for before
    each further part (the test decides when the copy goes on; once set, it finishes).
    """
    step = -(-len(data) // max(chunks, 1)) or 1
    with open(path, "wb") as file:
        for offset in range(0, max(len(data), 1), step):
            if offset:
                if isinstance(pause, threading.Event):
                    if not pause.wait(timeout):
                        raise TimeoutError(f"write_slowly({path}): pause event not set within {timeout} s")
                else:
                    time.sleep(pause)
            file.write(data[offset : offset + step])
            file.flush()
            os.fsync(file.fileno())


def wait_for(condition: Callable[[], T], timeout: float = 10, interval: float = 0.02, message: str = "") -> T:
    """Poll until condition() is truthy and return its value; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message or 'condition not met'} within {timeout} s (last value: {value!r})")
        time.sleep(interval)
