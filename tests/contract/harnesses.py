"""Each backend behind its server, for the contract suite (test_backend_contract.py).

A harness makes the backend and arranges each failure the contract names; a method returns the
request's changes that go with the failure (a prompt the real app obeys), or skips the test with the
reason this backend cannot have that failure. Every networked server sits behind a `FaultProxy`
(tests/support/fault_proxy.py), which does to any server what a network or a reverse proxy does: refuse
connections, answer a status or a page in the server's place. What only the server can do (take
the job and die on it, never answer, run out of memory, return no video) each fake or real app does
itself.

Adding a backend is one class here and one entry in HARNESSES.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from i2vd.config.comfyui_workflow import load_workflow
from i2vd.render.backends.base import Backend, VideoRequest
from i2vd.render.backends.builtin import BuiltinBackend
from i2vd.render.backends.comfyui import ComfyUIBackend
from i2vd.render.backends.gradio import GradioBackend, discover_app
from i2vd.render.backends.predict import PredictBackend
from tests.support.comfyui_replay import ReplayedComfyUI
from tests.support.fakes import OOM_MESSAGE, FakePredictServer, wait_for
from tests.support.fault_proxy import FaultProxy
from tests.support.gradio_apps import FakeGradio3
from tests.support.gradio_replay import ReplayedGradio

FIELDS = {
    "image_name": "shore.png",
    "prompt": "waves, camera panning left",
    "resolution": "256p",
    "frames": 8,
    "fps": 8,
    "steps": 10,
    "guidance": 5.0,
}
NOT_A_VIDEO_REPLY = b"<html><body><h1>It works!</h1></body></html>"
NO_NETWORK = "the builtin engine runs in this process: no connection, no server to fail"
NO_IMAGE_CHECK = (
    "the server's answer to an unreadable image is its own error; i2vd checks every image before it is sent (images.py)"
)


class Harness:
    name = ""
    oom_words = "CUDA out of memory"  # what the server says when out_of_memory() arranged it

    def __init__(self, image: bytes, video: bytes, apps: Any) -> None:
        self.image, self.video, self.apps = image, video, apps  # apps: the session's real Gradio apps, or None
        self._backends: list[Backend] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Bring the server up."""

    def close(self) -> None:
        for thread in self._threads:
            thread.join()
        for backend in self._backends:
            backend.close()

    def backend(self, timeout_seconds: float = 20) -> Backend:
        backend = self._make(timeout_seconds)
        self._backends.append(backend)
        return backend

    def _make(self, timeout_seconds: float) -> Backend:
        raise NotImplementedError

    def request(self, reply_dir: Path | None, **changes: Any) -> VideoRequest:
        return VideoRequest(**{"image": self.image, **FIELDS, "reply_dir": reply_dir, **changes})

    def in_background(self, work) -> None:
        thread = threading.Thread(target=work, name=f"contract:{self.name}")
        self._threads.append(thread)
        thread.start()

    def user_agents(self) -> list[str]:
        """The User-Agent of every request the server was sent."""
        pytest.skip(NO_NETWORK)

    # -- the failures (each returns the request's changes) -------------------------------------------
    def refuse(self) -> dict:
        pytest.skip(NO_NETWORK)

    def restore(self) -> None:
        pytest.skip(NO_NETWORK)

    def drop_mid_job(self) -> dict:
        pytest.skip(NO_NETWORK)

    def never_answer(self) -> dict:
        pytest.skip(NO_NETWORK)

    def answer_status(self, status: int) -> dict:
        pytest.skip(NO_NETWORK)

    def out_of_memory(self) -> dict:
        pytest.skip("the builtin engine runs on the CPU: it has no GPU memory to run out of")

    def not_a_video_reply(self) -> dict:
        pytest.skip(NO_NETWORK)

    def empty_video(self) -> dict:
        pytest.skip("the builtin engine makes its video itself: there is no reply to be empty")

    def bad_image(self) -> dict:
        pytest.skip(NO_IMAGE_CHECK)


