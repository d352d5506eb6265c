"""`server.kind: comfyui` from the config file to the video on disk, against the replayed ComfyUI 0.3.64."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from i2vd.cli.commands import main
from i2vd.config.load import load_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.jobs.worker import build_workers
from i2vd.render import mp4
from i2vd.render.gpu import VramGate
from i2vd.store.journal import JobState, Journal
from tests.support.comfyui_replay import FIXTURES, VERSION, ReplayedComfyUI
from tests.support.fakes import write_image

ROOT = Path(__file__).parents[2]


def write_config(
    tmp_path: Path, url: str, workflow: Path, gpu: str = "enabled: false", profile: str = "frames: 8, fps: 8"
) -> Path:
    shutil.copy(workflow, tmp_path / "workflow.json")
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "i2vd.yaml"
    path.write_text(
        f"output_dir: out\nstate_dir: state\nwatch: [{{path: in, settle_seconds: 0}}]\n"
        f"server: {{kind: comfyui, url: '{url}', workflow: workflow.json, timeout_seconds: 20}}\n"
        f"gpu: {{{gpu}}}\nprofiles: {{default: {{resolution: 256p, {profile}}}}}\n",
        encoding="utf-8",
    )
    return path


def test_batch_makes_each_video_through_comfyui(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png", size=(320, 240), color=(10, 120, 200))
    write_image(photos / "b.jpg", size=(240, 320), color=(200, 120, 10))
    with ReplayedComfyUI("free") as comfy:
        config = write_config(tmp_path, comfy.url, ROOT / "examples" / "workflows" / "comfyui-model-free.json")
        assert main(["batch", str(photos), "-c", str(config)]) == 0, capsys.readouterr().err
        assert comfy.rejections == []
        sizes = sorted(
            (p["prompt"]["2"]["inputs"]["width"], p["prompt"]["2"]["inputs"]["height"]) for p in comfy.prompts
        )
    assert sizes == [(256, 336), (336, 256)]  # each image's own aspect ratio
    videos = sorted((tmp_path / "out").rglob("*.mp4"))
    assert [video.name for video in videos] == ["a.mp4", "b.mp4"]
    assert all(mp4.probe(video).frames == 8 for video in videos)


def test_a_wan_profile_of_81_frames_at_16_fps_reaches_comfyui(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.png", size=(320, 240), color=(10, 120, 200))
    with ReplayedComfyUI("free") as comfy:
        workflow = ROOT / "examples" / "workflows" / "comfyui-model-free.json"
        config = write_config(tmp_path, comfy.url, workflow, profile="frames: 81, fps: 16, steps: 4")
        assert main(["batch", str(photos), "-c", str(config)]) == 0, capsys.readouterr().err
        assert comfy.rejections == []
        (sent,) = comfy.prompts
    assert sent["prompt"]["3"]["inputs"]["amount"] == 81  # RepeatImageBatch: the workflow's frame count
    assert sent["prompt"]["4"]["inputs"]["fps"] == 16.0
    assert [video.name for video in (tmp_path / "out").rglob("*.mp4")] == ["a.mp4"]


def test_a_refused_workflow_pauses_the_queue_with_the_node_and_uses_no_attempt(tmp_path):
    with ReplayedComfyUI("rejected") as comfy:
        config = load_config(write_config(tmp_path, comfy.url, FIXTURES / VERSION / "workflows" / "rejected.json"))
        clock = ManualClock()
        journal = Journal(config.state_dir / "journal.sqlite3", clock)
        try:
            image = config.watch[0].path / "a.png"
            write_image(image, size=(320, 240))
            assert Intake(config, journal).consider(image, config.watch[0]).outcome is Outcome.QUEUED
            (worker,) = build_workers(config, journal, clock)
            assert worker.run_once(threading.Event())
            (job,) = journal.jobs()
            status = worker.status()
            worker.backend.close()
        finally:
            journal.close()
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert "node 9 (CheckpointLoaderSimple)" in status["error"] and "not in []" in status["error"]
    assert status["down_since"] is not None and status["kind"] == "comfyui"


def test_the_vram_gate_reads_comfyuis_system_stats(tmp_path):
    with ReplayedComfyUI("free") as comfy:
        config = load_config(
            write_config(
                tmp_path,
                comfy.url,
                ROOT / "examples" / "workflows" / "comfyui-model-free.json",
                gpu="enabled: true, source: comfyui, max_used_mb: 100000",
            )
        )
        gate = VramGate.from_config(config.servers[0].gpu, ManualClock(), server_url=config.server.url)
        reading = gate.reader()
        assert gate.check()
    device = comfy.exchange("GET", "/system_stats")["body"]["json"]["devices"][0]
    assert reading.total_mb == device["vram_total"] // 2**20
    assert reading.used_mb == (device["vram_total"] - device["vram_free"]) // 2**20


def test_a_job_queued_for_comfyui_fails_unsent_on_a_server_that_cannot_take_it(tmp_path):
    """81 frames journaled under a ComfyUI config, then the config names a /predict server: never sent."""
    with ReplayedComfyUI("free") as comfy:
        workflow = ROOT / "examples" / "workflows" / "comfyui-model-free.json"
        comfyui = load_config(write_config(tmp_path, comfy.url, workflow, profile="frames: 81, fps: 16"))
        journal = Journal(comfyui.state_dir / "journal.sqlite3", ManualClock())
        try:
            write_image(comfyui.watch[0].path / "a.png", size=(320, 240))
            assert Intake(comfyui, journal).consider(comfyui.watch[0].path / "a.png", comfyui.watch[0]).job
            text = (tmp_path / "i2vd.yaml").read_text(encoding="utf-8")
            predict = tmp_path / "i2vd.yaml"
            predict.write_text(
                text.replace("kind: comfyui", "kind: predict").replace("frames: 81, fps: 16", "frames: 16"),
                encoding="utf-8",
            )
            (worker,) = build_workers(load_config(predict), journal, ManualClock())
            assert worker.run_once(threading.Event())
            (job,) = journal.jobs()
            worker.backend.close()
        finally:
            journal.close()
        assert comfy.requests == []  # nothing was sent to any server
    assert job.state is JobState.FAILED and job.attempts == 0
    assert job.last_error == (
        f"this server cannot take the job's frames: 81 is above 32, the most the predict server at {comfy.url} "
        "takes (ComfyUI servers take up to 1024)"
    )
