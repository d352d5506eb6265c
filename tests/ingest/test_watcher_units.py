"""The watcher's pure parts, without observer threads: names, candidates, scans, settling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from i2vd.core.clock import ManualClock
from i2vd.ingest.watcher import SettleTracker, is_candidate, is_ignored_name, scan

JUNK = [
    ".hidden.jpg",
    ".i2vd-done",
    "._IMG_01.jpg",
    ".DS_Store",
    "Thumbs.db",
    "@eaDir",
    "#recycle",
    "#snapshot",
    ".@__thumb",
    "IMG_01.jpg.part",
    "IMG_01.jpg.crdownload",
    "IMG_01.tmp",
    "~$report.jpg",
    "desktop.ini",
]
NOT_JUNK = ["IMG_01.jpg", "photo.JPG", "a.b.png", "eaDir", "recycle", "thumbs.jpg", "part.jpg", "x~$.jpg", "tmp.jpg"]


@pytest.mark.parametrize("name", JUNK)
def test_junk_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", NOT_JUNK)
def test_ordinary_names_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)


# -- candidates ---------------------------------------------------------------------------


ROOT = Path("/in")


@pytest.mark.parametrize(
    "relative",
    [
        "a.jpg",
        "a.jpeg",
        "a.png",
        "a.webp",
        "a.bmp",
        "a.tif",
        "a.tiff",
        "A.JPG",
        "b/c/d.PnG",
        "x.y.JPEG",
        "I.HEIC",
        "a.heif",
    ],
)
def test_image_suffixes_are_candidates_whatever_their_case(relative: str) -> None:
    assert is_candidate(ROOT / relative, ROOT)


@pytest.mark.parametrize("relative", ["a.gif", "a.mp4", "a.txt", "a.jpg.yaml", "i2vd.yaml", "a", "jpg", "a.jpg.part"])
def test_other_files_are_not_candidates(relative: str) -> None:
    assert not is_candidate(ROOT / relative, ROOT)


@pytest.mark.parametrize(
    "relative", ["@eaDir/a.jpg", "x/#recycle/a.jpg", ".i2vd-done/a.jpg", "x/.cache/a.jpg", "._a.jpg", "~$a.jpg"]
)
def test_files_in_junk_folders_or_with_junk_names_are_not_candidates(relative: str) -> None:
    assert not is_candidate(ROOT / relative, ROOT)


def test_a_junk_name_above_the_root_does_not_matter() -> None:
    root = Path("/home/me/.shares/in")
    assert is_candidate(root / "a.jpg", root)


def test_files_outside_the_root_are_not_candidates() -> None:
    assert not is_candidate(Path("/elsewhere/a.jpg"), ROOT)
    assert not is_candidate(Path("/inbox/a.jpg"), ROOT)


def test_files_in_excluded_folders_are_not_candidates() -> None:
    excluded = (ROOT / "out",)
    assert not is_candidate(ROOT / "out" / "a.jpg", ROOT, excluded)
    assert not is_candidate(ROOT / "out" / "deep" / "a.jpg", ROOT, excluded)
    assert is_candidate(ROOT / "output" / "a.jpg", ROOT, excluded)
    assert is_candidate(ROOT / "a.jpg", ROOT, excluded)


# -- scan ---------------------------------------------------------------------------------


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_finds_nested_images_and_skips_junk_and_excluded_folders(tmp_path: Path) -> None:
    root = tmp_path / "in"
    wanted = [
        touch(root / "a.jpg"),
        touch(root / "b" / "c.PNG"),
        touch(root / "b" / "d" / "e" / "f.webp", b"longer"),
    ]
    touch(root / "b" / "notes.txt")
    touch(root / "b" / "c.PNG.yaml")
    touch(root / "@eaDir" / "a.jpg" / "SYNOFILE_THUMB_M.jpg")
    touch(root / "#recycle" / "old.jpg")
    touch(root / ".i2vd-done" / "a.jpg")
    touch(root / "b" / "._c.PNG")
    touch(root / "b" / "big.jpg.part")
    touch(root / "out" / "a-video-frame.jpg")
    (root / "empty").mkdir()
    found = dict(scan(root, excluded=(root / "out",)))
    assert sorted(found) == sorted(wanted)
    assert found[root / "b" / "d" / "e" / "f.webp"].st_size == 6


def test_scan_finds_exactly_what_is_candidate_accepts(tmp_path: Path) -> None:
    """scan tests a folder's path once for all its files: the same answer as is_candidate asked file by file."""
    root = tmp_path / "in"
    names = ["a.jpg", "B.JPEG", "c.txt", "._d.jpg", "e.jpg.part", "~$f.png", ".g.png", "h.tmp", "i.webp"]
    folders = ["", "x", "x/y", ".hidden", "@eaDir", "x/#snapshot", "out", "out/deeper", "x/out", "z.jpg", "x/~$tmp"]
    for folder in folders:
        for name in names:
            touch(root / folder / name)
    excluded = (root / "out", root / "x" / "y" / "i.webp")
    oracle = sorted(
        Path(dirpath) / name
        for dirpath, _, files in os.walk(root)
        for name in files
        if is_candidate(Path(dirpath) / name, root, excluded)
    )
    assert sorted(path for path, _ in scan(root, excluded)) == oracle
    assert root / "x" / "out" / "a.jpg" in oracle and root / "z.jpg" / "B.JPEG" in oracle  # only root/out is out


