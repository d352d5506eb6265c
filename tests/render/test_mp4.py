"""MP4 helpers against the real ffmpeg binary that imageio-ffmpeg ships."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy
import pytest

from i2vd.render import mp4


def gradient_frames(count: int, width: int = 64, height: int = 48) -> list[numpy.ndarray]:
    frames = []
    for index in range(count):
        frame = numpy.zeros((height, width, 3), dtype=numpy.uint8)
        frame[..., 0] = numpy.linspace(0, 255, width, dtype=numpy.uint8)
        frame[..., 1] = index * 20
        frames.append(frame)
    return frames


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "video.mp4"
    mp4.encode_frames(gradient_frames(5), path, fps=8)
    return path


def test_encoded_frames_probe_as_h264_of_the_same_size_and_count(video: Path) -> None:
    assert mp4.probe(video) == mp4.VideoInfo(width=64, height=48, frames=5, fps=8.0, codec="h264")


def test_sizes_that_are_not_multiples_of_sixteen_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "odd-block.mp4"
    mp4.encode_frames(gradient_frames(2, width=90, height=34), path, fps=12)
    info = mp4.probe(path)
    assert (info.width, info.height, info.fps) == (90, 34, 12.0)


def test_encode_writes_the_comment(tmp_path: Path) -> None:
    path = tmp_path / "-commented.mp4.tmp"
    mp4.encode_frames(gradient_frames(2), path, fps=8, comment="first\nsecond")
    assert mp4.read_comment(path) == "first\nsecond"


def test_odd_sizes_are_refused_before_ffmpeg_runs(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with pytest.raises(ValueError, match="even sizes"):
        mp4.encode_frames(gradient_frames(2, width=63), path, fps=8)
    assert not path.exists()


def test_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(mp4.VideoError, match="no frames"):
        mp4.encode_frames([], tmp_path / "none.mp4", fps=8)


def test_tagged_copy_round_trips_a_multi_line_non_ascii_comment(video: Path, tmp_path: Path) -> None:
    comment = 'prompt: Wellen "crashing" = 波\nprofile: beach;#\\\nsha256: 0123abcd\n'
    tagged = tmp_path / "-tagged copy.mp4"
    mp4.write_tagged_copy(video, tagged, comment)
    assert mp4.read_comment(tagged) == comment
    assert mp4.probe(tagged) == mp4.probe(video)


def test_untagged_video_has_no_comment(video: Path) -> None:
    assert mp4.read_comment(video) is None


def test_garbage_bytes_are_not_a_video(tmp_path: Path) -> None:
    garbage = tmp_path / "reply.mp4"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(mp4.VideoError, match="^not a video: ffmpeg says: [A-Za-z]"):
        mp4.probe(garbage)


def test_text_is_not_a_video(tmp_path: Path) -> None:
    text = tmp_path / "reply.mp4"
    text.write_text('{"error": "CUDA out of memory"}')
    with pytest.raises(mp4.VideoError, match="^not a video: ffmpeg says: "):
        mp4.probe(text)


def test_empty_file_is_an_empty_video(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(mp4.VideoError, match="video is empty"):
        mp4.probe(empty)
    with pytest.raises(mp4.VideoError, match="video is empty"):
        mp4.read_comment(empty)


def test_tagged_copy_of_garbage_fails_and_leaves_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "reply.bin"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    destination = tmp_path / "out.mp4"
    with pytest.raises(mp4.VideoError, match="not a video"):
        mp4.write_tagged_copy(garbage, destination, "comment")
    assert not destination.exists()


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    audio = tmp_path / "audio.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=0.2",
            "-c:a",
            "aac",
            str(audio),
        ],
        check=True,
        timeout=60,
    )
    with pytest.raises(mp4.VideoError, match="not a video: it has no video stream"):
        mp4.probe(audio)
