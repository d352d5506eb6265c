"""ComfyUIBackend against replays of a real ComfyUI 0.3.64 on the CPU (tests/support/comfyui_replay.py).

Each replay serves what that ComfyUI answered over HTTP and its websocket, recorded with i2vd's
own backend and the model-free workflow (LoadImage → ImageScale → RepeatImageBatch → CreateVideo →
SaveVideo) or a variant of it (tests/fixtures/comfyui/README.md says which and how).
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from i2vd.config.comfyui_workflow import load_workflow
from i2vd.render.backends.base import (
    BackendError,
    BadInput,
    LoginRequired,
    ServerOutOfMemory,
    ServerUnavailable,
    VideoRequest,
)
from i2vd.render.backends.comfyui import ComfyUIBackend, WorkflowRejected
from i2vd.render.backends.http import CallTimedOut, ConnectionDropped
from tests.support.comfyui_replay import FIXTURES, VERSION, ReplayedComfyUI
from tests.support.fakes import write_image
from tests.support.gradio_apps import free_port

ROOT = Path(__file__).parents[2]
MODEL_FREE = ROOT / "examples" / "workflows" / "comfyui-model-free.json"
VARIANTS = FIXTURES / VERSION / "workflows"
KEY = "a" * 64


@pytest.fixture
def png(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "fox.png", size=(320, 240), color=(210, 90, 30))


def request(image: bytes, **changes) -> VideoRequest:
    fields = dict(
        image=image,
        image_name="fox.png",
        prompt="a red fox",
        resolution="256p",
        frames=8,
        fps=8,
        steps=20,
        guidance=5.0,
        seed=None,
        job_id=7,
        key=KEY,
    )
    return VideoRequest(**(fields | changes))


def backend(url: str, workflow: Path = MODEL_FREE, **options) -> ComfyUIBackend:
    options = {"timeout_seconds": 20, "connect_timeout_seconds": 2} | options
    return ComfyUIBackend(url, load_workflow(workflow), **options)


def test_the_replays_mirror_comfyui_0_3_64():
    with ReplayedComfyUI("free") as comfy:
        assert comfy.version == VERSION == "0.3.64"
        made = backend(comfy.url)
        assert made.describe() | {"workflow": ""} == {
            "kind": "comfyui",
            "url": comfy.url,
            "version": "0.3.64",
            "workflow": "",
        }
        made.close()


def test_a_job_makes_the_video_comfyui_made(png, tmp_path):
    with ReplayedComfyUI("free") as comfy:
        made = backend(comfy.url, free_after_job=True, state_dir=tmp_path)
        reply = made.generate(request(png))
        made.close()
        assert reply.data == comfy.video and reply.data[4:8] == b"ftyp"
        assert comfy.rejections == []
        (sent,) = comfy.prompts
        nodes = sent["prompt"]
        assert nodes["1"]["inputs"]["image"] == f"i2vd/{KEY}.png"
        assert (nodes["2"]["inputs"]["width"], nodes["2"]["inputs"]["height"]) == (
            336,
            256,
        )  # 256p, 4:3, multiples of 16
        assert nodes["3"]["inputs"]["amount"] == 8
        assert nodes["4"]["inputs"]["fps"] == 8.0 and isinstance(nodes["4"]["inputs"]["fps"], float)
        assert nodes["5"]["inputs"]["filename_prefix"] == "i2vd/7"
        assert uuid.UUID(sent["prompt_id"]) and sent["client_id"]
        assert comfy.requests[:3] == ["POST /upload/image 200", "WEBSOCKET /ws", "POST /prompt 200"]
        assert comfy.posts == [("/free", {"unload_models": False, "free_memory": True})]
        assert list((tmp_path / "comfyui").iterdir()) == []  # the prompt id lives only while the prompt does


def test_progress_messages_reach_status_and_preview_frames_are_skipped(png):
    messages: list[str] = []
    with ReplayedComfyUI("progress") as comfy:
        made = backend(comfy.url, VARIANTS / "progress.json", on_progress=messages.append)
        assert made.generate(request(png)).data == comfy.video
        made.close()
        assert comfy.posts == []  # free_after_job is off
    assert messages[0] == "step 0/8 (node 6)" and messages[-1] == "step 7/8 (node 6)" and len(messages) == 8


def test_a_workflow_comfyui_refuses_pauses_the_queue_with_the_node_and_its_message(png, tmp_path):
    with ReplayedComfyUI("rejected") as comfy:
        made = backend(comfy.url, VARIANTS / "rejected.json", state_dir=tmp_path)
        with pytest.raises(WorkflowRejected) as caught:
            made.generate(request(png))
        made.close()
    assert isinstance(caught.value, ServerUnavailable)  # the worker's "server down": no attempt, queue paused
    assert "node 9 (CheckpointLoaderSimple)" in str(caught.value)
    assert "ckpt_name: 'wan2.1_i2v_480p_14B_fp16.safetensors' not in []" in str(caught.value)
    assert list((tmp_path / "comfyui").iterdir()) == []  # after the fix, the next try sends it afresh


def test_a_model_missing_at_run_time_is_the_operators_problem_too(png):
    with ReplayedComfyUI("missing_model") as comfy:
        made = backend(comfy.url, VARIANTS / "missing_model.json")
        with pytest.raises(WorkflowRejected, match=r"node 7 \(UpscaleModelLoader\).*4x-UltraSharp.pth' not found"):
            made.generate(request(png))
        made.close()


def test_an_execution_error_is_the_jobs_failure(png):
    with ReplayedComfyUI("error") as comfy:
        made = backend(comfy.url, VARIANTS / "odd.json")
        with pytest.raises(BackendError, match=r"node 5 \(SaveVideo\) failed: av.error.ExternalError") as caught:
            made.generate(request(png))
        made.close()
    assert not isinstance(caught.value, (ServerUnavailable, ServerOutOfMemory))


def test_running_out_of_memory_is_server_out_of_memory(png):
    with ReplayedComfyUI("oom") as comfy:
        made = backend(comfy.url)
        with pytest.raises(ServerOutOfMemory, match="RepeatImageBatch.*can't allocate memory"):
            made.generate(request(png, resolution="1024p", frames=4096))
        made.close()


def test_past_the_timeout_the_prompt_is_interrupted_and_dropped_from_the_queue(png, tmp_path):
    with ReplayedComfyUI("progress") as comfy:
        comfy.hold_before = "executed"  # it runs until SaveVideo, then never finishes
        made = backend(comfy.url, VARIANTS / "progress.json", timeout_seconds=1.5, state_dir=tmp_path)
        with pytest.raises(CallTimedOut, match=r"no result within 1.5 s .*; prompt .* interrupted on") as caught:
            made.generate(request(png))
        made.close()
        (sent,) = comfy.prompts
        assert comfy.posts == [
            ("/interrupt", {"prompt_id": sent["prompt_id"]}),
            ("/queue", {"delete": [sent["prompt_id"]]}),
        ]
        assert comfy.running() == []
    assert not isinstance(caught.value, ServerUnavailable)
    assert list((tmp_path / "comfyui").iterdir()) == []


def _cut_off_mid_prompt(comfy: ReplayedComfyUI, png: bytes, state_dir: Path) -> str:
    """A first backend sends the prompt and loses the server mid-wait (what a daemon restart leaves)."""
    comfy.hold_before = "executed"
    first = backend(comfy.url, state_dir=state_dir)
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(failure, first.generate, request(png)))
    thread.start()
    try:
        _wait_for(lambda: comfy.running())
    finally:
        comfy.drop_sockets()
        thread.join(20)
        first.close()
    assert isinstance(failure[0], ConnectionDropped)  # made, then lost: one attempt; the record stays
    (record,) = [json.loads(path.read_text()) for path in (state_dir / "comfyui").iterdir()]
    return record["prompt_id"]


def test_after_a_restart_a_running_prompt_is_followed_again_never_sent_twice(png, tmp_path):
    with ReplayedComfyUI("free") as comfy:
        prompt_id = _cut_off_mid_prompt(comfy, png, tmp_path)
        assert comfy.running() == [prompt_id]
        threading.Timer(0.5, comfy.release).start()
        second = backend(comfy.url, state_dir=tmp_path)
        assert second.generate(request(png)).data == comfy.video
        second.close()
        assert [sent["prompt_id"] for sent in comfy.prompts] == [prompt_id]


def test_after_a_restart_a_finished_prompt_gives_its_video(png, tmp_path):
    with ReplayedComfyUI("free") as comfy:
        prompt_id = _cut_off_mid_prompt(comfy, png, tmp_path)
        comfy.release()
        _wait_for(lambda: not comfy.running())
        second = backend(comfy.url, state_dir=tmp_path)
        assert second.generate(request(png)).data == comfy.video
        second.close()
        assert len(comfy.prompts) == 1 and f"GET /history/{prompt_id} 200" in comfy.requests
        assert "WEBSOCKET /ws" not in comfy.requests[comfy.requests.index(f"GET /history/{prompt_id} 200") :]


def test_after_a_restart_a_prompt_that_failed_meanwhile_is_the_jobs_failure_and_is_forgotten(png, tmp_path):
    with ReplayedComfyUI("error") as comfy:
        comfy.hold_before = "execution_error"
        first = backend(comfy.url, VARIANTS / "odd.json", state_dir=tmp_path)
        failure: list[BaseException] = []
        thread = threading.Thread(target=lambda: _catch(failure, first.generate, request(png)))
        thread.start()
        _wait_for(lambda: comfy.running())
        comfy.drop_sockets()
        thread.join(20)
        first.close()
        comfy.release()
        _wait_for(lambda: not comfy.running())
        second = backend(comfy.url, VARIANTS / "odd.json", state_dir=tmp_path)
        with pytest.raises(BackendError, match=r"SaveVideo") as caught:
            second.generate(request(png))
        second.close()
        assert not isinstance(caught.value, ServerUnavailable) and len(comfy.prompts) == 1
    assert list((tmp_path / "comfyui").iterdir()) == []  # the next attempt sends a new prompt


def test_a_prompt_recorded_but_never_received_is_sent_with_its_recorded_id(png, tmp_path):
    prompt_id = str(uuid.uuid4())  # written, then the daemon died before POST /prompt (or ComfyUI restarted)
    with ReplayedComfyUI("free") as comfy:
        (tmp_path / "comfyui").mkdir()
        (tmp_path / "comfyui" / f"{KEY}.json").write_text(
            json.dumps({"prompt_id": prompt_id, "client_id": uuid.uuid4().hex, "url": comfy.url, "job_id": 7})
        )
        made = backend(comfy.url, state_dir=tmp_path)
        assert made.generate(request(png)).data == comfy.video
        made.close()
        assert [sent["prompt_id"] for sent in comfy.prompts] == [prompt_id]


def test_a_comfyui_that_is_not_running_is_unavailable(png, tmp_path):
    made = backend(f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    with pytest.raises(ServerUnavailable, match="cannot reach"):
        made.generate(request(png))
    made.close()


def _catch(into: list, call, *args) -> None:
    try:
        call(*args)
    except BaseException as error:  # noqa: BLE001 - handed to the test
        into.append(error)


def _wait_for(condition, seconds: float = 10) -> None:
    event = threading.Event()
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        event.wait(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize(
    ("status", "kind"), [(502, ServerUnavailable), (401, LoginRequired), (500, BackendError), (413, BadInput)]
)
def test_what_a_proxy_in_front_of_comfyui_answers_keeps_its_class_and_status(png, status, kind):
    """A reverse proxy's gateway error or login page in ComfyUI's place (here at the upload)."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.serving import LoopbackServer as _Server

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        made = backend(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(kind) as caught:
            made.generate(request(png))
        made.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert type(caught.value) is kind and caught.value.status == status


def test_a_workflow_exported_again_is_used_from_the_next_job_and_a_broken_one_pauses_the_queue(png, tmp_path):
    workflow = tmp_path / "still.json"
    nodes = json.loads(MODEL_FREE.read_text())
    workflow.write_text(json.dumps(nodes))
    with ReplayedComfyUI("free") as comfy:
        made = ComfyUIBackend(comfy.url, workflow, timeout_seconds=20, connect_timeout_seconds=2)
        made.generate(request(png, key="first"))
        nodes["2"]["inputs"]["upscale_method"] = "bicubic"
        workflow.write_text(json.dumps(nodes, indent=1))  # exported again (the file changes)
        made.generate(request(png, key="second"))
        nodes["1"]["_meta"]["title"] = "Load Image"
        workflow.write_text(json.dumps(nodes, indent=2))
        with pytest.raises(WorkflowRejected, match="no node is titled I2VD:image"):
            made.generate(request(png, key="third"))
        made.close()
        methods = [sent["prompt"]["2"]["inputs"]["upscale_method"] for sent in comfy.prompts]
    assert methods == ["lanczos", "bicubic"]


def test_describe_asks_a_dead_server_once_until_a_job_runs(png):
    url = f"http://127.0.0.1:{free_port()}"
    made = backend(url)
    assert made.describe()["version"] == "unknown"
    with ReplayedComfyUI("free") as comfy:
        made.url = comfy.url  # the same backend, its server now up
        assert made.describe()["version"] == "unknown"  # not asked again: status stays quick
        made.generate(request(png))
        assert made.describe()["version"] == "0.3.64"
        assert comfy.requests.count("GET /system_stats 200") == 1
    made.close()
