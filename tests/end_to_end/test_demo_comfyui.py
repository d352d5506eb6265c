"""`i2vd demo --comfyui URL`: the real daemon, the model-free workflow, against the replayed ComfyUI 0.3.64."""

from __future__ import annotations

import json
from pathlib import Path

from i2vd.cli.commands import main
from i2vd.cli.demo import FOLDERS, MODEL_FREE_WORKFLOW
from tests.end_to_end.harness import REPO, videos
from tests.support.comfyui_replay import ReplayedComfyUI
from tests.support.gradio_apps import free_port


def test_the_demo_workflow_is_the_shipped_example():
    shipped = json.loads((REPO / "examples" / "workflows" / "comfyui-model-free.json").read_text())
    assert shipped == MODEL_FREE_WORKFLOW


def test_demo_on_comfyui_makes_every_video_there(tmp_path, capsys):
    with ReplayedComfyUI("free") as comfy:
        assert main(["demo", "--comfyui", comfy.url, "--dir", str(tmp_path), "--images", "1"]) == 0
        assert comfy.rejections == [] and len(comfy.prompts) == len(FOLDERS)
    out = capsys.readouterr().out
    assert "ComfyUI 0.3.64 at" in out and f"{len(FOLDERS)} of {len(FOLDERS)} videos" in out
    assert len(videos(tmp_path / "out")) == len(FOLDERS)
    assert list(Path(tmp_path / "state" / "comfyui").iterdir()) == []


def test_demo_says_when_no_comfyui_answers(tmp_path, capsys):
    assert main(["demo", "--comfyui", f"http://127.0.0.1:{free_port()}", "--dir", str(tmp_path)]) == 1
    assert "no ComfyUI answers at" in capsys.readouterr().out
