"""The builtin engine: films the still image with a moving camera, on the CPU.

This is a preview and offline engine, not a diffusion model: nothing in the picture
moves by itself. The camera pans, zooms, turns, or the light changes as in a
time-lapse, chosen from words in the prompt, so that a hot folder works end to end
with no GPU, no network and no model weights. Steps and guidance mean nothing here,
and nothing is random, so the seed changes nothing: the same request always gives
the same video.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy
from PIL import Image, ImageOps, UnidentifiedImageError

from i2vd import __version__
from i2vd.render import mp4
from i2vd.render.backends.base import RESOLUTIONS, BackendError, BadInput, VideoReply, VideoRequest

# Pans and zooms travel this far (a quarter of the frame) at speed 1; rotations swing
# this many degrees each way. Both are scaled by Motion.speed.
ZOOM_RANGE = 0.25
ROTATION_DEGREES = 8.0
TIME_LAPSE_ZOOM = 1.1
# The most any motion zooms in (a fast rotation of a 2:1 frame), used to decode
# JPEGs at a reduced size that still has every pixel the frames will need.
LARGEST_ZOOM = 1.5
WIDEST_ASPECT = 2.0
NARROWEST_ASPECT = 0.5
WHITE = (255, 255, 255)


class MotionKind(str, Enum):
    PAN_LEFT = "pan left"
    PAN_RIGHT = "pan right"
    ZOOM_IN = "zoom in"
    ZOOM_OUT = "zoom out"
    ROTATE = "rotate"
    TIME_LAPSE = "time-lapse"


@dataclass(frozen=True)
class Motion:
    kind: MotionKind
    speed: float = 1.0
    light_falls: bool = False  # sunset or dusk: the light dims instead of rising


# Earliest phrase in the prompt wins; at the same place, the first rule here wins,
# which is why the directionless "pan" and "zoom" come last.
_PHRASES = tuple(
    (kind, re.compile(rf"\b(?:{pattern})\b"))
    for kind, pattern in (
        (MotionKind.PAN_LEFT, r"pan(?:s|ning|ned)?\s+(?:to\s+the\s+)?left"),
        (MotionKind.PAN_RIGHT, r"pan(?:s|ning|ned)?\s+(?:to\s+the\s+)?right"),
        (MotionKind.ZOOM_IN, r"(?:zoom|push)(?:s|es|ing|ed)?\s+in(?:to)?|dolly(?:ing)?\s+(?:in|forward)"),
        (
            MotionKind.ZOOM_OUT,
            r"zoom(?:s|ing|ed)?\s+out|dolly(?:ing)?\s+(?:out|back(?:ward)?)"
            r"|pull(?:s|ing|ed)?\s+(?:back|out)",
        ),
        (MotionKind.ROTATE, r"rotat(?:e|es|ed|ing|ion)|spin(?:s|ning)?|turntable"),
        (MotionKind.TIME_LAPSE, r"time[-\s]?lapse|sunrise|sunset|dawn|dusk"),
        (MotionKind.PAN_RIGHT, r"pan(?:s|ning|ned)?"),  # no direction: read left to right
        (MotionKind.ZOOM_IN, r"zoom(?:s|ing|ed)?|dolly"),
    )
)
_FALLING_LIGHT = re.compile(r"\b(?:sunset|dusk|nightfall)\b")
_SLOW = re.compile(r"\b(?:slow|slowly|gentle|gently|subtle|subtly|calm)\b")
_FAST = re.compile(r"\b(?:fast|quick|quickly|rapid|rapidly|dramatic)\b")


def choose_motion(prompt: str) -> Motion:
    """The camera move the prompt asks for; a gentle zoom in when it names none."""
    text = prompt.lower()
    speed = 0.6 if _SLOW.search(text) else 1.4 if _FAST.search(text) else 1.0
    found = [
        (match.start(), order, kind)
        for order, (kind, pattern) in enumerate(_PHRASES)
        if (match := pattern.search(text)) is not None
    ]
    if not found:
        return Motion(MotionKind.ZOOM_IN, speed=0.6)
    kind = min(found)[2]
    falls = kind is MotionKind.TIME_LAPSE and _FALLING_LIGHT.search(text) is not None
    return Motion(kind, speed=speed, light_falls=falls)


def output_size(image_size: tuple[int, int], resolution: str) -> tuple[int, int]:
    """(width, height): the resolution is the height; the width follows the image, even."""
    height = int(resolution.removesuffix("p"))
    aspect = min(max(image_size[0] / image_size[1], NARROWEST_ASPECT), WIDEST_ASPECT)
    return max(2, round(height * aspect / 2) * 2), height


@dataclass(frozen=True)
class _View:
    """Where the camera looks, in working-image pixels."""

    center_x: float
    center_y: float
    width: float
    height: float
    degrees: float = 0.0


def render_frames(image: Image.Image, size: tuple[int, int], frames: int, motion: Motion) -> Iterator[numpy.ndarray]:
    """`frames` RGB frames of `image` (any mode) filmed with `motion`, each `size` (w, h)."""
    cover_width, cover_height = _cover(image.size, size[0] / size[1])
    largest_zoom = _largest_zoom(motion, (cover_width, cover_height), image.size)
    # Work on a copy just big enough for the most zoomed frame to be sharp, so a
    # 24-megapixel photo is reduced once instead of for every frame.
    scale = min(1.0, size[1] * largest_zoom / cover_height)
    working = _working_copy(image, scale)
    scale_x, scale_y = working.width / image.width, working.height / image.height
    cover = (cover_width * scale_x, cover_height * scale_y)
    for index in range(frames):
        progress = _ease(index / (frames - 1) if frames > 1 else 0.0)
        view = _camera(motion, progress, cover, working.size, largest_zoom)
        frame = _sample(working, view, size)
        if motion.kind is MotionKind.TIME_LAPSE:
            frame = _light(frame, progress if not motion.light_falls else 1.0 - progress)
        yield numpy.asarray(frame)


def _cover(image_size: tuple[int, int], aspect: float) -> tuple[float, float]:
    """The largest rectangle of the frame's aspect that fits in the image."""
    width, height = image_size
    if width / height > aspect:
        return height * aspect, float(height)
    return float(width), width / aspect


