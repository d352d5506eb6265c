"""GradioBackend and `i2vd probe` against replays of real public I2V apps (tests/support/gradio_replay.py).

Each replay serves what the real app answered, recorded with its own Gradio (the recordings and
how they were made: tests/fixtures/gradio/README.md):
- vgen-3.39: ali-vilab/VGen's gradio_app.py (I2VGen-XL) on its pinned Gradio 3.39.0: api_open=False
  (a direct call gets 401 "Not authorized to skip the queue"), no api_name, inputs [image, a Textbox
  labelled '文本描述'];
- vgen-3.20 / vgen-3.50: the same app on Gradio 3.20.0 (401 too, no /info) and 3.50.2 (404);
- dynamicrafter-4.36: Doubiiu/DynamiCrafter's gradio_app.py on Gradio 4.36.1 (upload, queue, SSE).
Every test uses no mapping config: i2vd must find the image and the prompt slots by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from i2vd.cli.commands import main
from i2vd.render.backends.base import VideoRequest
from i2vd.render.backends.gradio import GradioBackend
from i2vd.render.backends.gradio_probe import probe
from tests.support.fakes import make_test_mp4, write_image
from tests.support.gradio_replay import ReplayedGradio

PROMPT = "A red fox running through fresh snow, slow pan"
VGEN = {"vgen-3.20": ("3.20.0", 401), "vgen-3.39": ("3.39.0", 401), "vgen-3.50": ("3.50.2", 404)}


@pytest.fixture
def mp4(tmp_path: Path) -> bytes:
    return make_test_mp4(tmp_path / "clip.mp4", frames=4)


@pytest.fixture
def png(tmp_path: Path) -> bytes:
    return write_image(tmp_path / "fox.png", color=(210, 90, 30))


def generate(url: str, image: bytes, **options) -> bytes:
    backend = GradioBackend(url, timeout_seconds=20, connect_timeout_seconds=2, **options)
    try:
        return backend.generate(
            VideoRequest(
                image=image,
                image_name="fox.png",
                prompt=PROMPT,
                resolution="512p",
                frames=16,
                fps=8,
                steps=30,
                guidance=7.0,
            )
        ).data
    finally:
        backend.close()


@pytest.mark.parametrize("name", sorted(VGEN))
def test_vgen_i2vgen_xl_app_with_zero_config_gets_a_video_through_the_websocket_queue(name, png, mp4):
    """Mirrors VGen's gradio_app.py on real Gradio 3.20.0, 3.39.0 (its pin) and 3.50.2."""
    version, refusal = VGEN[name]
    with ReplayedGradio(name, video=mp4) as app:
        assert app.version == version
        assert generate(app.url, png) == mp4
        assert app.rejections == []
        (call,) = app.calls
        assert (call.via, call.fn_index) == ("websocket", 1)  # fn 0 is the upload button
        assert call.image == png and call.values == [PROMPT]  # image first, prompt second
        # The app has a queue (enable_queue): like Gradio's own client, i2vd joins it and never tries a direct
        # call, which the app refuses (`refusal`) or, with api_open=True, would let skip its queue.
        assert [line for line in app.requests if line.startswith("POST")] == []
        assert "WEBSOCKET /queue/join" in app.requests and "GET /file= 200" in app.requests


def test_vgen_339_every_job_goes_straight_to_the_queue(png, mp4):
    """Mirrors VGen's gradio_app.py on Gradio 3.39.0."""
    with ReplayedGradio("vgen-3.39", video=mp4) as app:
        backend = GradioBackend(app.url, timeout_seconds=20, connect_timeout_seconds=2)
        try:
            for _ in range(2):
                reply = backend.generate(
                    VideoRequest(
                        image=png,
                        image_name="fox.png",
                        prompt=PROMPT,
                        resolution="512p",
                        frames=16,
                        fps=8,
                        steps=30,
                        guidance=7.0,
                    )
                )
                assert reply.data == mp4
        finally:
            backend.close()
        assert [line for line in app.requests if line.startswith("POST")] == []
        assert [call.values for call in app.calls] == [[PROMPT], [PROMPT]] and app.rejections == []


def test_probe_of_the_vgen_339_app_maps_image_and_prompt_by_type(png, mp4):
    """Mirrors VGen's gradio_app.py on Gradio 3.39.0: labels in Chinese, no api_name."""
    with ReplayedGradio("vgen-3.39", video=mp4) as app:
        report = probe(app.url, timeout_seconds=10)
    assert report.usable, report.render()
    assert report.endpoint == "fn_index 1"
    bindings = [(b.parameter.label, b.field) for b in report.mapping.bindings]
    assert bindings == [("图片输入", "image"), ("文本描述", "prompt")]
    assert "websocket queue" in report.transport


def test_probe_cli_of_the_vgen_320_app_shows_the_prompt_slot(capsys, mp4):
    """Mirrors VGen's gradio_app.py on Gradio 3.20.0 (no /info; its version string ends in a newline)."""
    with ReplayedGradio("vgen-3.20", video=mp4) as app:
        assert main(["probe", app.url]) == 0
    out = capsys.readouterr().out
    assert "Gradio 3.20.0 app (protocol ws)" in out
    assert "<- prompt" in out and '<- default ""' not in out


def test_dynamicrafter_436_app_with_zero_config_gets_every_slot_right(png, mp4):
    """Mirrors DynamiCrafter's gradio_app.py on Gradio 4.36.1.

    /get_image(image, prompt, steps, cfg_scale, eta, fs, seed), named by /info."""
    with ReplayedGradio("dynamicrafter-4.36", video=mp4) as app:
        assert generate(app.url, png) == mp4
        assert app.rejections == []
        (call,) = app.calls
        assert (call.via, call.fn_index, call.image) == ("queue", 2, png)
        # prompt, steps, cfg_scale ← guidance, eta's default, fs ← fps, seed's default
        assert call.values == [PROMPT, 30, 7.0, 1.0, 8, 123]
        assert [line.split(" ")[:2] for line in app.requests] == [
            ["GET", "/config"],
            ["GET", "/info"],
            ["POST", "/upload"],
            ["POST", "/queue/join"],
            ["GET", "/queue/data"],
            ["GET", "/file="],
        ]
