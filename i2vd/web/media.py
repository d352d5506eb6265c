"""Videos and their poster frames, served from the output folders only.

A URL path maps to a file under output_dir (or under a watch root's own output
folder, by a `.out<N>/` prefix): no `..`, no empty or `.` segments, no NUL, and the
resolved file (symlinks followed) must still lie inside that folder. Posters are
the video's first frame, made once with ffmpeg and cached under
<state_dir>/posters/, keyed by the video's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from i2vd.config.load import Config
from i2vd.render import mp4

log = logging.getLogger("i2vd.web")

VIDEO_SUFFIXES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
POSTER_FOLDER = "posters"


class NotServed(Exception):
    """The path names no video this server may serve (the reply is 404 whatever the reason)."""


class BadRange(Exception):
    """A Range header that no byte of the file satisfies (416)."""


@dataclass(frozen=True)
class Video:
    path: Path  # resolved: no symlink left in it
    size: int
    mtime_ns: int
    content_type: str


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`bytes=a-b`, `bytes=a-` or `bytes=-n` as (first, last) inclusive; None: send the whole file.

    Several ranges, or a header that is not a byte range, are answered with the whole file (RFC 9110
    lets a server ignore Range); a range that starts past the end raises BadRange.
    """
    if not header or not header.strip().lower().startswith("bytes="):
        return None
    spec = header.strip()[6:].strip()
    if "," in spec or "-" not in spec:
        return None
    first_text, _, last_text = (part.strip() for part in spec.partition("-"))
    if not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
        return None
    if first_text == "":
        if last_text == "":
            return None
        length = int(last_text)
        if length == 0 or size == 0:
            raise BadRange
        return max(0, size - length), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size:
        raise BadRange
    if last < first:
        return None
    return first, min(last, size - 1)


class Media:
    def __init__(self, config: Callable[[], Config]):
        self._config = config
        self._poster_lock = threading.Lock()

    def bases(self) -> list[tuple[str, Path]]:
        """(URL prefix, folder): output_dir first, then each root's own output folder outside it."""
        config = self._config()
        bases = [("", config.output_dir)]
        for root in config.watch:
            folder = root.output_dir
            if all(folder != base and base not in folder.parents for _, base in bases):
                bases.append((f".out{len(bases)}/", folder))
        return bases

    def url_for(self, output_path: str | None, kind: str = "videos") -> str | None:
        """The URL of a job's video (kind "videos") or of its poster ("posters"); None when not servable."""
        if not output_path:
            return None
        path = Path(output_path)
        for prefix, base in self.bases():
            if base in path.parents:
                relative = prefix + path.relative_to(base).as_posix()
                suffix = ".jpg" if kind == "posters" else ""
                return f"/{kind}/" + quote(os.fsencode(relative + suffix), safe="/")
        return None

    def resolve(self, relative: str) -> Video:
        """The video a decoded URL path (after /videos/) names; NotServed otherwise."""
        if "\0" in relative or "\\" in relative:
            raise NotServed("odd characters in the path")
        segments = relative.split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            raise NotServed("not a plain path")
        base = self.bases()[0][1]
        for prefix, folder in self.bases()[1:]:
            if relative.startswith(prefix):
                base, segments = folder, relative[len(prefix) :].split("/")
                break
        content_type = VIDEO_SUFFIXES.get(Path(segments[-1]).suffix.lower())
        if content_type is None:
            raise NotServed("not a video")
        real_base = os.path.realpath(base)
        real = os.path.realpath(os.path.join(base, *segments))
        if real == real_base or os.path.commonpath([real, real_base]) != real_base:
            raise NotServed("outside the output folder")
        try:
            info = os.stat(real)
        except OSError as error:
            raise NotServed(f"cannot read: {error.strerror}") from None
        if not os.path.isfile(real):
            raise NotServed("not a regular file")
        return Video(Path(real), info.st_size, info.st_mtime_ns, content_type)

    def open(self, video: Video):
        """The file, opened without following a symlink put in its place since `resolve`."""
        descriptor = os.open(video.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return os.fdopen(descriptor, "rb")

    def poster(self, relative: str) -> Path:
        """The poster of the video at `relative` + ".jpg", made now if it is not cached yet."""
        if not relative.lower().endswith(".jpg"):
            raise NotServed("a poster is <video path>.jpg")
        video = self.resolve(relative[:-4])
        key = hashlib.sha256(f"{video.path}\0{video.size}\0{video.mtime_ns}".encode("utf-8", "surrogateescape"))
        folder = self._config().state_dir / POSTER_FOLDER
        cached = folder / f"{key.hexdigest()}.jpg"
        with self._poster_lock:  # made once, even when the page asks for it twice at the same time
            if cached.exists():
                return cached
            folder.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.partial.jpg")
            try:
                mp4.write_poster(video.path, partial)
                os.replace(partial, cached)
            except (mp4.VideoError, OSError) as error:
                log.warning("no poster for %s: %s", video.path, error)
                raise NotServed(f"no poster: {error}") from None
            finally:
                partial.unlink(missing_ok=True)
        return cached