class NetworkHarness(Harness):
    """A server behind a FaultProxy: refused, a status or a page in the server's place come from the proxy."""

    image_path = ""  # the request that carries the image: where a status or a page is answered instead
    server: Any

    def start(self) -> None:
        self.server.start()
        self.proxy = FaultProxy(self.server.url).start()

    def close(self) -> None:
        super().close()
        self.proxy.stop()
        self.server.stop()

    def user_agents(self) -> list[str]:
        return list(self.proxy.agents)

    def refuse(self) -> dict:
        self.proxy.refuse()
        return {}

    def restore(self) -> None:
        self.proxy.listen()

    def answer_status(self, status: int) -> dict:
        self.proxy.answer(self.image_path, status, f"<html><body>{status}</body></html>".encode())
        return {}

    def not_a_video_reply(self) -> dict:
        self.proxy.answer(self.image_path, 200, NOT_A_VIDEO_REPLY)
        return {}


class PredictHarness(NetworkHarness):
    name = "predict"
    image_path = "/api/predict/"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.server = FakePredictServer(video=self.video)

    def _make(self, timeout_seconds: float) -> Backend:
        return PredictBackend(self.proxy.url, timeout_seconds=timeout_seconds, connect_timeout_seconds=2)

    def drop_mid_job(self) -> dict:
        self.server.drop_mid_reply()
        return {}

    def never_answer(self) -> dict:
        self.server.hang()
        return {}

    def out_of_memory(self) -> dict:
        self.server.reply_oom()
        return {}

    def empty_video(self) -> dict:
        self.server.reply_garbage(data=b"")
        return {}


class Gradio3Harness(NetworkHarness):
    """FakeGradio3: a Gradio 3.50.2 app of the 7-input shape, its replies recorded from the real one; without a
    queue (it never called .queue()), so jobs are direct POSTs."""

    name = "gradio-3.50-http"
    image_path = "/run/predict"
    api_open = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.server = FakeGradio3(video=self.video, api_open=self.api_open, queue=not self.api_open)

    def _make(self, timeout_seconds: float) -> Backend:
        return GradioBackend(self.proxy.url, timeout_seconds=timeout_seconds, connect_timeout_seconds=2)

    def drop_mid_job(self) -> dict:
        self.server.reply = "drop"
        return {}

    def never_answer(self) -> dict:
        self.server.reply = "hang"
        return {}

    def out_of_memory(self) -> dict:
        self.server.reply = ("error", OOM_MESSAGE)
        return {}

    def empty_video(self) -> dict:
        self.server.reply = "none"  # the recorded reply of the real app whose function returned None
        return {}


class Gradio3QueueHarness(Gradio3Harness):
    """The same app with api_open=False: jobs go through its websocket queue."""

    name = "gradio-3.50-websocket"
    image_path = "/queue/join"
    api_open = False

    def not_a_video_reply(self) -> dict:
        pytest.skip("the websocket queue carries JSON messages: there is no page a server could send instead")


class ReplayedVGenHarness(NetworkHarness):
    """The public VGen I2VGen-XL app on Gradio 3.39, replayed from its recording (tests/support/gradio_replay.py)."""

    name = "gradio-3.39-vgen-replay"
    image_path = "/queue/join"
    RECORDED_ONLY = "a replay says only what the real app said when it was recorded: a video"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.server = ReplayedGradio("vgen-3.39", video=self.video)

    def _make(self, timeout_seconds: float) -> Backend:
        return GradioBackend(self.proxy.url, timeout_seconds=timeout_seconds, connect_timeout_seconds=2)

    def drop_mid_job(self) -> dict:
        pytest.skip(self.RECORDED_ONLY)

    def never_answer(self) -> dict:
        pytest.skip(self.RECORDED_ONLY)

    def out_of_memory(self) -> dict:
        pytest.skip(self.RECORDED_ONLY)

    def empty_video(self) -> dict:
        pytest.skip(self.RECORDED_ONLY)

    def not_a_video_reply(self) -> dict:
        pytest.skip("the websocket queue carries JSON messages: there is no page a server could send instead")


