"""Output naming and the atomic video + record write, with real MP4s and ffmpeg."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from i2vd.render import mp4
from i2vd.render.output import (
    TEMP_MARK,
    candidates,
    choose_path,
    default_video_path,
    is_complete,
    record_key,
    record_path,
    remove_temp_files,
    temp_path,
    write_video,
)

KEY = "a" * 64
OTHER_KEY = "b" * 64
COMMENT = 'profile=beach\nprompt="Waves crashing, camera panning left"\nsha256=' + "c" * 64


def record_for(key: str = KEY, **extra) -> dict:
    return {"idempotency_key": key, "source_path": "/in/beach/img.jpg", "prompt": "Waves", **extra}


def write_record(video: Path, key: str) -> None:
    record_path(video).write_text(json.dumps({"idempotency_key": key}), encoding="utf-8")


def temp_files(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.rglob("*") if TEMP_MARK in entry.name)


# -- naming ----------------------------------------------------------------------------


def test_default_video_path_mirrors_the_relative_folder(tmp_path: Path) -> None:
    assert default_video_path(tmp_path, "beach/2024/IMG_01.jpg", None) == tmp_path / "beach" / "2024" / "IMG_01.mp4"
    assert default_video_path(tmp_path, "top.png", None) == tmp_path / "top.mp4"
    assert default_video_path(tmp_path, "a/my.holiday.photo.jpeg", None) == tmp_path / "a" / "my.holiday.photo.mp4"


def test_default_video_path_honours_the_output_name(tmp_path: Path) -> None:
    assert (
        default_video_path(tmp_path, "products/123.jpg", "sku_123_rotate.mp4")
        == tmp_path / "products" / "sku_123_rotate.mp4"
    )


def test_record_path_is_the_video_name_plus_json(tmp_path: Path) -> None:
    assert record_path(tmp_path / "a.mp4") == tmp_path / "a.mp4.json"


def test_candidates_add_a_numbered_suffix(tmp_path: Path) -> None:
    names = candidates(tmp_path / "clip.mp4")
    assert [next(names).name for _ in range(4)] == ["clip.mp4", "clip-1.mp4", "clip-2.mp4", "clip-3.mp4"]


def test_choose_path_takes_the_first_free_name(tmp_path: Path) -> None:
    claimed: list[Path] = []
    chosen = choose_path(tmp_path / "clip.mp4", KEY, lambda path: claimed.append(path) or True)
    assert chosen == tmp_path / "clip.mp4"
    assert claimed == [chosen]


def test_choose_path_skips_a_video_of_another_job_on_disk(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"someone's video")
    write_record(tmp_path / "clip.mp4", OTHER_KEY)
    (tmp_path / "clip-1.mp4").write_bytes(b"a video without a record")
    write_record(tmp_path / "clip-2.mp4", OTHER_KEY)  # a record alone also holds its name
    claimed: list[Path] = []
    chosen = choose_path(tmp_path / "clip.mp4", KEY, lambda path: claimed.append(path) or True)
    assert chosen == tmp_path / "clip-3.mp4"
    assert claimed == [chosen]  # taken names are never even offered to the journal


def test_choose_path_skips_names_another_job_claimed(tmp_path: Path) -> None:
    owned_by_others = {tmp_path / "clip.mp4", tmp_path / "clip-1.mp4"}
    chosen = choose_path(tmp_path / "clip.mp4", KEY, lambda path: path not in owned_by_others)
    assert chosen == tmp_path / "clip-2.mp4"


def test_choose_path_reuses_a_path_whose_record_carries_this_jobs_key(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"this job's video, written before a crash")
    write_record(tmp_path / "clip.mp4", KEY)
    assert choose_path(tmp_path / "clip.mp4", KEY, lambda path: True) == tmp_path / "clip.mp4"
    write_record(tmp_path / "other.mp4", KEY)  # the record went first; the crash came before the video
    assert choose_path(tmp_path / "other.mp4", KEY, lambda path: True) == tmp_path / "other.mp4"


def test_record_key_tolerates_missing_and_broken_records(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    assert record_key(video) is None
    record_path(video).write_text("{not json", encoding="utf-8")
    assert record_key(video) is None
    record_path(video).write_text("[1, 2]", encoding="utf-8")
    assert record_key(video) is None
    write_record(video, KEY)
    assert record_key(video) == KEY


# -- writing ---------------------------------------------------------------------------


def test_write_video_places_the_video_and_its_record(tmp_path: Path, mp4_bytes: bytes) -> None:
    final = tmp_path / "out" / "beach" / "img.mp4"
    write_video(final, 7, mp4_bytes, record_for(prompt="Vagues qui déferlent"), COMMENT)
    assert mp4.probe(final).frames == 8
    record = json.loads(record_path(final).read_text(encoding="utf-8"))
    assert record["idempotency_key"] == KEY
    assert record["prompt"] == "Vagues qui déferlent"
    assert is_complete(final, KEY)
    assert sorted(entry.name for entry in final.parent.iterdir()) == ["img.mp4", "img.mp4.json"]


def test_the_video_carries_the_comment_in_its_container(tmp_path: Path, mp4_bytes: bytes) -> None:
    final = tmp_path / "img.mp4"
    write_video(final, 7, mp4_bytes, record_for(), COMMENT)
    assert mp4.read_comment(final) == COMMENT


def test_write_video_replaces_a_previous_attempt_of_the_same_job(tmp_path: Path, mp4_bytes: bytes) -> None:
    final = tmp_path / "img.mp4"
    write_video(final, 7, mp4_bytes, record_for(attempts=1), "first")
    write_video(final, 7, mp4_bytes, record_for(attempts=2), "second")
    assert json.loads(record_path(final).read_text(encoding="utf-8"))["attempts"] == 2
    assert mp4.read_comment(final) == "second"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("video", [b"\x00not an mp4 at all" * 64, b""], ids=["garbage", "empty"])
def test_a_reply_that_is_not_a_video_leaves_nothing(tmp_path: Path, video: bytes) -> None:
    final = tmp_path / "out" / "img.mp4"
    with pytest.raises(mp4.VideoError):
        write_video(final, 7, video, record_for(), COMMENT)
    assert not final.exists()
    assert not record_path(final).exists()
    assert list(final.parent.iterdir()) == []


def test_a_truncated_video_leaves_nothing(tmp_path: Path, mp4_bytes: bytes) -> None:
    final = tmp_path / "img.mp4"
    with pytest.raises(mp4.VideoError):
        write_video(final, 7, mp4_bytes[: len(mp4_bytes) // 3], record_for(), COMMENT)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_made_raises_oserror_and_leaves_nothing(tmp_path: Path, mp4_bytes: bytes) -> None:
    blocker = tmp_path / "out"
    blocker.write_bytes(b"a file where the output folder should be")
    final = blocker / "beach" / "img.mp4"
    with pytest.raises(OSError):
        write_video(final, 7, mp4_bytes, record_for(), COMMENT)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["out"]
    assert blocker.read_bytes() == b"a file where the output folder should be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_folder_raises_oserror_and_leaves_nothing(tmp_path: Path, mp4_bytes: bytes) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OSError):
            write_video(folder / "img.mp4", 7, mp4_bytes, record_for(), COMMENT)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_a_failed_final_rename_leaves_no_record(tmp_path: Path, mp4_bytes: bytes) -> None:
    final = tmp_path / "img.mp4"
    final.mkdir()  # the last step, renaming the video into place, fails (IsADirectoryError)
    with pytest.raises(OSError):
        write_video(final, 7, mp4_bytes, record_for(), COMMENT)
    assert temp_files(tmp_path) == []
    assert not record_path(final).exists()


# -- completion and stray temp files ----------------------------------------------------------


def test_is_complete_needs_the_video_and_a_record_with_the_key(tmp_path: Path) -> None:
    video = tmp_path / "img.mp4"
    assert not is_complete(video, KEY)
    write_record(video, KEY)
    assert not is_complete(video, KEY)  # the record alone: the crash came before the video
    video.write_bytes(b"video")
    assert is_complete(video, KEY)
    assert not is_complete(video, OTHER_KEY)
    record_path(video).unlink()
    assert not is_complete(video, KEY)
    video.unlink()
    video.mkdir()
    write_record(video, KEY)
    assert not is_complete(video, KEY)  # a folder is not a video


def test_temp_names_carry_the_job_id_and_are_hidden(tmp_path: Path) -> None:
    temp = temp_path(tmp_path / "img.mp4", 42)
    assert temp.parent == tmp_path
    assert temp.name.startswith(".img.mp4")
    assert temp.name.endswith(f"{TEMP_MARK}42.tmp")


def test_remove_temp_files_removes_only_that_jobs_temp_files(tmp_path: Path) -> None:
    final = tmp_path / "img.mp4"
    mine = [
        temp_path(final, 7),
        temp_path(record_path(final), 7),
        final.with_name(f".{final.name}.raw{TEMP_MARK}7.tmp"),
        temp_path(tmp_path / "another.mp4", 7),
    ]
    others = [
        temp_path(final, 17),
        temp_path(final, 70),
        temp_path(final, 8),
        tmp_path / f"visible{TEMP_MARK}7.tmp",  # not hidden: not one of ours
        tmp_path / "img.mp4",
        tmp_path / "img.mp4.json",
    ]
    for path in mine + others:
        path.write_bytes(b"x")
    removed = remove_temp_files(tmp_path, 7)
    assert sorted(removed) == sorted(mine)
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_remove_temp_files_in_a_missing_folder_removes_nothing(tmp_path: Path) -> None:
    assert remove_temp_files(tmp_path / "missing", 7) == []


def test_temp_files_of_a_crashed_attempt_are_cleared_and_the_next_write_succeeds(
    tmp_path: Path, mp4_bytes: bytes
) -> None:
    final = tmp_path / "img.mp4"
    temp_path(final, 7).write_bytes(mp4_bytes[:100])  # what a kill -9 mid-write leaves
    assert remove_temp_files(tmp_path, 7) == [temp_path(final, 7)]
    write_video(final, 7, mp4_bytes, record_for(), COMMENT)
    assert is_complete(final, KEY)
    assert temp_files(tmp_path) == []


def test_a_retried_job_with_new_settings_takes_back_its_own_video_but_not_a_namesake(tmp_path: Path) -> None:
    first = tmp_path / "shore.mp4"
    first.write_bytes(b"old video")
    record_path(first).write_text(json.dumps({"idempotency_key": "old-key", "job_id": 7, "source": {"sha256": "abc"}}))
    claimed: list[Path] = []
    assert choose_path(first, "new-key", lambda path: claimed.append(path) or True, job=(7, "abc")) == first
    # the same id from another journal, for another image: not ours
    assert choose_path(first, "new-key", lambda path: True, job=(7, "def")) == tmp_path / "shore-1.mp4"
