"""MP4 files through the ffmpeg binary that imageio-ffmpeg ships: probe, tag, read, encode.

Every call runs ffmpeg as a child process with an argument list (never a shell, so a
prompt with quotes or newlines in a comment tag is safe), a timeout, and stderr
captured, so a failure becomes a `VideoError` with ffmpeg's own reason in it.
"""

from __future__ import annotations

import errno
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy

FFMPEG_TIMEOUT_SECONDS = 120.0

# A stream line looks like
#   Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive),
#   64x48 [SAR 1:1 DAR 4:3], 19 kb/s, 8 fps, 8 tbr, 16384 tbn (default)
# The size must follow ", " so that the hex codec tag "0x31637661" is not read as a size.
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>\w+)(?P<details>.*)")
_SIZE = re.compile(r", (?P<width>\d+)x(?P<height>\d+)(?=[ ,]|$)")
_RATE = re.compile(r", (?P<rate>[\d.]+)(?P<thousands>k?) (?:fps|tbr)\b")
_FFMPEG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")
_NOISE = ("misdetection possible", "Error opening input file", "Error opening output file")


class VideoError(Exception):
    """A file is not a usable video, or ffmpeg could not write one."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    frames: int
    fps: float
    codec: str


def probe(path: Path) -> VideoInfo:
    """Decode every frame of the first video stream: a count from the container alone can lie."""
    _require_content(path)
    completed = _run_ffmpeg(["-i", _file_url(path), "-map", "0:v:0?", "-f", "null", "-progress", "pipe:1", "-"])
    opened = b"Input #0" in completed.stderr
    if completed.returncode != 0 and not opened:
        raise VideoError(f"not a video: ffmpeg says: {_reason(completed.stderr)}")
    stream = _first_video_stream(completed.stderr)
    if stream is None:
        raise VideoError("not a video: it has no video stream")
    if completed.returncode != 0:
        raise VideoError(f"not a video: ffmpeg says: {_reason(completed.stderr)}")
    codec, details = stream
    frames = _decoded_frames(completed.stdout)
    if frames == 0:
        raise VideoError("not a video: its video stream has no frames")
    size = _SIZE.search(details)
    if size is None:
        raise VideoError(f"not a video: ffmpeg reports no frame size for {codec}")
    rate = _RATE.search(details)
    fps = 0.0
    if rate is not None:
        fps = float(rate["rate"]) * (1000 if rate["thousands"] else 1)
    return VideoInfo(width=int(size["width"]), height=int(size["height"]), frames=frames, fps=fps, codec=codec)


def write_tagged_copy(source: Path, destination: Path, comment: str) -> None:
    """Remux `source` into an MP4 at `destination` carrying `comment`, without re-encoding.

    This is also the check on a server's reply: bytes ffmpeg cannot remux, or a result
    without decodable video frames, raise VideoError and leave no destination behind.
    """
    _require_content(source)
    completed = _run_ffmpeg(
        [
            "-i",
            _file_url(source),
            # Data streams (QuickTime timecode tracks) cannot be copied into MP4 and carry
            # nothing a viewer needs; dropping them keeps such replies usable.
            "-map",
            "0",
            "-dn",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            "-metadata",
            f"comment={comment}",
            "-f",
            "mp4",
            "-y",
            _file_url(destination),
        ]
    )
    try:
        if completed.returncode != 0:
            _raise_disk_error(completed.stderr, destination)
            raise VideoError(f"not a video: ffmpeg says: {_reason(completed.stderr)}")
        probe(destination)
    except (VideoError, OSError):
        destination.unlink(missing_ok=True)
        raise


def read_comment(path: Path) -> str | None:
    """The container's `comment` tag, exactly as written (newlines included), or None."""
    _require_content(path)
    completed = _run_ffmpeg(["-i", _file_url(path), "-f", "ffmetadata", "pipe:1"])
    if completed.returncode != 0:
        raise VideoError(f"not a video: ffmpeg says: {_reason(completed.stderr)}")
    return _global_metadata(completed.stdout.decode("utf-8", errors="replace")).get("comment")


def encode_frames(frames: Iterable[numpy.ndarray], destination: Path, fps: int, comment: str | None = None) -> None:
    """Encode RGB frames (height x width x 3, uint8, even sizes) as H.264 yuv420p in MP4."""
    frame_iterator = iter(frames)
    first = next(frame_iterator, None)
    if first is None:
        raise VideoError("no frames to encode")
    height, width = _check_frame(first, expected_shape=None)
    # "-f mp4": a temporary name such as video.mp4.tmp says nothing about the format.
    output_parameters = ["-movflags", "+faststart", "-f", "mp4"]
    if comment is not None:
        output_parameters += ["-metadata", f"comment={comment}"]
    writer = imageio_ffmpeg.write_frames(
        _file_url(destination),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=6,
        # The default block size of 16 makes ffmpeg rescale sizes like 910x512;
        # yuv420p only needs even sizes, which _check_frame guarantees.
        macro_block_size=1,
        ffmpeg_log_level="error",
        ffmpeg_timeout=FFMPEG_TIMEOUT_SECONDS,
        output_params=output_parameters,
    )
    written = 0
    try:
        writer.send(None)
        frame = first
        while frame is not None:
            _check_frame(frame, expected_shape=first.shape)
            try:
                writer.send(numpy.ascontiguousarray(frame))
            except OSError as error:
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise VideoError(f"ffmpeg stopped while encoding: {first_line}") from error
            written += 1
            frame = next(frame_iterator, None)
        writer.close()
        # write_frames neither checks ffmpeg's exit status nor keeps its stderr,
        # so reading the result back is the only proof that the encode worked.
        encoded = probe(destination)
        if encoded.frames != written:
            raise VideoError(f"ffmpeg wrote {encoded.frames} frames of {written}")
    except BaseException:
        writer.close()
        destination.unlink(missing_ok=True)
        raise


