"""Reading image files safely: full decode, content hash, EXIF facts for prompts."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

HASH_CHUNK = 1 << 20
END_PROBE = 1 << 16  # below malloc's mmap threshold
READ_AHEAD_BYTES = 1 << 20  # of each file read_ahead asks for
DRAFT_PIXELS = 16_000_000  # a JPEG larger than this is decoded at 1/8 scale: every byte read, 1/64 of the pixels
# A baseline JPEG past Pillow's bomb warning is a photo when its file could hold its pixels: a flat grey 100 MP JPEG is
# ~1.2 MB (85 pixels a byte), a camera's 20-60 MB; a few hundred bytes claiming 100 MP is a bomb.
JPEG_PIXELS_PER_BYTE = 1_000
# Pillow's names for a camera's JPEG: "MPO" when it carries a Multi-Picture index (a preview image after the photo).
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# How a HEIC/HEIF file starts (after its box size): an ISO-BMFF `ftyp` box naming one of HEIF's image brands.
HEIF_BOXES = frozenset(b"ftyp" + brand for brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1"))
# How an image is opened: O_NONBLOCK, a FIFO named like an image cannot block; O_NOFOLLOW, nor a link lead elsewhere.
SAFE_OPEN = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
_OPEN_LOCK = threading.Lock()  # see _open


class NotRegularFile(OSError):
    """A FIFO, a device, a folder or a link where a file was expected: never opened for reading."""

    def __init__(self, path: Path):
        super().__init__(errno.EINVAL, "not a regular file", str(path))


class BadImage(Exception):
    """The file is not an image i2vd can send: the message says why, for the job's error."""


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    format: str
    exif_date: str | None = None
    exif_camera: str | None = None


def read_regular_file(path: Path, limit: int | None = None) -> bytes:
    """The whole file (or its first `limit` bytes), refusing anything that is not a regular file.

    O_NONBLOCK and O_NOFOLLOW make the open itself safe: a FIFO would block forever,
    a symlink could point outside the hot folder.
    """
    descriptor = os.open(path, SAFE_OPEN)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path)
        chunks = []
        remaining = limit
        expected = info.st_size
        while remaining is None or remaining > 0:
            # Ask for what the file holds (and a little more, to see its end): os.read allocates the whole
            # request first, and 1 MB for a 20 KB image is an mmap and its page faults on every file.
            want = min(HASH_CHUNK, max(expected + 1, END_PROBE))
            chunk = os.read(descriptor, want if remaining is None else min(want, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            expected -= len(chunk)
            remaining = None if remaining is None else remaining - len(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


def read_ahead(paths: list[str]) -> None:
    """Ask the kernel for the start of each of these files at once (POSIX_FADV_WILLNEED), before they are read one
    by one. A first start reads images that are on disk, not in the page cache: read one at a time, each small file
    was a read of its own (~95 us, ~50 us of it the kernel's CPU, on the benchmark's VM); asked for together, the
    kernel merges and overlaps them (~18 us a file, this included). Only regular files, opened as
    read_regular_file opens them, and at most READ_AHEAD_BYTES of each: 100 images of 40 MB do not fill the page
    cache. Whatever goes wrong here is left for the read itself to say."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
        try:
            descriptor = os.open(path, SAFE_OPEN)
        except OSError:
            continue
        try:
            info = os.fstat(descriptor)
            if stat.S_ISREG(info.st_mode):
                advise(descriptor, 0, min(info.st_size, READ_AHEAD_BYTES), os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(descriptor)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inspect_image(data: bytes, name: str) -> ImageFacts:
    """Decode the image fully; raise BadImage with a clear reason when it cannot be."""
    if not data:
        raise BadImage(f"{name} is empty (0 bytes)")
    source = BytesIO(data)
    try:
        with _open(source) as image:
            facts = _facts(image)  # its own size: a draft below makes the decoded one smaller
            if image.format in JPEG_FORMATS and image.width * image.height > DRAFT_PIXELS:
                # The whole entropy-coded stream is still decoded (a truncated or damaged file fails as it would
                # at full size); only the inverse DCT is done at 1/8 scale. A baseline 45 MP photo is then ~2 MB
                # of pixels in the daemon rather than ~130 MB. (A progressive one keeps a full-size coefficient
                # buffer whatever the scale: see _open.)
                image.draft(image.mode, (image.width // 8, image.height // 8))
            image.load()
            return facts
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"{name} is too large to decode safely (decompression bomb?): {error}") from None
    except UnidentifiedImageError:
        if bytes(source.getbuffer()[4:12]) in HEIF_BOXES:
            raise BadImage(
                f"{name} is a HEIC/HEIF photo (an iPhone's own format), which i2vd cannot decode: export it as JPEG"
                " (on an iPhone: Settings > Camera > Formats > Most Compatible)"
            ) from None
        raise BadImage(f"{name} is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"{name} is damaged or incomplete: {error}") from None
    except Exception as error:  # noqa: BLE001 - a plugin may raise anything (DDS: NotImplementedError); only this file fails
        raise BadImage(f"{name} cannot be decoded: {type(error).__name__}: {error}") from None


def _open(source: BytesIO) -> Image.Image:
    """Image.open, with Pillow's decompression-bomb warning (past Image.MAX_IMAGE_PIXELS, ~89 MP) an error, but for
    a baseline JPEG below twice that limit (where Pillow refuses) whose file could hold that many pixels: a
    medium-format camera's 100-150 MP photo, decoded at 1/8 scale (inspect_image), never whole. A progressive JPEG
    that large takes a full-size coefficient buffer even at 1/8 (~850 MB for 144 MP), and another format would be
    decoded whole: refused.

    Under a lock: warnings.catch_warnings swaps the process's filter list, and two threads inspecting at once (the
    intake, a retry from the dashboard) could leave one's filter installed for good."""
    with _OPEN_LOCK:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(source)
        except Image.DecompressionBombWarning as warning:
            source.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
            pixels = image.width * image.height
            plausible = source.getbuffer().nbytes * JPEG_PIXELS_PER_BYTE >= pixels
            if image.format in JPEG_FORMATS and not image.info.get("progressive") and plausible:
                return image
            image.close()
            raise warning from None


def _facts(image: Image.Image) -> ImageFacts:
    exif = image.getexif()
    if not exif:  # no IFD0, so no Exif IFD either: four look-ups saved on most PNGs and every EXIF-less file
        return ImageFacts(width=image.width, height=image.height, format=image.format or "unknown")
    return ImageFacts(
        width=image.width,
        height=image.height,
        format=image.format or "unknown",
        exif_date=_exif_text(exif, ExifTags.Base.DateTimeOriginal) or _exif_text(exif, ExifTags.Base.DateTime),
        exif_camera=" ".join(
            filter(None, (_exif_text(exif, ExifTags.Base.Make), _exif_text(exif, ExifTags.Base.Model)))
        )
        or None,
    )


def _exif_text(exif: Image.Exif, tag: int) -> str | None:
    value = exif.get(tag)
    if value is None and tag == ExifTags.Base.DateTimeOriginal:
        value = exif.get_ifd(ExifTags.IFD.Exif).get(tag)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 ") or None if value is not None else None
