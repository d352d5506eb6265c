"""A hot folder that goes away (an unmounted share) is not a deletion: nothing is dropped,
the watch comes back with the folder, and files added meanwhile are found."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from i2vd.core.clock import Clock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.ingest.loop import IntakeLoop
from i2vd.jobs.worker import build_workers
from i2vd.store.journal import JobState, Journal
from tests.ingest.test_intake_watch import make_config, running
from tests.support.fakes import wait_for, write_image


def test_a_root_that_vanishes_and_returns_is_watched_again_and_rescanned(tmp_path: Path, caplog) -> None:
    config = make_config(tmp_path)
    journal = Journal(config.state_dir / "journal.sqlite3")
    root = config.watch[0].path
    away = tmp_path / "unmounted"
    loop = IntakeLoop(config, Intake(config, journal))
    caplog.set_level(logging.INFO, logger="i2vd.intake")
    try:
        with running(loop):
            write_image(root / "before.jpg", color=(1, 1, 1))
            wait_for(lambda: journal.counts()["queued"] == 1, message="the first file is queued")
            root.rename(away)  # the share is unmounted
            wait_for(lambda: "is gone (unmounted share?)" in caplog.text, message="the loss is noticed and said")
            assert journal.counts()["queued"] == 1, "nothing is dropped while the share is away"
            write_image(away / "meanwhile.jpg", color=(2, 2, 2))  # written on the NAS while we could not see it
            away.rename(root)  # mounted again
            wait_for(lambda: journal.counts()["queued"] == 2, message="the file added meanwhile is found by the rescan")
            write_image(root / "after.jpg", color=(3, 3, 3))
            wait_for(lambda: journal.counts()["queued"] == 3, message="events flow again from the new watch")
        assert "is back: watching it anew and rescanning" in caplog.text
    finally:
        journal.close()


def test_a_job_whose_share_is_offline_waits_without_using_an_attempt(tmp_path: Path, fake_server) -> None:
    config = make_config(tmp_path)
    [entry] = config.servers
    config = dataclasses.replace(
        config, servers=(dataclasses.replace(entry, server=dataclasses.replace(entry.server, url=fake_server.url)),)
    )
    journal = Journal(config.state_dir / "journal.sqlite3")
    root = config.watch[0].path
    image = root / "shot.jpg"
    write_image(image, color=(4, 4, 4))
    assert Intake(config, journal).consider(image, config.watch[0]).outcome is Outcome.QUEUED
    root.rename(tmp_path / "unmounted")
    [worker] = build_workers(config, journal, Clock())
    stop = threading.Event()
    try:
        assert worker.run_once(stop)
        [job] = journal.jobs()
        assert (job.state, job.attempts) == (JobState.QUEUED, 0)
        assert "is offline" in job.last_error
        assert fake_server.requests == []
        (tmp_path / "unmounted").rename(root)
        wait_for(
            lambda: worker.run_once(stop) and journal.jobs()[0].state is JobState.DONE,
            timeout=10,
            message="done once the share is back",
        )
    finally:
        worker.backend.close()
        journal.close()


def mountinfo_line(mount_point: Path, fs_type: str = "cifs") -> str:
    return f"36 25 0:45 / {mount_point} rw,relatime shared:1 - {fs_type} //nas/photos rw\n"


def test_a_root_mounted_after_start_then_unmounted_is_offline_not_deleted(tmp_path: Path, fake_server) -> None:
    from i2vd.core.clock import ManualClock
    from i2vd.core.mounts import MountMemory
    from i2vd.jobs.worker import Worker
    from i2vd.render.backends.predict import PredictBackend
    from i2vd.render.gpu import VramGate

    config = make_config(tmp_path)
    root = config.watch[0].path
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(mountinfo_line(Path("/"), "ext4"))  # at start the root is a plain folder
    clock = ManualClock()
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    backend = PredictBackend(fake_server.url, config.server.path, timeout_seconds=10, connect_timeout_seconds=5)
    worker = Worker(
        config,
        journal,
        backend,
        VramGate.from_config(config.gpu, clock),
        clock,
        name="w",
        mounts=MountMemory(config.state_dir, mountinfo),
    )
    loop = IntakeLoop(config, Intake(config, journal), clock, mounts=MountMemory(config.state_dir, mountinfo))
    try:
        loop.tick()
        mountinfo.write_text(mountinfo_line(Path("/"), "ext4") + mountinfo_line(root))  # the share is mounted
        image = root / "on-the-share.jpg"
        write_image(image, color=(5, 5, 5))
        clock.advance(60)
        loop.tick()
        Intake(config, journal).consider(image, config.watch[0])  # queued (unless the watch already took it)
        assert [job.state for job in journal.jobs()] == [JobState.QUEUED]
        mountinfo.write_text(mountinfo_line(Path("/"), "ext4"))  # unmounted: an empty mount point folder is left
        image.unlink()
        assert worker.run_once(threading.Event())
        [job] = journal.jobs()
        assert (job.state, job.attempts) == (JobState.QUEUED, 0), job.last_error
        assert "is offline" in job.last_error
        assert fake_server.requests == []
    finally:
        loop.stop_watches()
        backend.close()
        journal.close()
