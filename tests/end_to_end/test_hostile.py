"""Crashes at any moment and writers that behave like Samba: every image still ends with exactly
one video and one record, and only finished files reach the server."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

from tests.end_to_end.harness import journal_counts, videos, write_config
from tests.end_to_end.test_daemon import photo_bytes
from tests.support.fakes import wait_for

IMAGES = 8


def events_count(state: Path) -> int:
    path = state / "journal.sqlite3"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as db:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".i2vd-" in path.name] if folder.exists() else []


def test_kill_9_again_and_again_still_gives_exactly_one_video_and_record_per_image(
    tmp_path, fake_server, daemon_factory
):
    fake_server.latency_seconds = 0.3
    config = write_config(
        tmp_path, fake_server.url, retry={"attempts": 3, "initial_backoff_seconds": 0.1, "max_interruptions": 10}
    )
    contents = {
        f"shot_{index}.jpg": photo_bytes(tmp_path / f"s{index}.jpg", seed=700 + index) for index in range(IMAGES)
    }
    for name, data in contents.items():
        (tmp_path / "in" / name).write_bytes(data)
    state, out = tmp_path / "state", tmp_path / "out"
    before = {"events": 0, "done": 0}  # where the journal stood when this round's daemon started
    kill_points = [
        ("right after READY", lambda: True),
        ("while a request is on the server", lambda: fake_server.in_flight >= 1),
        ("as soon as the journal moves", lambda: events_count(state) > before["events"]),
        (
            "while a video is being written",
            lambda: temp_files(out) or journal_counts(state).get("done", 0) > before["done"],
        ),
        ("right after a job is done", lambda: journal_counts(state).get("done", 0) > before["done"]),
        ("while a request is on the server again", lambda: fake_server.in_flight >= 1),
    ]
    for name, ready_to_kill in kill_points:
        before.update(events=events_count(state), done=journal_counts(state).get("done", 0))
        if before["done"] == IMAGES:
            break
        daemon = daemon_factory(config).start()
        wait_for(
            lambda ready_to_kill=ready_to_kill: ready_to_kill() or journal_counts(state).get("done", 0) == IMAGES,
            timeout=30,
            message=f"kill point: {name}",
        )
        daemon.kill()

    final = daemon_factory(config).start()
    wait_for(
        lambda: journal_counts(state).get("done") == IMAGES,
        timeout=60,
        message=f"all done at last; log:\n{final.log()}",
    )
    assert final.stop() == 0

    made = videos(out)
    assert sorted(video.name for video in made) == sorted(name.replace(".jpg", ".mp4") for name in contents)
    for video in made:
        record = json.loads(video.with_name(video.name + ".json").read_text())
        assert record["source"]["sha256"] == hashlib.sha256(contents[video.stem + ".jpg"]).hexdigest()
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [v.name for v in made] + [v.name + ".json" for v in made]
    )
    assert temp_files(out) == [], "temp files left behind"
    assert journal_counts(state) == {"queued": 0, "running": 0, "parked": 0, "done": IMAGES, "failed": 0}


def test_a_samba_style_writer_preallocating_then_filling_slowly_sends_only_the_finished_image(
    tmp_path, fake_server, daemon_factory
):
    # The writer pauses 0.2 s between chunks; a settle window of 2 s keeps that pace well inside it on a loaded
    # machine too (a pause longer than the window would be a finished-looking file, by definition).
    config = write_config(
        tmp_path, fake_server.url, watch=[{"path": str(tmp_path / "in"), "settle_seconds": 2, "rescan_seconds": 30}]
    )
    daemon = daemon_factory(config).start()
    data = photo_bytes(tmp_path / "big.jpg", seed=900, size=(320, 240))
    target = tmp_path / "in" / "from_windows.jpg"
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(descriptor, 0, len(data))  # full size at once, all zeros: as smbd does
        os.ftruncate(descriptor, len(data))
        chunk = len(data) // 6 + 1
        for start in range(0, len(data), chunk):
            os.pwrite(descriptor, data[start : start + chunk], start)
            os.fsync(descriptor)
            time.sleep(0.2)  # the slow client's pace (shorter than the settle window), not a wait for a result
    finally:
        os.close(descriptor)
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 1, timeout=30, message=f"done; log:\n{daemon.log()}"
    )
    assert [request.image_sha256 for request in fake_server.requests] == [hashlib.sha256(data).hexdigest()]
    assert daemon.stop() == 0