def test_scan_does_not_follow_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "in"
    outside = tmp_path / "outside"
    touch(outside / "secret.jpg")
    touch(root / "real.jpg")
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    (root / "linked.jpg").symlink_to(outside / "secret.jpg")
    (root / "loop").symlink_to(root, target_is_directory=True)
    assert [path for path, _ in scan(root)] == [root / "real.jpg"]


def test_scan_skips_fifos_and_folders_named_like_images(tmp_path: Path) -> None:
    root = tmp_path / "in"
    touch(root / "real.jpg")
    os.mkfifo(root / "pipe.jpg")
    touch(root / "folder.jpg" / "inner.png")
    assert sorted(path for path, _ in scan(root)) == [root / "folder.jpg" / "inner.png", root / "real.jpg"]


def test_scan_of_a_missing_root_finds_nothing(tmp_path: Path) -> None:
    assert list(scan(tmp_path / "missing")) == []


# -- the settle tracker ----------------------------------------------------------------------


SETTLE = 5.0


def settle(_: Path) -> float:
    return SETTLE


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tracker(clock: ManualClock) -> SettleTracker:
    return SettleTracker(clock)


def test_a_file_settles_only_after_settle_seconds_unchanged(
    tmp_path: Path, clock: ManualClock, tracker: SettleTracker
) -> None:
    image = touch(tmp_path / "a.jpg", b"12345")
    tracker.touch(image)
    assert len(tracker) == 1
    assert tracker.settled(settle) == []
    clock.advance(SETTLE - 0.01)
    assert tracker.settled(settle) == []
    clock.advance(0.01)
    info = image.stat()
    assert tracker.settled(settle) == [(image, 5, info.st_mtime_ns)]
    assert len(tracker) == 0
    assert tracker.settled(settle) == []  # handed out once