def _check_frame(frame: numpy.ndarray, expected_shape: tuple[int, ...] | None) -> tuple[int, int]:
    if frame.dtype != numpy.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be height x width x 3 uint8, not {frame.shape} {frame.dtype}")
    if expected_shape is not None and frame.shape != expected_shape:
        raise ValueError(f"frame of shape {frame.shape} among frames of shape {expected_shape}")
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in yuv420p needs even sizes, not {width}x{height}")
    return height, width


def _require_content(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise VideoError(f"video cannot be read: {error.strerror or error}") from error
    if size == 0:
        raise VideoError("video is empty")


def _file_url(path: Path) -> str:
    # "file:" keeps ffmpeg from reading a name such as "-x.mp4" as an option
    # or "http:a.mp4" as a network address.
    return "file:" + str(path)


DISK_ERRORS = {
    "No space left on device": errno.ENOSPC,
    "Read-only file system": errno.EROFS,
    "Disk quota exceeded": errno.EDQUOT,
}


def _raise_disk_error(stderr: bytes, destination: Path) -> None:
    """ffmpeg failing to write is the disk's fault, not the video's: say so as the OSError it is."""
    text = stderr.decode("utf-8", errors="replace")
    for message, number in DISK_ERRORS.items():
        if message in text:
            raise OSError(number, message, str(destination))


def _run_ffmpeg(arguments: list[str]) -> subprocess.CompletedProcess[bytes]:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *arguments]
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=FFMPEG_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise VideoError(f"ffmpeg did not finish within {FFMPEG_TIMEOUT_SECONDS:.0f} s") from error
    except OSError as error:
        raise VideoError(f"ffmpeg could not be started: {error}") from error


def _first_video_stream(stderr: bytes) -> tuple[str, str] | None:
    for line in stderr.decode("utf-8", errors="replace").splitlines():
        match = _VIDEO_STREAM.search(line)
        if match is not None:
            return match["codec"], match["details"]
    return None


def _decoded_frames(progress: bytes) -> int:
    # -progress repeats key=value blocks; the last "frame=" is the final count.
    frames = 0
    for line in progress.decode("ascii", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            frames = int(value.strip())
    return frames


def _reason(stderr: bytes) -> str:
    """ffmpeg's first line that says what went wrong, without its component prefix."""
    for line in stderr.decode("utf-8", errors="replace").splitlines():
        line = _FFMPEG_PREFIX.sub("", line).strip()
        if line and not line.startswith(" ") and not any(noise in line for noise in _NOISE):
            return line.removeprefix("Error opening input: ")
    return "no reason given"


def _global_metadata(text: str) -> dict[str, str]:
    """Parse the global section of ffmpeg's FFMETADATA1 text format.

    In that format a backslash escapes the next character ('=', ';', '#', '\\' and
    newline), which is how a multi-line value stays on one logical line.
    """
    metadata: dict[str, str] = {}
    for line in _logical_lines(text)[1:]:
        if line.raw.startswith("["):
            break
        if line.raw.startswith((";", "#")) or line.separator < 0:
            continue
        metadata[line.text[: line.separator]] = line.text[line.separator + 1 :]
    return metadata


@dataclass
class _LogicalLine:
    raw: str = ""
    text: str = ""
    separator: int = -1


def _logical_lines(text: str) -> list[_LogicalLine]:
    lines = [_LogicalLine()]
    escaped = False
    for character in text:
        current = lines[-1]
        current.raw += character
        if escaped:
            current.text += character
            escaped = False
        elif character == "\\":
            escaped = True
        elif character == "\n":
            current.raw = current.raw[:-1]
            lines.append(_LogicalLine())
        else:
            if character == "=" and current.separator < 0:
                current.separator = len(current.text)
            current.text += character
    return lines


def write_poster(source: Path, destination: Path, max_width: int = 480) -> None:
    """The video's first frame as a JPEG (at most `max_width` wide): the dashboard's poster frames."""
    _require_content(source)
    completed = _run_ffmpeg(
        [
            "-v",
            "error",
            "-y",
            "-i",
            _file_url(source),
            "-frames:v",
            "1",
            "-vf",
            f"scale='min({int(max_width)},iw)':-2",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
            str(destination),
        ]
    )
    if completed.returncode != 0 or not destination.exists() or destination.stat().st_size == 0:
        raise VideoError(f"no frame: ffmpeg says: {_reason(completed.stderr)}")
