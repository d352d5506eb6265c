"""Bad files in a hot folder: each gets a clear error on its own job, nothing else is held up, nothing hangs."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path

import pytest

from i2vd.ingest.intake import Intake
from i2vd.ingest.loop import IntakeLoop
from i2vd.store.journal import JobState, Journal
from tests.ingest.test_intake_watch import make_config, running
from tests.support.fakes import wait_for, write_image


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 60000 x 60000 pixels: Pillow refuses to decode it."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def hot(tmp_path: Path):
    config = make_config(tmp_path)
    journal = Journal(config.state_dir / "journal.sqlite3")
    yield config, journal, config.watch[0].path
    journal.close()


def errors_by_name(journal: Journal) -> dict[str, str]:
    return {Path(job.rel_path).name: job.last_error for job in journal.jobs(JobState.FAILED)}


def test_every_kind_of_bad_file_fails_its_own_job_and_the_good_ones_go_on(hot, tmp_path):
    config, journal, root = hot
    outside = tmp_path / "secret.jpg"
    write_image(outside, color=(9, 9, 9))
    good = write_image(tmp_path / "staging.jpg", color=(1, 2, 3))
    loop = IntakeLoop(config, Intake(config, journal))
    with running(loop):
        (root / "empty.jpg").write_bytes(b"")
        (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
        (root / "notes.jpg").write_text("this is a shopping list, not a photo")
        (root / "bomb.png").write_bytes(bomb_png())
        (root / "album.jpg").mkdir()
        os.mkfifo(root / "pipe.jpg")
        (root / "escape.jpg").symlink_to(outside)
        (root / "good.jpg").write_bytes(good)
        (root / "album.jpg" / "inside.png").write_bytes(write_image(tmp_path / "inside.png", color=(4, 5, 6)))

        expected = {"empty.jpg", "truncated.jpg", "notes.jpg", "bomb.png", "album.jpg", "pipe.jpg", "escape.jpg"}
        wait_for(
            lambda: set(errors_by_name(journal)) == expected, timeout=20, message="a failed job for every bad file"
        )
        wait_for(lambda: journal.counts()["queued"] == 2, message="the good images are queued")
    errors = errors_by_name(journal)
    assert errors["empty.jpg"] == "empty.jpg is empty (0 bytes)"
    assert errors["truncated.jpg"].startswith("truncated.jpg is damaged or incomplete")
    assert errors["notes.jpg"] == "notes.jpg is not an image Pillow can read"
    assert "decompression bomb" in errors["bomb.png"]
    assert "folder named like an image" in errors["album.jpg"]
    assert errors["pipe.jpg"] == "pipe.jpg is a named pipe (FIFO), not an image file"
    assert (
        errors["escape.jpg"]
        == f"escape.jpg is a symbolic link to {outside}, outside its watch root: never followed or uploaded"
    )
    assert sorted(Path(job.rel_path).name for job in journal.jobs(JobState.QUEUED)) == ["good.jpg", "inside.png"]
    secret = hashlib.sha256(outside.read_bytes()).hexdigest()
    assert all(job.source_sha256 != secret for job in journal.jobs()), "the link's target was read"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its permissions")
def test_an_unreadable_file_fails_with_the_reason_and_is_taken_once_readable(hot):
    config, journal, root = hot
    locked = root / "locked.jpg"
    write_image(locked, color=(7, 7, 7))
    locked.chmod(0)
    loop = IntakeLoop(config, Intake(config, journal))
    with running(loop):
        wait_for(lambda: "locked.jpg" in errors_by_name(journal), timeout=10)
        assert "Permission denied" in errors_by_name(journal)["locked.jpg"]
        locked.chmod(0o644)
        loop.reconcile(0)
        wait_for(lambda: journal.counts()["queued"] == 1, timeout=10, message="readable now: queued")


def dds_named_jpg() -> bytes:
    """A DirectDraw texture with a pixel format Pillow does not implement: it raises NotImplementedError."""
    header = (
        struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44 + struct.pack("<2I", 32, 0x4) + b"ABCD" + b"\0" * 40
    )
    return b"DDS " + header + b"\0" * 64


def test_a_file_on_which_pillow_raises_an_unexpected_exception_fails_alone(hot, tmp_path):
    config, journal, root = hot
    good = write_image(tmp_path / "staging.jpg", color=(3, 2, 1))
    loop = IntakeLoop(config, Intake(config, journal))
    with running(loop):
        (root / "texture.jpg").write_bytes(dds_named_jpg())  # same settle burst as the good ones
        (root / "good.jpg").write_bytes(good)
        (root / "also-good.png").write_bytes(write_image(tmp_path / "other.png", color=(6, 5, 4)))
        wait_for(lambda: "texture.jpg" in errors_by_name(journal), timeout=20, message="the texture fails its own job")
        wait_for(lambda: journal.counts()["queued"] == 2, message="the rest of its burst is queued")
    assert errors_by_name(journal)["texture.jpg"].startswith("texture.jpg cannot be decoded")
    assert "NotImplementedError" in errors_by_name(journal)["texture.jpg"]


def test_iphone_photos_are_not_ignored_without_a_word_their_jobs_fail_saying_to_export_a_jpeg(hot, tmp_path):
    """An iPhone saves HEIC by default: dropped into the hot folder, each fails its own job with what to do,
    instead of nothing happening at all; the JPEG beside them goes on."""
    from tests.core.test_images import heic_photo

    config, journal, root = hot
    loop = IntakeLoop(config, Intake(config, journal))
    with running(loop):
        (root / "IMG_0001.HEIC").write_bytes(heic_photo())
        (root / "IMG_0002.JPG").write_bytes(write_image(tmp_path / "staging.jpg", color=(5, 6, 7)))
        wait_for(lambda: "IMG_0001.HEIC" in errors_by_name(journal), timeout=20, message="the HEIC fails its job")
        wait_for(lambda: journal.counts()["queued"] == 1, message="the JPEG is queued")
    assert "is a HEIC/HEIF photo" in errors_by_name(journal)["IMG_0001.HEIC"]
    assert "export it as JPEG" in errors_by_name(journal)["IMG_0001.HEIC"]


def test_an_image_over_max_image_mb_fails_unread_and_is_taken_once_the_limit_is_raised(hot):
    """A 2 GB layered TIFF read whole into the daemon would fill its memory: a file over watch.max_image_mb fails
    its own job without being read (alone, or in a burst the pool reads ahead), a retry does not read it either,
    and raising the limit (a reload) takes it at the rescan."""
    import dataclasses

    config, journal, root = hot
    small = dataclasses.replace(config, watch=(dataclasses.replace(config.watch[0], max_image_mb=0.05),))
    intake = Intake(small, journal)
    loop = IntakeLoop(small, intake)
    with running(loop):
        write_image(root / "poster.bmp", size=(200, 200))  # uncompressed: 117 KB
        for index in range(20):  # a burst beside it: read ahead by the pool
            write_image(root / f"shot{index:02d}.jpg", color=(index * 10, 9, 9))
        wait_for(lambda: "poster.bmp" in errors_by_name(journal), timeout=30, message="the poster fails its job")
        wait_for(lambda: journal.counts()["queued"] == 20, timeout=30, message="the burst beside it is queued")
        reason = (
            "poster.bmp is 0.1 MB; i2vd reads images up to 0.05 MB (watch.max_image_mb): export a smaller copy,"
            " or raise the limit if your server takes such files"
        )
        assert errors_by_name(journal)["poster.bmp"] == reason
        [failed] = journal.jobs(JobState.FAILED)
        assert [(result.outcome.value, result.reason) for result in intake.retry([failed.id])] == [("failed", reason)]
        loop.reconfigure(config)  # SIGHUP with max_image_mb as it was (256 MB)
        wait_for(lambda: journal.counts()["queued"] == 21, timeout=30, message="the poster taken at the rescan")


def test_a_link_anywhere_in_the_path_is_never_followed_by_intake_enqueue_or_rescans(hot, tmp_path):
    from i2vd.cli.batch import enqueue_paths

    config, journal, root = hot
    outside = tmp_path / "etc"
    outside.mkdir()
    secret = hashlib.sha256(write_image(outside / "passwd.jpg", color=(8, 8, 8))).hexdigest()
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "etc").symlink_to(outside, target_is_directory=True)
    (root / "a" / "up").symlink_to(root / "a", target_is_directory=True)  # a loop
    through_link = root / "a" / "b" / "etc" / "passwd.jpg"

    result = Intake(config, journal).consider(through_link, config.watch[0])
    assert "symbolic link" in result.reason
    assert enqueue_paths(config, journal, [root / "a" / "b" / "etc"])[0][1].outcome.value in ("failed", "known")
    loop = IntakeLoop(config, Intake(config, journal))
    try:
        assert loop.reconcile(0, root / "a" / "b" / "etc") == 0
        assert loop.reconcile(0, root / "a" / "up" / "up") == 0
    finally:
        loop.stop_watches()
    assert all(job.source_sha256 != secret for job in journal.jobs()), "a file behind a link was read"


def test_a_file_whose_examination_raises_anything_else_fails_alone_too(hot, tmp_path):
    from tests.support.fakes import write_text

    config, journal, root = hot
    write_text(root / "odd" / "i2vd.yaml", 'prompt: "{{ 1/0 }}"\n')  # raises ZeroDivisionError while resolving
    (root / "odd" / "a.jpg").write_bytes(write_image(tmp_path / "a.jpg", color=(250, 0, 0)))
    (root / "b.jpg").write_bytes(write_image(tmp_path / "b.jpg", color=(0, 0, 250)))  # same burst
    loop = IntakeLoop(config, Intake(config, journal))
    with running(loop):
        wait_for(lambda: journal.counts()["queued"] == 1, timeout=20, message="the other file of the burst is queued")
        wait_for(lambda: "a.jpg" in errors_by_name(journal), timeout=20, message="the odd one fails its own job")
    assert "ZeroDivisionError" in errors_by_name(journal)["a.jpg"]
