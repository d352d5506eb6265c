"""A Gradio 4+ event stream that is quiet for a long while, or dribbles in through a slow proxy, must not
cost the job: a client that drops the stream makes Gradio cancel the job on the server (gradio issue
#13584). Every read is bounded by what is left of timeout_seconds, never by a shorter per-read timeout.

The app is a fake 4.x app (sse_v3) on 127.0.0.1 whose /queue/data stream says process_starts, then
nothing (or only heartbeats) for longer than connect_timeout_seconds, then the result.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from i2vd.render.backends.base import VideoRequest
from i2vd.render.backends.gradio import GradioBackend
from i2vd.render.backends.http import CallTimedOut
from tests.support.fakes import make_test_mp4, write_image
from tests.support.gradio_apps import FakeGradio3, _Handler3

pytestmark = pytest.mark.filterwarnings("ignore:::gradio")

QUIET_SECONDS = 2.5  # longer than connect_timeout_seconds below, well within timeout_seconds


class _QuietQueue(_Handler3):
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/upload":
            return self._send(200, ["/tmp/gradio/input.jpg"])
        if path == "/queue/join":
            self.server.fake.note("joined")
            return self._send(200, {"event_id": "e1"})
        if path == "/cancel":
            self.server.fake.note("cancelled")
            return self._send(200, {})
        self._send(404, {"detail": "Not Found"})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/queue/data":
            return super().do_GET()
        fake = self.server.fake
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        self._chunk(b'data: {"msg": "process_starts", "event_id": "e1"}\n\n')
        deadline = time.monotonic() + fake.quiet_seconds
        while time.monotonic() < deadline:  # quiet, or a heartbeat now and then (as Gradio sends every 15 s)
            if fake.heartbeat_every:
                time.sleep(fake.heartbeat_every)
                self._chunk(b'data: {"msg": "heartbeat"}\n\n')
            else:
                time.sleep(0.05)
        file_path = f"/tmp/gradio/{secrets.token_hex(8)}/video.mp4"
        with fake._lock:
            fake._files[file_path] = fake.video
        done = {
            "msg": "process_completed",
            "event_id": "e1",
            "success": True,
            "output": {
                "data": [{"video": {"path": file_path, "url": None, "orig_name": "video.mp4"}, "subtitles": None}],
                "is_generating": False,
            },
        }
        message = b"data: " + json.dumps(done).encode() + b"\n\n"
        if fake.dribble_seconds:  # a slow proxy: the last event a few bytes at a time
            for start in range(0, len(message), 16):
                self._chunk(message[start : start + 16])
                time.sleep(fake.dribble_seconds)
        else:
            self._chunk(message)
        self._chunk(b'data: {"msg": "close_stream"}\n\n')
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


class QuietGradio4(FakeGradio3):
    handler_class = _QuietQueue

    def __init__(
        self,
        video: bytes,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        heartbeat_every: float = 0.0,
        dribble_seconds: float = 0.0,
    ) -> None:
        super().__init__(video=video, version="4.44.1")
        self.quiet_seconds, self.heartbeat_every, self.dribble_seconds = quiet_seconds, heartbeat_every, dribble_seconds

    def config(self) -> dict:
        return {**super().config(), "protocol": "sse_v3"}


@pytest.fixture
def jpeg(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "beach.jpg", color=(30, 120, 200))


@pytest.fixture
def mp4(tmp_path: Path) -> bytes:
    return make_test_mp4(tmp_path / "fake.mp4", frames=4)


def generate(url: str, jpeg: bytes, tmp_path: Path, timeout_seconds: float = 20):
    backend = GradioBackend(url, timeout_seconds=timeout_seconds, connect_timeout_seconds=1, transport="queue")
    try:
        request = VideoRequest(
            image=jpeg,
            image_name="beach.jpg",
            prompt="waves",
            resolution="512p",
            frames=16,
            fps=8,
            steps=50,
            guidance=9.0,
            reply_dir=tmp_path / "incoming",
        )
        return backend.generate(request)
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("heartbeat_every", "dribble_seconds"),
    [(0.0, 0.0), (0.8, 0.0), (0.0, 0.02)],
    ids=["silent", "heartbeats", "slow-proxy"],
)
def test_a_quiet_or_slow_stream_within_timeout_seconds_keeps_the_job(
    tmp_path, jpeg, mp4, heartbeat_every, dribble_seconds
):
    with QuietGradio4(mp4, heartbeat_every=heartbeat_every, dribble_seconds=dribble_seconds) as app:
        reply = generate(app.url, jpeg, tmp_path)
        video = reply.path.read_bytes() if reply.path is not None else reply.data
        assert video == mp4
        assert app.events.count("joined") == 1  # one join: the stream was never dropped and joined again
        assert "cancelled" not in app.events


def test_a_stream_quiet_past_timeout_seconds_times_out_and_cancels(tmp_path, jpeg, mp4):
    with QuietGradio4(mp4, quiet_seconds=3.5) as app:
        with pytest.raises(CallTimedOut):
            generate(app.url, jpeg, tmp_path, timeout_seconds=2)
        assert "cancelled" in app.events  # past timeout_seconds, i2vd itself cancels it on the server
