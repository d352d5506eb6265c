"""The builtin engine: real images in, real MP4s out, checked with ffmpeg."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy
import pytest
from PIL import Image, ImageDraw

from i2vd import __version__
from i2vd.render import mp4
from i2vd.render.backends.base import BadInput, VideoRequest
from i2vd.render.backends.builtin import (
    BuiltinBackend,
    Motion,
    MotionKind,
    choose_motion,
    output_size,
    render_frames,
)


def image_bytes(size: tuple[int, int], image_format: str = "PNG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, "skyblue")
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), "gold")
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def request(image: bytes, prompt: str = "a scene", resolution: str = "256p", frames: int = 3) -> VideoRequest:
    return VideoRequest(
        image=image,
        image_name="photo.png",
        prompt=prompt,
        resolution=resolution,
        frames=frames,
        fps=8,
        steps=50,
        guidance=9.0,
    )


def probe_reply(data: bytes, tmp_path: Path) -> mp4.VideoInfo:
    path = tmp_path / "reply.mp4"
    path.write_bytes(data)
    return mp4.probe(path)


@pytest.mark.parametrize("resolution", ["256p", "512p"])
@pytest.mark.parametrize("image_size", [(120, 80), (101, 77), (60, 90)])
def test_video_has_the_requested_frames_height_and_an_even_width(
    resolution: str, image_size: tuple[int, int], tmp_path: Path
) -> None:
    backend = BuiltinBackend(workdir=tmp_path)
    reply = backend.generate(request(image_bytes(image_size), resolution=resolution, frames=3))
    info = probe_reply(reply.data, tmp_path)
    assert (info.frames, info.height, info.codec, info.fps) == (3, int(resolution[:-1]), "h264", 8.0)
    assert info.width % 2 == 0
    assert abs(info.width / info.height - image_size[0] / image_size[1]) < 0.02
    assert reply.server_seconds > 0
    assert list(tmp_path.iterdir()) == [tmp_path / "reply.mp4"]  # no temp files left


def test_width_follows_the_aspect_and_panoramas_are_capped() -> None:
    assert output_size((4000, 3000), "512p") == (682, 512)
    assert output_size((1920, 1080), "1024p") == (1820, 1024)
    assert output_size((9000, 1000), "256p") == (512, 256)


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("Waves crashing, camera panning left", MotionKind.PAN_LEFT),
        ("Sunrise over mountains, time-lapse effect", MotionKind.TIME_LAPSE),
        ("Leaves rustling in wind, gentle dolly forward", MotionKind.ZOOM_IN),
        ("Product rotating slowly on white background", MotionKind.ROTATE),
        ("City street, the camera pans to the right", MotionKind.PAN_RIGHT),
        ("Slow zoom out from the lighthouse", MotionKind.ZOOM_OUT),
        ("Pull back to reveal the valley", MotionKind.ZOOM_OUT),
        ("Push in on the face", MotionKind.ZOOM_IN),
        ("Sneaker on a turntable", MotionKind.ROTATE),
        ("Timelapse of clouds", MotionKind.TIME_LAPSE),
        ("A golden retriever scene with smooth motion", MotionKind.ZOOM_IN),
        ("Streets of Japan at noon", MotionKind.ZOOM_IN),
    ],
)
def test_choose_motion_reads_the_prompt(prompt: str, kind: MotionKind) -> None:
    assert choose_motion(prompt).kind is kind


def test_slow_words_slow_the_camera_and_sunset_dims_the_light() -> None:
    assert choose_motion("Product rotating slowly").speed < 1.0
    assert choose_motion("Waves, camera panning left").speed == 1.0
    assert choose_motion("Sunset over the bay").light_falls
    assert not choose_motion("Sunrise over mountains, time-lapse effect").light_falls


def test_the_earliest_camera_phrase_wins() -> None:
    assert choose_motion("Zoom out, then a pan left").kind is MotionKind.ZOOM_OUT


def striped_image(size: tuple[int, int] = (240, 160), stripe: int = 4) -> Image.Image:
    image = Image.new("RGB", size, "white")
    left = size[0] // 2 - stripe // 2
    ImageDraw.Draw(image).rectangle((left, 0, left + stripe, size[1]), "black")
    return image


def dark_column(frame: numpy.ndarray) -> float:
    darkness = 255.0 - frame.mean(axis=(0, 2))
    return float((darkness * numpy.arange(frame.shape[1])).sum() / darkness.sum())


def test_pan_left_moves_the_content_right() -> None:
    frames = list(render_frames(striped_image(), (120, 80), 8, Motion(MotionKind.PAN_LEFT)))
    assert dark_column(frames[-1]) - dark_column(frames[0]) > 10
    steps = numpy.diff([dark_column(frame) for frame in frames])
    assert (steps > 0).all()  # steadily, never back and forth


def test_pan_right_moves_the_content_left() -> None:
    frames = list(render_frames(striped_image(), (120, 80), 8, Motion(MotionKind.PAN_RIGHT)))
    assert dark_column(frames[0]) - dark_column(frames[-1]) > 10


def test_zoom_in_makes_the_stripe_wider() -> None:
    frames = list(render_frames(striped_image(stripe=24), (120, 80), 4, Motion(MotionKind.ZOOM_IN)))
    widths = [int((frame.mean(axis=(0, 2)) < 128).sum()) for frame in frames]
    assert widths[-1] > widths[0]


@pytest.mark.parametrize("image_size", [(300, 200), (200, 300), (900, 100)])
def test_rotation_shows_no_black_corners(image_size: tuple[int, int]) -> None:
    image = Image.new("RGB", image_size, "white")
    size = output_size(image_size, "256p")
    frames = list(render_frames(image, size, 5, Motion(MotionKind.ROTATE, speed=1.4)))
    assert min(int(frame.min()) for frame in frames) >= 250


def test_sunrise_brightens_and_sunset_dims() -> None:
    image = Image.new("RGB", (120, 80), (200, 200, 200))
    rising = list(render_frames(image, (120, 80), 4, Motion(MotionKind.TIME_LAPSE)))
    falling = list(render_frames(image, (120, 80), 4, Motion(MotionKind.TIME_LAPSE, light_falls=True)))
    assert rising[0].mean() < rising[-1].mean()
    assert falling[0].mean() > falling[-1].mean()


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    frames = list(render_frames(image, (80, 80), 2, Motion(MotionKind.ZOOM_IN)))
    assert frames[0].min() == 255


def test_same_request_gives_the_same_frames() -> None:
    motion = choose_motion("Waves crashing, camera panning left")
    first = list(render_frames(striped_image(), (120, 80), 3, motion))
    second = list(render_frames(striped_image(), (120, 80), 3, motion))
    assert all((a == b).all() for a, b in zip(first, second))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (120, 60), "skyblue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    reply = BuiltinBackend().generate(request(buffer.getvalue(), frames=2))
    info = probe_reply(reply.data, tmp_path)
    assert (info.width, info.height) == (128, 256)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some text, named photo.jpg\n", "not an image format"),
        (b"", "empty"),
        (image_bytes((64, 64), "JPEG")[:200], "cannot be decoded"),
    ],
)
def test_unreadable_images_are_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        BuiltinBackend().generate(request(data))


def png_chunk(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))


def test_a_decompression_bomb_is_bad_input() -> None:
    # Only a PNG header claiming 20000 x 20000 pixels: Pillow refuses it before decoding.
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"")
    with pytest.raises(BadInput, match="too many pixels"):
        BuiltinBackend().generate(request(bomb))


def test_unknown_resolution_is_bad_input() -> None:
    with pytest.raises(BadInput, match="resolution"):
        BuiltinBackend().generate(request(image_bytes((64, 64)), resolution="300p"))


def test_describe_names_the_engine() -> None:
    backend = BuiltinBackend()
    assert backend.describe() == {"kind": "builtin", "url": "builtin:", "version": __version__}
    backend.close()