class _RunningApp:
    """The session's real Gradio app (fixture `apps`), which a harness must not stop."""

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Gradio6Harness(NetworkHarness):
    """The real 7-input Gradio app of tests/support/gradio_apps.py, in this venv's Gradio (5.x/6.x), queue transport."""

    name = "gradio-real-app"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        assert self.apps is not None, "the fixture real_gradio_apps did not start the apps"
        self.server = _RunningApp(self.apps.predict_url)
        self.video = self.apps.video
        with requests.Session() as session:
            self.image_path = discover_app(session, self.apps.predict_url, 2, 10).api_prefix + "/upload"

    def _make(self, timeout_seconds: float) -> Backend:
        return GradioBackend(
            self.proxy.url, timeout_seconds=timeout_seconds, connect_timeout_seconds=2, transport="queue"
        )

    def drop_mid_job(self) -> dict:
        """The connections are cut once the app runs the job and i2vd follows it, as when the app's process dies."""
        seen, requests_seen = len(self.apps.calls.entries), len(self.proxy.paths)
        stream = "GET " + self.image_path.removesuffix("/upload") + "/queue/data"

        def cut_when_running() -> None:
            wait_for(
                lambda: (
                    any(entry.get("prompt") == "!slow" for entry in self.apps.calls.entries[seen:])
                    and stream in self.proxy.paths[requests_seen:]
                ),
                timeout=20,
                message="the app never ran the job",
            )
            self.proxy.cut()

        self.in_background(cut_when_running)
        return {"prompt": "!slow"}

    def never_answer(self) -> dict:
        return {"prompt": "!slow"}  # runs (with progress) until cancelled

    def out_of_memory(self) -> dict:
        return {"prompt": f"!fail {OOM_MESSAGE}"}  # the app raises gr.Error with the text

    def empty_video(self) -> dict:
        return {"prompt": "!none"}  # the app's function returns None


class ComfyUIHarness(NetworkHarness):
    """Replays of a real ComfyUI 0.3.64 running the model-free workflow (tests/support/comfyui_replay.py)."""

    name = "comfyui-replay"
    image_path = "/upload/image"
    oom_words = "can't allocate memory"  # recorded on the CPU: PyTorch's allocator, not CUDA
    WORKFLOW = Path(__file__).parents[2] / "examples" / "workflows" / "comfyui-model-free.json"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.server = ReplayedComfyUI("free")
        self.video = self.server.video

    def _make(self, timeout_seconds: float) -> Backend:
        return ComfyUIBackend(
            self.proxy.url, load_workflow(self.WORKFLOW), timeout_seconds=timeout_seconds, connect_timeout_seconds=2
        )

    def request(self, reply_dir: Path | None, **changes: Any) -> VideoRequest:
        return super().request(reply_dir, **{"job_id": 7, "key": "k" * 64, **changes})

    def _replay(self, session: str) -> None:
        """Another recorded session behind the same proxy (the backend's URL stays)."""
        self.server.stop()
        self.server = ReplayedComfyUI(session).start()
        self.proxy.upstream = ("127.0.0.1", int(self.server.url.rsplit(":", 1)[1]))

    def drop_mid_job(self) -> dict:
        """ComfyUI closes the websocket while the prompt runs (the replay holds it before its last message)."""
        self.server.hold_before = "executed"

        def drop_when_running() -> None:
            wait_for(lambda: self.server.running(), timeout=20, message="ComfyUI never ran the prompt")
            self.server.drop_sockets()

        self.in_background(drop_when_running)
        return {}

    def never_answer(self) -> dict:
        self.server.hold_before = "executed"  # it runs until SaveVideo, then never finishes
        return {}

    def out_of_memory(self) -> dict:
        self._replay("oom")
        return {"resolution": "1024p", "frames": 4096}  # what the recording asked for

    def empty_video(self) -> dict:
        self.server.video = b""  # GET /view sends nothing
        return {}

    def bad_image(self) -> dict:
        return {"image": b"GIF89a this is not an image", "image_name": "broken.gif"}


class BuiltinHarness(Harness):
    name = "builtin"

    def _make(self, timeout_seconds: float) -> Backend:
        return BuiltinBackend()

    def bad_image(self) -> dict:
        return {"image": b"GIF89a this is not an image", "image_name": "broken.gif"}


HARNESSES = [
    PredictHarness,
    Gradio3Harness,
    Gradio3QueueHarness,
    ReplayedVGenHarness,
    Gradio6Harness,
    ComfyUIHarness,
    BuiltinHarness,
]
