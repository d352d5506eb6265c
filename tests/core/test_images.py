"""Reading images safely: real JPEG/PNG files, damaged ones, bombs, FIFOs and EXIF."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from i2vd.core.images import BadImage, ImageFacts, NotRegularFile, inspect_image, read_regular_file, sha256_of
from tests.support.fakes import write_image


def encoded(size: tuple[int, int] = (64, 48), image_format: str = "JPEG", **save_options) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    image.paste((250, 250, 0), (0, 0, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_options)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid small PNG whose header (IHDR, CRC fixed up) claims width x height pixels."""
    data = bytearray(encoded((1, 1), "PNG"))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


# -- inspect_image ---------------------------------------------------------------------


def test_a_real_jpeg_is_inspected(tmp_path: Path) -> None:
    data = write_image(tmp_path / "a.jpg", size=(64, 48))
    assert inspect_image(data, "a.jpg") == ImageFacts(width=64, height=48, format="JPEG")


@pytest.mark.parametrize("image_format", ["PNG", "WEBP", "BMP", "TIFF"])
def test_other_formats_are_inspected(image_format: str) -> None:
    facts = inspect_image(encoded((30, 20), image_format), "x")
    assert (facts.width, facts.height, facts.format) == (30, 20, image_format)
    assert facts.exif_date is None and facts.exif_camera is None


def test_empty_data_is_a_bad_image() -> None:
    with pytest.raises(BadImage, match=r"^x\.jpg is empty \(0 bytes\)$"):
        inspect_image(b"", "x.jpg")


def test_text_named_jpg_is_a_bad_image() -> None:
    with pytest.raises(BadImage, match=r"^notes\.jpg is not an image Pillow can read$"):
        inspect_image(b"Dear team,\nplease find attached...\n" * 20, "notes.jpg")