def test_growth_restarts_the_window(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg", b"first part")
    tracker.touch(image)
    clock.advance(4)
    with open(image, "ab") as file:
        file.write(b", second part")
    assert tracker.settled(settle) == []  # the check itself notices the growth
    clock.advance(4)
    assert tracker.settled(settle) == []  # 8 s after the first sight, only 4 s after the growth
    clock.advance(1)
    [(path, size, _)] = tracker.settled(settle)
    assert (path, size) == (image, len(b"first part, second part"))


def test_a_touch_after_a_change_restarts_the_window(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg", b"1")
    tracker.touch(image)
    clock.advance(4)
    image.write_bytes(b"12")
    tracker.touch(image)
    clock.advance(4)
    assert tracker.settled(settle) == []
    clock.advance(1)
    assert [path for path, _, _ in tracker.settled(settle)] == [image]


def test_a_touch_without_a_change_keeps_the_window(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg")
    tracker.touch(image)
    clock.advance(3)
    tracker.touch(image)  # e.g. an inotify "closed" event after the last write
    clock.advance(2)
    assert [path for path, _, _ in tracker.settled(settle)] == [image]


def test_an_mtime_change_of_the_same_size_restarts_the_window(
    tmp_path: Path, clock: ManualClock, tracker: SettleTracker
) -> None:
    image = touch(tmp_path / "a.jpg", b"aaaa")
    info = image.stat()
    tracker.touch(image)
    clock.advance(4)
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    assert tracker.settled(settle) == []
    clock.advance(5)
    assert [path for path, _, _ in tracker.settled(settle)] == [image]


def test_a_vanished_file_is_dropped(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg")
    tracker.touch(image)
    image.unlink()
    clock.advance(10)
    assert tracker.settled(settle) == []
    assert len(tracker) == 0


def test_touching_a_vanished_file_forgets_it(tmp_path: Path, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg")
    tracker.touch(image)
    image.unlink()
    tracker.touch(image)
    assert len(tracker) == 0
    tracker.touch(tmp_path / "never-there.jpg")
    assert len(tracker) == 0


def test_fifos_folders_and_symlinks_are_never_tracked(
    tmp_path: Path, clock: ManualClock, tracker: SettleTracker
) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "link.jpg").symlink_to(touch(tmp_path / "target.bin"))
    for name in ("pipe.jpg", "folder.jpg", "link.jpg"):
        tracker.touch(tmp_path / name)
    assert len(tracker) == 0
    clock.advance(10)
    assert tracker.settled(settle) == []


def test_forget_drops_a_path(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg")
    tracker.touch(image)
    tracker.forget(image)
    tracker.forget(image)  # twice is fine
    clock.advance(10)
    assert tracker.settled(settle) == []


def test_each_path_gets_its_own_settle_window(tmp_path: Path, clock: ManualClock, tracker: SettleTracker) -> None:
    fast = touch(tmp_path / "fast" / "a.jpg")
    slow = touch(tmp_path / "slow" / "b.jpg")
    tracker.touch(fast)
    tracker.touch(slow)
    clock.advance(2)
    windows = {fast: 1.0, slow: 30.0}
    assert [path for path, _, _ in tracker.settled(windows.__getitem__)] == [fast]
    clock.advance(28)
    assert [path for path, _, _ in tracker.settled(windows.__getitem__)] == [slow]


def test_a_zero_settle_window_hands_out_at_the_next_check(tmp_path: Path, tracker: SettleTracker) -> None:
    image = touch(tmp_path / "a.jpg")
    tracker.touch(image)
    assert [path for path, _, _ in tracker.settled(lambda path: 0.0)] == [image]


def test_link_below_finds_a_linked_folder_at_any_depth_but_not_the_root_itself(tmp_path: Path) -> None:
    from i2vd.ingest.watcher import link_below

    real_root = tmp_path / "real-root"
    (real_root / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (real_root / "a" / "b" / "etc").symlink_to(tmp_path / "outside", target_is_directory=True)
    root = tmp_path / "root"
    root.symlink_to(real_root, target_is_directory=True)  # the operator's own link to the root is fine
    assert link_below(root, root / "a" / "b" / "x.jpg") is None
    assert link_below(root, root / "a" / "b" / "etc" / "passwd.jpg") == root / "a" / "b" / "etc"
    assert link_below(root, root / "a" / "b" / "etc" / "deeper" / "x.jpg") == root / "a" / "b" / "etc"
    assert link_below(None, root / "a" / "b" / "etc" / "x.jpg") == root / "a" / "b" / "etc"
    # The pool asks with the path as text (no Path made per file of a burst): the same answers.
    assert link_below(root, str(root / "a" / "b" / "etc" / "passwd.jpg")) == root / "a" / "b" / "etc"
    assert link_below(root, str(root / "a" / "b" / "x.jpg")) is None
