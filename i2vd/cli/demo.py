"""`i2vd demo`: the embedded default end to end, with no GPU and no network.

It draws sample images into a fresh hot folder whose sub-folders carry
beach/mountain/forest/product sidecars, runs the real daemon on the built-in
engine until every image has its video, and says where the videos are.
`--comfyui URL` runs the same on a ComfyUI instead, with the model-free workflow
(examples/workflows/comfyui-model-free.json: a still video of each image, any ComfyUI can make it).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy
import requests
import yaml
from PIL import Image, ImageDraw

from i2vd.config.load import DEFAULT_PROMPT, load_config
from i2vd.render import mp4
from i2vd.service.daemon import Daemon
from i2vd.store.journal import JobState

DEMO_TIMEOUT_SECONDS = 900
FOLDERS = {"beach": "beach", "mountain": "mountain", "forest": "forest", "products": "product-rotate"}
PROFILES = {
    "default": {"prompt": DEFAULT_PROMPT, "resolution": "256p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0},
    "beach": {"prompt": "Waves crashing, camera panning left"},
    "mountain": {"prompt": "Sunrise over mountains, time-lapse effect"},
    "forest": {"prompt": "Leaves rustling in wind, gentle dolly forward"},
    "product-rotate": {
        "prompt": "Product rotating slowly on white background",
        "resolution": "256p",
        "frames": 16,
        "fps": 12,
        "steps": 60,
        "output": "sku_{{ stem }}_rotate.mp4",
    },
}


def _sky(width: int, height: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    ramp = numpy.linspace(0.0, 1.0, height)[:, None, None]
    colors = numpy.array(top)[None, None, :] * (1 - ramp) + numpy.array(bottom)[None, None, :] * ramp
    return Image.fromarray(numpy.repeat(colors, width, axis=1).astype(numpy.uint8))


def draw_sample(kind: str, variant: int, size: tuple[int, int] = (640, 400)) -> Image.Image:
    width, height = size
    if kind == "products":
        image = Image.new("RGB", size, (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (width * 0.35, height * 0.2, width * 0.65, height * 0.85)
        draw.rounded_rectangle(box, radius=18, fill=(40 + 60 * variant, 90, 170), outline=(20, 20, 20), width=3)
        draw.ellipse((width * 0.45, height * 0.3, width * 0.55, height * 0.45), fill=(250, 200, 40))
        return image
    palettes = {
        "beach": ((90, 160, 230), (250, 220, 170)),
        "mountain": ((30, 40, 90), (250, 150, 90)),
        "forest": ((120, 180, 220), (200, 230, 200)),
    }
    image = _sky(width, height, *palettes[kind])
    draw = ImageDraw.Draw(image)
    if kind == "beach":
        draw.rectangle((0, height * 0.55, width, height), fill=(30, 110 + 20 * variant, 170))
        draw.rectangle((0, height * 0.8, width, height), fill=(230, 210, 160))
        draw.ellipse((width * 0.7, height * 0.1, width * 0.82, height * 0.28), fill=(255, 240, 180))
        for index in range(12):
            y = height * 0.6 + index * 7
            draw.line(
                [(x, y + 3 * math.sin(x / 20 + index)) for x in range(0, width, 8)], fill=(220, 240, 255), width=2
            )
    elif kind == "mountain":
        for index, shade in enumerate((70, 50, 35)):
            base = height * (0.55 + 0.12 * index)
            peaks = [(0, height), (0, base)]
            for x in range(0, width + 80, 80):
                peaks.append((x, base - (60 + 40 * ((x // 80 + index + variant) % 3))))
            peaks.append((width, height))
            draw.polygon(peaks, fill=(shade, shade + 10, shade + 30))
    else:
        draw.rectangle((0, height * 0.75, width, height), fill=(60, 110, 50))
        for index in range(14):
            x = (index * 53 + variant * 17) % width
            draw.rectangle((x + 14, height * 0.55, x + 22, height * 0.8), fill=(90, 60, 30))
            draw.ellipse((x - 10, height * 0.25, x + 46, height * 0.62), fill=(30, 100 + (index * 13) % 80, 40))
    return image


# examples/workflows/comfyui-model-free.json (a test keeps the two the same)
MODEL_FREE_WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "I2VD:image"}},
    "2": {
        "class_type": "ImageScale",
        "inputs": {"image": ["1", 0], "upscale_method": "lanczos", "width": 512, "height": 512, "crop": "center"},
        "_meta": {"title": "I2VD:resolution"},
    },
    "3": {
        "class_type": "RepeatImageBatch",
        "inputs": {"image": ["2", 0], "amount": 16},
        "_meta": {"title": "I2VD:frames"},
    },
    "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}, "_meta": {"title": "I2VD:fps"}},
    "5": {
        "class_type": "SaveVideo",
        "inputs": {"video": ["4", 0], "filename_prefix": "video/ComfyUI", "format": "mp4", "codec": "h264"},
        "_meta": {"title": "I2VD:output"},
    },
}


def prepare(workdir: Path, images_per_folder: int, comfyui: str | None = None) -> Path:
    """Write the hot folder, its sidecars and a config; return the config path."""
    hot = workdir / "hot"
    for folder, profile in FOLDERS.items():
        (hot / folder).mkdir(parents=True, exist_ok=True)
        (hot / folder / "i2vd.yaml").write_text(yaml.safe_dump({"profile": profile}), encoding="utf-8")
        for variant in range(images_per_folder):
            draw_sample(folder, variant).save(hot / folder / f"{folder}_{variant + 1}.jpg", quality=92)
    config = {
        "state_dir": str(workdir / "state"),
        "output_dir": str(workdir / "out"),
        "server": _server(workdir, comfyui),
        "gpu": {"enabled": False},
        "watch": [{"path": str(hot), "settle_seconds": 0.5, "rescan_seconds": 60}],
        "profiles": PROFILES,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _server(workdir: Path, comfyui: str | None) -> dict:
    if comfyui is None:
        return {"kind": "builtin"}
    (workdir / "comfyui-model-free.json").write_text(json.dumps(MODEL_FREE_WORKFLOW, indent=2), encoding="utf-8")
    return {"kind": "comfyui", "url": comfyui, "workflow": "comfyui-model-free.json", "timeout_seconds": 300}


def run_demo(
    workdir: Path | None = None,
    images_per_folder: int = 2,
    timeout_seconds: float = DEMO_TIMEOUT_SECONDS,
    comfyui: str | None = None,
) -> int:
    if comfyui is not None:
        from i2vd.render.backends.comfyui_probe import system_stats

        comfyui = comfyui.rstrip("/")
        with requests.Session() as session:
            stats = system_stats(session, comfyui, 10)
        if stats is None:
            print(f"i2vd demo: no ComfyUI answers at {comfyui} (GET /system_stats); start it, or check the URL")
            return 1
    workdir = (workdir or Path(tempfile.mkdtemp(prefix="i2vd-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(prepare(workdir, images_per_folder, comfyui))
    expected = len(FOLDERS) * images_per_folder
    engine = "built-in CPU engine (a preview engine, not a diffusion model)"
    if comfyui:
        engine = (
            f"ComfyUI {stats['system']['comfyui_version']} at {comfyui} with the model-free workflow "
            "(a still video of each image)"
        )
    print(f"i2vd demo: {expected} sample images in {workdir / 'hot'}, {engine}")
    daemon = Daemon(config)
    daemon.start()
    waiter = threading.Event()
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline:
            counts = daemon.journal.counts()
            finished = counts[JobState.DONE.value] + counts[JobState.FAILED.value]
            if finished >= expected and counts[JobState.QUEUED.value] == counts[JobState.RUNNING.value] == 0:
                break
            waiter.wait(0.2)
        jobs = daemon.journal.jobs()
    finally:
        daemon.shutdown()
    for job in jobs:
        if job.state is JobState.DONE:
            info = mp4.probe(Path(job.output_path))
            print(
                f"  {job.profile_name:15} {job.rel_path:28} -> {job.output_path} "
                f"({info.frames} frames, {info.width}x{info.height}, {info.fps:g} fps)"
            )
        else:
            print(f"  {job.profile_name:15} {job.rel_path:28} -> {job.state.value}: {job.last_error or ''}")
    done = sum(job.state is JobState.DONE for job in jobs)
    print(f"i2vd demo: {done} of {expected} videos in {config.output_dir}")
    print(next_steps(workdir))
    return 0 if done == expected else 1


def _shown(path: Path) -> str:
    """A path as a new user would type it: relative to where they stand when it is below."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _program() -> str:
    """`i2vd` as the user can type it: bare when it is on PATH, else the script that ran (.venv/bin/i2vd)."""
    ran = Path(sys.argv[0])
    if ran.name != "i2vd" or not ran.is_file():
        return "i2vd"  # python -m i2vd, or an unknown launcher
    on_path = shutil.which("i2vd")
    if on_path is not None and Path(on_path).resolve() == ran.resolve():
        return "i2vd"
    return _shown(ran.absolute())


def next_steps(workdir: Path) -> str:
    """What to type next: the demo's config is a working one, for the user's own images."""
    config, hot, i2vd = _shown(workdir / "config.yaml"), _shown(workdir / "hot"), _program()
    steps = [
        (f"{i2vd} run -c {config}", "the daemon; leave it running"),
        (f"cp photo.jpg {hot}/beach/", f"any folder under {hot}: its i2vd.yaml names the profile"),
        (f"{i2vd} status -c {config}", "in another terminal: what it is doing"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    lines = [f"  {command.ljust(width)}# {why}" for command, why in steps]
    return "\n".join(
        [
            "\nTry it on your own images (the demo wrote a working config):",
            *lines,
            f"Videos appear under {_shown(workdir / 'out')}/, mirroring the folders.",
        ]
    )
