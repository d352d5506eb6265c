"""`i2vd demo` (what `make demo` runs): the built-in engine makes real, playable MP4s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import imageio_ffmpeg

from i2vd.cli.demo import FOLDERS, PROFILES, draw_sample
from tests.end_to_end.harness import REPO, videos
from tests.support.fakes import wait_for


def test_demo_makes_playable_videos_of_the_requested_size_and_length(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "i2vd", "demo", "--dir", str(tmp_path), "--images", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(FOLDERS)} of {len(FOLDERS)} videos" in result.stdout
    made = videos(tmp_path / "out")
    assert [video.relative_to(tmp_path / "out").as_posix() for video in made] == [
        "beach/beach_1.mp4",
        "forest/forest_1.mp4",
        "mountain/mountain_1.mp4",
        "products/sku_products_1_rotate.mp4",
    ]
    for video in made:
        profile = {**PROFILES["default"], **PROFILES[FOLDERS[video.parent.name]]}
        reader = imageio_ffmpeg.read_frames(str(video))
        meta = next(reader)
        frames = sum(1 for _ in reader)
        width, height = meta["size"]
        assert frames == profile["frames"]
        assert height == int(profile["resolution"].removesuffix("p"))
        assert width % 2 == 0 and width > height  # the sample images are landscape
        assert round(meta["fps"]) == profile["fps"]
        assert meta["codec"].startswith("h264")


def test_the_demos_next_steps_work_for_a_new_user(tmp_path, daemon_factory):
    """What the demo tells a newcomer to type next, typed: its config runs, a dropped photo becomes a video."""
    result = subprocess.run(
        [sys.executable, "-m", "i2vd", "demo", "--dir", "demo-here", "--images", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # paths are shown as typed from where the user stands (make demo runs in the checkout)
    assert "i2vd run -c demo-here/config.yaml" in result.stdout
    assert "cp photo.jpg demo-here/hot/beach/" in result.stdout
    workdir = tmp_path / "demo-here"
    daemon = daemon_factory(workdir / "config.yaml").start()
    photo = workdir / "hot" / "beach" / "photo.jpg"
    draw_sample("beach", 7).save(tmp_path / "photo.jpg", quality=90)
    shutil.copy(tmp_path / "photo.jpg", photo)
    video = workdir / "out" / "beach" / "photo.mp4"
    wait_for(video.exists, timeout=120, message=f"no video for a dropped photo; log:\n{daemon.log()}")
    record = json.loads((workdir / "out" / "beach" / "photo.mp4.json").read_text())
    assert record["profile"] == "beach"
    assert daemon.stop() == 0
