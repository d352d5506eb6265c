"""The daemon on ComfyUI, killed mid-job (kill -9) and started again: the prompt is followed, never sent twice."""

from __future__ import annotations

import shutil

from tests.end_to_end.harness import REPO, journal_counts, videos, write_config
from tests.support.comfyui_replay import ReplayedComfyUI
from tests.support.fakes import wait_for, write_image


def test_a_daemon_killed_mid_prompt_takes_the_same_prompt_up_after_its_restart(tmp_path, daemon_factory):
    shutil.copy(REPO / "examples" / "workflows" / "comfyui-model-free.json", tmp_path / "still.json")
    with ReplayedComfyUI("free") as comfy:
        comfy.hold_before = "executed"  # ComfyUI works on the prompt; it ends only after the kill
        server = {
            "kind": "comfyui",
            "url": comfy.url,
            "workflow": str(tmp_path / "still.json"),
            "timeout_seconds": 30,
            "connect_timeout_seconds": 2,
        }
        config = write_config(tmp_path, None, server=server)
        write_image(tmp_path / "in" / "shore.png", size=(320, 240))
        first = daemon_factory(config).start()
        wait_for(lambda: comfy.running(), timeout=30, message=f"the prompt reached ComfyUI; log:\n{first.log()}")
        (prompt_id,) = comfy.running()
        first.kill()

        second = daemon_factory(config).start()
        wait_for(
            lambda: f"prompt {prompt_id} of this job is still on" in second.log(),
            timeout=30,
            message=f"the restarted daemon follows the prompt; log:\n{second.log()}",
        )
        comfy.release()
        wait_for(
            lambda: journal_counts(tmp_path / "state").get("done") == 1,
            timeout=30,
            message=f"done after the restart; log:\n{second.log()}",
        )
        assert second.stop() == 0
        assert [sent["prompt_id"] for sent in comfy.prompts] == [prompt_id]  # sent once, by the first daemon
    assert [video.name for video in videos(tmp_path / "out")] == ["shore.mp4"]
    assert list((tmp_path / "state" / "comfyui").iterdir()) == []
