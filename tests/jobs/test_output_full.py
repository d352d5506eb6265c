"""Output on a full or read-only disk: the job waits and retries (no attempt used), no partial video
is left, and it completes once there is room, from the video kept under state_dir: the server is
asked once. Uses a real small tmpfs (skipped where mounting is not allowed)."""

from __future__ import annotations

import errno
import subprocess
import threading
from pathlib import Path

import pytest

from i2vd.config.load import parse_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.jobs.worker import build_workers
from i2vd.render import mp4
from i2vd.store.journal import JobState, Journal
from tests.support.fakes import write_image


@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "out"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of the file system."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


@pytest.fixture
def rig(tmp_path: Path, small_disk: Path, fake_server):
    (tmp_path / "in").mkdir()
    config = parse_config(
        f"state_dir: {tmp_path / 'state'}\noutput_dir: {small_disk}\n"
        f"server: {{kind: predict, url: '{fake_server.url}', timeout_seconds: 10}}\ngpu: {{enabled: false}}\n"
        f"retry: {{attempts: 2, initial_backoff_seconds: 5}}\nwatch: [{{path: {tmp_path / 'in'}}}]\n"
    )
    clock = ManualClock()
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    [worker] = build_workers(config, journal, clock)
    image = config.watch[0].path / "photo.jpg"
    write_image(image, color=(5, 6, 7))
    assert Intake(config, journal).consider(image, config.watch[0]).outcome is Outcome.QUEUED
    yield config, journal, worker, clock
    worker.backend.close()
    journal.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.name != "filler")


def test_a_full_disk_makes_the_job_wait_without_using_an_attempt(rig, small_disk, fake_server):
    config, journal, worker, clock = rig
    filler = fill(small_disk)
    assert worker.run_once(threading.Event())
    [job] = journal.jobs()
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert "No space left on device" in job.last_error
    assert leftovers(small_disk) == [], "a partial video or record was left"
    assert len(list((config.state_dir / "incoming").glob("*.mp4"))) == 1, "the received video is kept under state_dir"
    filler.unlink()
    clock.advance(5)
    assert worker.run_once(threading.Event())
    [job] = journal.jobs()
    assert job.state is JobState.DONE
    assert leftovers(small_disk) == ["photo.mp4", "photo.mp4.json"]
    assert len(fake_server.requests) == 1, "the server was asked twice for the same video"
    assert mp4.probe(small_disk / "photo.mp4").frames > 0
    assert list((config.state_dir / "incoming").iterdir()) == [], "the kept video was not removed once placed"


def test_a_video_kept_for_a_full_disk_survives_a_restart(rig, small_disk, fake_server):
    config, journal, worker, clock = rig
    filler = fill(small_disk)
    assert worker.run_once(threading.Event())
    worker.backend.close()
    filler.unlink()
    [restarted] = build_workers(config, journal, clock)  # a new daemon: cleans unfinished replies, keeps this one
    try:
        clock.advance(5)
        assert restarted.run_once(threading.Event())
    finally:
        restarted.backend.close()
    assert journal.jobs()[0].state is JobState.DONE
    assert len(fake_server.requests) == 1


def test_a_read_only_output_makes_the_job_wait_and_it_completes_when_writable_again(rig, small_disk):
    config, journal, worker, clock = rig
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert worker.run_once(threading.Event())
    [job] = journal.jobs()
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert "Read-only file system" in job.last_error
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    clock.advance(5)
    assert worker.run_once(threading.Event())
    assert journal.jobs()[0].state is JobState.DONE


def test_room_for_part_of_the_video_is_still_the_disk_s_fault(rig, small_disk, mp4_bytes):
    config, journal, worker, clock = rig
    filler = fill(small_disk)
    filler.write_bytes(b"\0" * (filler.stat().st_size - len(mp4_bytes) // 2))  # room for half the video
    assert worker.run_once(threading.Event())
    [job] = journal.jobs()
    assert (job.state, job.attempts) == (JobState.QUEUED, 0), job.last_error
    assert "No space left on device" in job.last_error
    assert leftovers(small_disk) == []
