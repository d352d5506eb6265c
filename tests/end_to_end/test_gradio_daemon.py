"""`server.kind: gradio` through the real daemon: `i2vd run` as a subprocess, real Gradio 6 apps.

The apps (tests/support/gradio_apps.py) run in this pytest process, started by test_gradio_backend.py's
session fixture `apps`, imported here (pytest keeps one per module that holds it, so a run of
several such modules starts the apps once for each: a few seconds each). The daemon reaches
them over HTTP on 127.0.0.1 like any Gradio server, and their CallLog, readable here, is the
proof of what the daemon sent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from i2vd.render import mp4
from tests.end_to_end.harness import journal_counts, run_cli, videos, write_config
from tests.support.fakes import wait_for, write_image
from tests.support.gradio_apps import SVD_INPUTS, RunningApps

pytestmark = pytest.mark.filterwarnings("ignore:::gradio")  # Gradio's own pandas deprecations


OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB"


def gradio_server(url: str, **options) -> dict:
    return {"kind": "gradio", "url": url, "timeout_seconds": 30, "connect_timeout_seconds": 2, **options}


def drop_image(tmp_path: Path, name: str, color: tuple[int, int, int]) -> str:
    """A real image in the hot folder; returns its sha256, by which the app's CallLog knows it."""
    return hashlib.sha256(write_image(tmp_path / "in" / name, color=color)).hexdigest()


def calls_for(apps: RunningApps, image_sha256: str) -> list[dict]:
    return [entry for entry in apps.calls.entries if entry.get("image_sha256") == image_sha256]


def same_clip(video: Path, apps: RunningApps, tmp_path: Path) -> bool:
    """The app's clip, tagged by i2vd on the way (the comment changes the bytes, not the frames)."""
    original = tmp_path / "app-clip.mp4"
    original.write_bytes(apps.video)
    return mp4.probe(video) == mp4.probe(original)


def record_of(video: Path) -> dict:
    return json.loads(video.with_name(video.name + ".json").read_text(encoding="utf-8"))


def settled(state_dir: Path, **expected: int) -> bool:
    counts = journal_counts(state_dir)
    return (
        bool(counts)
        and counts.get("queued") == 0
        and counts.get("running") == 0
        and all(counts.get(state) == number for state, number in expected.items())
    )


def test_an_image_becomes_a_video_through_a_gradio_app_with_the_resolved_parameters(
    tmp_path, apps: RunningApps, daemon_factory
):
    profile = {
        "prompt": "A {{ subject }} scene, slow dolly in",
        "resolution": "768p",
        "frames": 24,
        "fps": 12,
        "steps": 60,
        "guidance": 7.5,
    }
    config = write_config(tmp_path, None, server=gradio_server(apps.predict_url), profiles={"default": profile})
    daemon = daemon_factory(config).start()
    image_sha = drop_image(tmp_path, "golden_retriever.jpg", color=(31, 41, 59))

    wait_for(lambda: settled(tmp_path / "state", done=1), timeout=30, message=f"one video; log:\n{daemon.log()}")

    [call] = calls_for(apps, image_sha)
    assert (
        call["app"],
        call["prompt"],
        call["resolution"],
        call["frames"],
        call["fps"],
        call["steps"],
        call["guidance"],
    ) == ("predict", "A golden retriever scene, slow dolly in", "768p", 24, 12, 60, 7.5)
    [video] = videos(tmp_path / "out")
    assert video.name == "golden_retriever.mp4"
    assert same_clip(video, apps, tmp_path)
    assert f"source_sha256={image_sha}" in mp4.read_comment(video)
    record = record_of(video)
    assert record["source"]["sha256"] == image_sha
    assert record["parameters"] == {
        "resolution": "768p",
        "frames": 24,
        "fps": 12,
        "steps": 60,
        "guidance": 7.5,
        "seed": None,
    }
    assert {key: record["server"][key] for key in ("kind", "url", "version", "api_name")} == {
        "kind": "gradio",
        "url": apps.predict_url,
        "version": apps.version,
        "api_name": "/generate",
    }

    def status_after_the_job() -> dict | None:  # the daemon publishes its workers' state every second
        status = json.loads(run_cli(config, "status", "--json").stdout)
        return status if [server.get("jobs_done") for server in status["servers"]] == [1] else None

    status = wait_for(status_after_the_job, timeout=15, message="status shows the job done")
    assert status["daemon"]["running"] is True
    assert status["counts"]["done"] == 1
    [server] = status["servers"]
    assert (server["kind"], server["url"], server["version"], server["api_name"]) == (
        "gradio",
        apps.predict_url,
        apps.version,
        "/generate",
    )
    assert server["down_since"] is None and server["error"] is None
    text = run_cli(config, "status").stdout
    assert f"(gradio {apps.predict_url}) — up; idle; 1 done" in text
    assert daemon.stop() == 0