def test_a_truncated_jpeg_is_a_bad_image() -> None:
    data = encoded((256, 192), "JPEG")
    with pytest.raises(BadImage, match=r"^half\.jpg is damaged or incomplete: "):
        inspect_image(data[: len(data) // 2], "half.jpg")


def test_a_truncated_png_is_a_bad_image() -> None:
    data = encoded((256, 192), "PNG")
    with pytest.raises(BadImage, match=r"^half\.png is damaged or incomplete: "):
        inspect_image(data[: len(data) // 2], "half.png")


def heic_photo() -> bytes:
    """The start of an iPhone's HEIC photo: an ISO-BMFF `ftyp` box of brand heic (Pillow has no decoder for it)."""
    return struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + struct.pack(">I", 16) + b"meta" + b"\0" * 8


@pytest.mark.parametrize("name", ["IMG_0001.HEIC", "IMG_0002.heif", "renamed.jpg"])
def test_an_iphone_heic_photo_is_a_bad_image_that_says_how_to_send_it(name: str) -> None:
    with pytest.raises(BadImage) as caught:
        inspect_image(heic_photo(), name)
    assert str(caught.value) == (
        f"{name} is a HEIC/HEIF photo (an iPhone's own format), which i2vd cannot decode: export it as JPEG"
        " (on an iPhone: Settings > Camera > Formats > Most Compatible)"
    )


def test_a_decompression_bomb_is_a_bad_image() -> None:
    bomb = png_claiming_size(20000, 20000)  # 400 megapixels: over twice Pillow's limit
    assert len(bomb) < 200
    with pytest.raises(BadImage, match=r"^bomb\.png is too large to decode safely \(decompression bomb\?\)"):
        inspect_image(bomb, "bomb.png")


def test_an_image_past_the_warning_limit_is_a_bad_image_too() -> None:
    # 100 megapixels: above Image.MAX_IMAGE_PIXELS, where Pillow only warns, below twice it, where it refuses.
    # A PNG (as any format but JPEG) of that size is decoded whole: ~300 MB for 100 bytes of file.
    assert Image.MAX_IMAGE_PIXELS < 10000 * 10000 < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage, match="decompression bomb"):
        inspect_image(png_claiming_size(10000, 10000), "big.png")


GFX100 = (11648, 8736)  # a Fujifilm GFX100's full-size JPEG: 102 megapixels, past Pillow's warning limit


def medium_format_jpeg(size: tuple[int, int] = GFX100) -> bytes:
    """A real JPEG of a medium-format camera's size (grey with a diagonal line: ~1 MB, made in a fraction of a s)."""
    image = Image.new("L", size, 128)
    for x in range(0, size[0], 97):
        image.putpixel((x, x % size[1]), 0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def jpeg_claiming_size(width: int, height: int, *, progressive: bool = False, padding: int = 0) -> bytes:
    """A valid small JPEG whose frame header (SOF0, or SOF2 when progressive) claims width x height pixels, with
    `padding` bytes of comments (COM segments) after its start: a file as big as a photo of that size."""
    data = bytearray(encoded((16, 16), "JPEG", progressive=progressive))
    at = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    comments = b""
    while len(comments) < padding:
        comments += b"\xff\xfe" + struct.pack(">H", 60_002) + b"x" * 60_000
    return bytes(data[:2] + comments + data[2:])


def pixel_bytes_allocated(inspect) -> int:
    """The bytes Pillow took for pixels while `inspect()` ran, counted in its memory blocks (PIL's core stats)."""
    before = Image.core.get_stats()["allocated_blocks"]
    inspect()
    return (Image.core.get_stats()["allocated_blocks"] - before) * Image.core.get_block_size()


def test_a_medium_format_camera_s_100_megapixel_jpeg_is_an_image_decoded_at_an_eighth_of_its_size() -> None:
    """Photographers with a GFX100, an X2D or a Phase One drop 100-150 MP JPEGs: Pillow only warns about them
    (below twice its limit). Such a JPEG is read whole but decoded at 1/8 scale (one 16 MB block of pixels, not the
    ~100 MB a full decode takes): its facts are its full size."""
    assert Image.MAX_IMAGE_PIXELS < GFX100[0] * GFX100[1] < 2 * Image.MAX_IMAGE_PIXELS
    data, found = medium_format_jpeg(), []

    taken = pixel_bytes_allocated(lambda: found.append(inspect_image(data, "DSCF0001.JPG")))

    assert (found[0].width, found[0].height, found[0].format) == (*GFX100, "JPEG")
    assert taken < GFX100[0] * GFX100[1] / 4  # one grey byte a pixel, decoded whole: 102 MB


def test_a_camera_jpeg_with_a_preview_inside_is_decoded_at_an_eighth_too() -> None:
    """Many cameras write a Multi-Picture (MPO) JPEG, a preview after the photo: Pillow calls its format MPO."""
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 4000), (90, 60, 30)).save(
        buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (160, 120))]
    )
    found = []

    taken = pixel_bytes_allocated(lambda: found.append(inspect_image(buffer.getvalue(), "DSC_0001.JPG")))

    assert (found[0].width, found[0].height, found[0].format) == (6000, 4000, "MPO")
    assert taken < 6000 * 4000 * 4 / 4  # four bytes a pixel (RGB as Pillow holds it), decoded whole: 96 MB
    with pytest.raises(BadImage, match="damaged or incomplete"):
        inspect_image(buffer.getvalue()[: len(buffer.getvalue()) // 3], "DSC_0001.JPG")


def test_a_truncated_100_megapixel_jpeg_is_damaged_or_incomplete_all_the_same() -> None:
    data = medium_format_jpeg()
    for cut in (len(data) // 2, len(data) - 10):
        with pytest.raises(BadImage, match=r"^DSCF0001\.JPG is damaged or incomplete: "):
            inspect_image(data[:cut], "DSCF0001.JPG")


def test_a_jpeg_claiming_more_than_twice_pillow_s_limit_is_a_bomb() -> None:
    with pytest.raises(BadImage, match=r"^huge\.jpg is too large to decode safely \(decompression bomb\?\)"):
        inspect_image(jpeg_claiming_size(20000, 10000), "huge.jpg")


def test_a_jpeg_claiming_100_megapixels_in_a_few_hundred_bytes_is_a_bomb() -> None:
    data = jpeg_claiming_size(*GFX100)
    assert len(data) < 1000
    with pytest.raises(BadImage, match=r"^liar\.jpg is too large to decode safely \(decompression bomb\?\)"):
        inspect_image(data, "liar.jpg")


def test_a_progressive_jpeg_past_the_warning_limit_is_a_bomb() -> None:
    """Decoded at 1/8, a progressive JPEG still takes a full-size coefficient buffer (~850 MB for 144 MP): only a
    baseline one is let past Pillow's warning."""
    data = jpeg_claiming_size(*GFX100, progressive=True, padding=GFX100[0] * GFX100[1] // 500)
    assert len(data) * 1_000 > GFX100[0] * GFX100[1]  # big enough to hold its pixels as a baseline one could
    with pytest.raises(BadImage, match=r"^p\.jpg is too large to decode safely \(decompression bomb\?\)"):
        inspect_image(data, "p.jpg")


def test_a_24_megapixel_jpeg_is_decoded_at_an_eighth_of_its_size_too() -> None:
    """Every JPEG past DRAFT_PIXELS: a 24-45 MP camera JPEG is ~70-130 MB of pixels decoded whole."""
    data, found = medium_format_jpeg((6000, 4000)), []

    taken = pixel_bytes_allocated(lambda: found.append(inspect_image(data, "IMG_0001.JPG")))
    small = inspect_image(encoded((640, 480)), "small.jpg")

    assert (found[0].width, found[0].height, small.width, small.height) == (6000, 4000, 640, 480)
    assert taken < 6000 * 4000  # one grey byte a pixel, decoded whole: 24 MB in two blocks


def test_a_small_1bit_image_with_huge_dimensions_made_by_pillow_is_a_bomb() -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(BadImage, match="decompression bomb"):
        inspect_image(buffer.getvalue(), "bomb.png")


# -- EXIF --------------------------------------------------------------------------------


def jpeg_with_exif(exif: Image.Exif) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), "white").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_exif_camera_and_original_date_are_read() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "EOS R5"
    exif[ExifTags.Base.DateTime] = "2024:07:01 09:00:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:06:30 18:45:12"
    facts = inspect_image(jpeg_with_exif(exif), "x.jpg")
    assert facts.exif_camera == "Canon EOS R5"
    assert facts.exif_date == "2024:06:30 18:45:12"  # when the photo was taken, not when it was edited


def test_exif_datetime_is_the_fallback_date_and_a_model_alone_is_the_camera() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "iPhone 15"
    exif[ExifTags.Base.DateTime] = "2024:07:01 09:00:00"
    facts = inspect_image(jpeg_with_exif(exif), "x.jpg")
    assert (facts.exif_camera, facts.exif_date) == ("iPhone 15", "2024:07:01 09:00:00")


def test_blank_exif_values_are_absent() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "  "
    exif[ExifTags.Base.Model] = ""
    facts = inspect_image(jpeg_with_exif(exif), "x.jpg")
    assert (facts.exif_camera, facts.exif_date) == (None, None)


# -- read_regular_file -------------------------------------------------------------------


def test_read_regular_file_returns_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read chunk
    (tmp_path / "big.jpg").write_bytes(data)
    assert read_regular_file(tmp_path / "big.jpg") == data
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_regular_file(tmp_path / "empty.jpg") == b""


def test_a_small_file_is_read_without_asking_for_a_megabyte(tmp_path: Path, monkeypatch) -> None:
    """os.read allocates what it is asked for: 1 MB per 20 KB image was an mmap and page faults per file
    (read 52 us -> 14 us a file); a file that grows while read is still read to its end."""
    data = os.urandom(20_000)
    (tmp_path / "small.png").write_bytes(data)
    asked: list[int] = []
    real_read = os.read

    def recording_read(descriptor: int, size: int) -> bytes:
        asked.append(size)
        return real_read(descriptor, size)

    monkeypatch.setattr(os, "read", recording_read)
    assert read_regular_file(tmp_path / "small.png") == data
    assert asked and max(asked) <= 1 << 16
    assert read_regular_file(tmp_path / "small.png", limit=100) == data[:100]

    growing = tmp_path / "growing.png"
    growing.write_bytes(b"a" * 1000)

    def growing_read(descriptor: int, size: int) -> bytes:
        chunk = real_read(descriptor, size)
        if chunk and len(growing.read_bytes()) < 200_000:
            with open(growing, "ab") as file:  # the writer goes on after the size was taken
                file.write(b"b" * 100_000)
        return chunk

    monkeypatch.setattr(os, "read", growing_read)
    assert read_regular_file(growing) == growing.read_bytes()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(read_regular_file(fifo))
        except BaseException as error:  # noqa: BLE001 - checked below
            outcome.append(error)

    thread = threading.Thread(target=read, name="fifo-reader", daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():  # release the blocked open so no thread is left behind, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=5)
        pytest.fail("read_regular_file blocked on a FIFO")
    [result] = outcome
    assert isinstance(result, NotRegularFile)
    assert (result.strerror, result.filename) == ("not a regular file", str(fifo))


def test_a_directory_named_like_an_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(NotRegularFile, match="not a regular file"):
        read_regular_file(tmp_path / "x.jpg")


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    write_image(outside)
    link = tmp_path / "link.jpg"
    link.symlink_to(outside)
    with pytest.raises(OSError):
        read_regular_file(link)


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "gone.jpg")


def test_sha256_of_is_the_hex_digest() -> None:
    assert sha256_of(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _advised(monkeypatch) -> list[tuple[str, int, int, int]]:
    """What read_ahead asks the kernel for: (path, offset, length, advice) per call."""
    calls: list[tuple[str, int, int, int]] = []

    def record(descriptor: int, offset: int, length: int, advice: int) -> None:
        calls.append((os.readlink(f"/proc/self/fd/{descriptor}"), offset, length, advice))

    monkeypatch.setattr(os, "posix_fadvise", record)
    return calls


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this system")
def test_read_ahead_asks_for_the_start_of_regular_files_only_and_never_blocks(tmp_path: Path, monkeypatch) -> None:
    """A first start reads images that are on disk: asked for a chunk at a time, the kernel merges the reads. Only
    regular files are opened for that (as read_regular_file opens them), a link is not followed, a FIFO does not
    block, and a big file is asked for by its first READ_AHEAD_BYTES only."""
    from i2vd.core import images

    small, big = tmp_path / "small.png", tmp_path / "big.png"
    small.write_bytes(b"x" * 300)
    big.write_bytes(b"y" * (images.READ_AHEAD_BYTES + 4096))
    (tmp_path / "link.png").symlink_to(small)
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.png").mkdir()
    calls = _advised(monkeypatch)
    names = ["small.png", "link.png", "fifo.png", "folder.png", "gone.png", "big.png"]
    images.read_ahead([str(tmp_path / name) for name in names])
    assert calls == [
        (str(small), 0, 300, os.POSIX_FADV_WILLNEED),
        (str(big), 0, images.READ_AHEAD_BYTES, os.POSIX_FADV_WILLNEED),
    ]
    assert read_regular_file(small) == b"x" * 300  # nothing was read or changed