def _largest_zoom(motion: Motion, cover: tuple[float, float], image_size: tuple[int, int]) -> float:
    if motion.kind is MotionKind.TIME_LAPSE:
        return TIME_LAPSE_ZOOM
    if motion.kind is not MotionKind.ROTATE:
        return 1.0 + ZOOM_RANGE * motion.speed
    # A view turned by the widest angle must still lie inside the image, or its
    # corners would show black: its bounding box has to fit, with 1% to spare for
    # the few pixels bicubic sampling reaches beyond the box.
    radians = math.radians(ROTATION_DEGREES * motion.speed)
    cosine, sine = math.cos(radians), math.sin(radians)
    width, height = image_size
    needed_x = (cover[0] * cosine + cover[1] * sine) / width
    needed_y = (cover[0] * sine + cover[1] * cosine) / height
    return max(needed_x, needed_y, 1.0) * 1.01


def _working_copy(image: Image.Image, scale: float) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info
    converted = image.convert("RGBA" if has_alpha else "RGB")
    if scale < 1.0:
        reduced_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        converted = converted.resize(reduced_size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if has_alpha:
        # Transparent product shots belong on white, not on the black that dropping alpha gives.
        background = Image.new("RGBA", converted.size, WHITE + (255,))
        converted = Image.alpha_composite(background, converted).convert("RGB")
    return converted


def _ease(progress: float) -> float:
    """Cosine ease in and out: the camera starts and stops without a jolt."""
    return (1.0 - math.cos(math.pi * progress)) / 2.0


def _camera(
    motion: Motion,
    progress: float,
    cover: tuple[float, float],
    working_size: tuple[int, int],
    largest_zoom: float,
) -> _View:
    middle_x, middle_y = working_size[0] / 2, working_size[1] / 2
    kind = motion.kind
    zoom = largest_zoom
    if kind is MotionKind.ZOOM_IN:
        zoom = 1.0 + (largest_zoom - 1.0) * progress
    elif kind is MotionKind.ZOOM_OUT:
        zoom = largest_zoom - (largest_zoom - 1.0) * progress
    width, height = cover[0] / zoom, cover[1] / zoom
    room = working_size[0] - width
    if kind in (MotionKind.PAN_LEFT, MotionKind.PAN_RIGHT):
        # On a panorama the room is wide: travel at most half a frame per unit of speed.
        travel = min(room, width * 0.5 * motion.speed)
        direction = -1.0 if kind is MotionKind.PAN_LEFT else 1.0
        return _View(middle_x + direction * travel * (progress - 0.5), middle_y, width, height)
    if kind is MotionKind.ROTATE:
        degrees = ROTATION_DEGREES * motion.speed * (2.0 * progress - 1.0)
        return _View(middle_x, middle_y, width, height, degrees)
    if kind is MotionKind.TIME_LAPSE:
        return _View(middle_x + room * 0.5 * (progress - 0.5), middle_y, width, height)
    return _View(middle_x, middle_y, width, height)


def _sample(working: Image.Image, view: _View, size: tuple[int, int]) -> Image.Image:
    if view.degrees == 0.0:
        # resize() with a float box filters properly when shrinking and moves by
        # fractions of a pixel, so slow pans glide instead of stepping.
        box = (
            max(0.0, view.center_x - view.width / 2),
            max(0.0, view.center_y - view.height / 2),
            min(float(working.width), view.center_x + view.width / 2),
            min(float(working.height), view.center_y + view.height / 2),
        )
        return working.resize(size, Image.Resampling.BICUBIC, box=box)
    # The affine map takes each output pixel to the working image: scale, turn, move.
    radians = math.radians(view.degrees)
    step_x, step_y = view.width / size[0], view.height / size[1]
    a, b = math.cos(radians) * step_x, -math.sin(radians) * step_y
    d, e = math.sin(radians) * step_x, math.cos(radians) * step_y
    c = view.center_x - a * size[0] / 2 - b * size[1] / 2
    f = view.center_y - d * size[0] / 2 - e * size[1] / 2
    return working.transform(size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BICUBIC)


def _light(frame: Image.Image, daylight: float) -> Image.Image:
    """Dim and warm the frame: daylight 0 is an orange dawn, 1 the picture as it is."""
    brightness = 0.55 + 0.45 * daylight
    warmth = 1.0 - daylight
    gains = (1.0 + 0.05 * warmth, 1.0 - 0.10 * warmth, 1.0 - 0.35 * warmth)
    # Scaling alone turns a blue sky grey; a little added orange reads as low sun.
    glows = (40.0 * warmth, 15.0 * warmth, 0.0)
    table = [
        min(255, round(level * brightness * gain + glow)) for gain, glow in zip(gains, glows) for level in range(256)
    ]
    return frame.point(table)


class BuiltinBackend:
    """The embedded default engine: renders on the CPU and returns an H.264 MP4."""

    kind = "builtin"
    url = "builtin:"

    def __init__(self, workdir: Path | None = None, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._workdir = workdir
        self._clock = clock

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "url": self.url, "version": __version__}

    def generate(self, request: VideoRequest) -> VideoReply:
        started = self._clock()
        if request.resolution not in RESOLUTIONS:
            raise BadInput(f"resolution {request.resolution!r} is not one of {', '.join(RESOLUTIONS)}")
        if request.frames < 1 or request.fps < 1:
            raise BadInput(f"{request.frames} frames at {request.fps} fps is not a video")
        largest_side = round(int(request.resolution.removesuffix("p")) * LARGEST_ZOOM)
        image = _open_image(request.image, request.image_name, largest_side)
        size = output_size(image.size, request.resolution)
        frames = render_frames(image, size, request.frames, choose_motion(request.prompt))
        if request.reply_dir is not None:  # straight into the caller's folder: the video is never in memory
            request.reply_dir.mkdir(parents=True, exist_ok=True)
            video = request.reply_dir / f"builtin-{uuid.uuid4().hex}.mp4.part"
            try:
                mp4.encode_frames(frames, video, request.fps)
            except (mp4.VideoError, OSError) as error:
                video.unlink(missing_ok=True)
                raise BackendError(f"the builtin engine could not write the video: {error}") from error
            return VideoReply(path=video, server_seconds=self._clock() - started)
        with tempfile.TemporaryDirectory(prefix="i2vd-builtin-", dir=self._workdir) as folder:
            video = Path(folder) / "video.mp4"
            try:
                mp4.encode_frames(frames, video, request.fps)
                data = video.read_bytes()
            except (mp4.VideoError, OSError) as error:
                raise BackendError(f"the builtin engine could not write the video: {error}") from error
        return VideoReply(data=data, server_seconds=self._clock() - started)

    def close(self) -> None:
        """Nothing to release: the engine holds no connection."""


def _open_image(data: bytes, name: str, largest_side: int) -> Image.Image:
    """The image decoded and turned upright, or BadInput saying why it cannot be."""
    if not data:
        raise BadInput(f"{name}: the image file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # A JPEG can decode at 1/2, 1/4 or 1/8 size for almost nothing; ask for
            # no less than the frames need in either orientation.
            image.draft("RGB", (largest_side, largest_side))
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise BadInput(f"{name}: too many pixels to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        raise BadInput(f"{name}: not an image format that can be read") from error
    # Pillow's decoders raise many kinds of error on a damaged file; all mean the same here.
    except Exception as error:
        raise BadInput(f"{name}: the image cannot be decoded: {error}") from error