def test_the_svd_app_with_a_configured_inputs_mapping_and_a_constant(tmp_path, apps: RunningApps, daemon_factory):
    config = write_config(
        tmp_path,
        None,
        server=gradio_server(apps.svd_url, inputs=SVD_INPUTS),
        profiles={"default": {"prompt": "unused by this app", "fps": 12, "seed": 7}},
    )
    daemon = daemon_factory(config).start()
    image_sha = drop_image(tmp_path, "rocket.png", color=(200, 10, 90))

    wait_for(lambda: settled(tmp_path / "state", done=1), timeout=30, message=f"one video; log:\n{daemon.log()}")

    [call] = calls_for(apps, image_sha)
    assert call["app"] == "svd"
    assert (call["seed"], call["motion_bucket_id"], call["fps_id"]) == (7, 127, 12)
    assert call["randomize_seed"] is True  # not mapped: the app's own default
    [video] = videos(tmp_path / "out")
    assert video.name == "rocket.mp4" and same_clip(video, apps, tmp_path)
    record = record_of(video)
    assert record["server"]["api_name"] == "/sample"
    assert (record["parameters"]["fps"], record["parameters"]["seed"]) == (12, 7)
    assert daemon.stop() == 0


def test_out_of_memory_in_the_app_with_oom_fail_fails_that_job_and_the_others_are_done(
    tmp_path, apps: RunningApps, daemon_factory
):
    config = write_config(tmp_path, None, server=gradio_server(apps.predict_url, oom="fail"))
    (tmp_path / "in" / "bad.jpg.yaml").write_text(json.dumps({"prompt": f"!fail {OOM_TEXT}"}), encoding="utf-8")
    bad_sha = drop_image(tmp_path, "bad.jpg", color=(90, 90, 10))
    good_shas = [drop_image(tmp_path, f"good_{index}.jpg", color=(10, 60 * index, 200)) for index in range(2)]
    daemon = daemon_factory(config).start()

    wait_for(
        lambda: settled(tmp_path / "state", done=2, failed=1),
        timeout=30,
        message=f"2 done, 1 failed; log:\n{daemon.log()}",
    )

    assert len(calls_for(apps, bad_sha)) == 1  # failed at once: not retried
    assert all(len(calls_for(apps, sha)) == 1 for sha in good_shas)
    [failed] = json.loads(run_cli(config, "jobs", "--state", "failed", "--json").stdout)
    assert failed["rel_path"] == "bad.jpg"
    assert "out of GPU memory" in failed["last_error"] and OOM_TEXT in failed["last_error"]
    assert failed["attempts"] == 1
    assert OOM_TEXT in run_cli(config, "status").stdout
    assert daemon.stop() == 0
    assert [video.name for video in videos(tmp_path / "out")] == ["good_0.mp4", "good_1.mp4"]


def test_the_official_i2vgen_xl_app_on_gradio_339_with_no_mapping_config(tmp_path, daemon_factory):
    """Mirrors VGen's gradio_app.py on its pinned Gradio 3.39.0 (replayed): api_open=False, no api_name,
    [image, Textbox '文本描述']. Nothing but the URL is configured: the daemon's job goes through the
    websocket queue with the image and the resolved prompt in their slots."""
    from tests.support.fakes import make_test_mp4
    from tests.support.gradio_replay import ReplayedGradio

    clip = make_test_mp4(tmp_path / "clip.mp4", frames=4)
    with ReplayedGradio("vgen-3.39", video=clip) as app:
        config = write_config(
            tmp_path,
            None,
            server=gradio_server(app.url),
            profiles={"default": {"prompt": "A {{ subject }} scene, slow dolly in"}},
        )
        daemon = daemon_factory(config).start()
        image_sha = drop_image(tmp_path, "red_fox.jpg", color=(190, 70, 20))

        wait_for(lambda: settled(tmp_path / "state", done=1), timeout=30, message=f"one video; log:\n{daemon.log()}")

        assert app.rejections == []
        [call] = app.calls
        assert (call.via, call.fn_index, hashlib.sha256(call.image).hexdigest()) == ("websocket", 1, image_sha)
        assert call.values == ["A red fox scene, slow dolly in"]
        [video] = videos(tmp_path / "out")
        assert video.name == "red_fox.mp4"
        record = record_of(video)
        assert {key: record["server"][key] for key in ("kind", "version", "api_name")} == {
            "kind": "gradio",
            "version": "3.39.0",
            "api_name": "fn_index 1",
        }
        assert daemon.stop() == 0
