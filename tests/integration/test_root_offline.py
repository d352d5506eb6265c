"""A hot folder that goes away (an unmounted share) is not a deletion: nothing is dropped,
the watch comes back with the folder, and files added meanwhile are found."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

from i2vd.clock import Clock
from i2vd.intake import Intake, IntakeLoop, Outcome
from i2vd.journal import JobState, Journal
from i2vd.worker import build_workers
from tests.fakes import wait_for, write_image
from tests.integration.test_intake_watch import make_config, running


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
    config = dataclasses.replace(config, servers=(dataclasses.replace(entry, server=dataclasses.replace(entry.server, url=fake_server.url)),))
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
        wait_for(lambda: worker.run_once(stop) and journal.jobs()[0].state is JobState.DONE, timeout=10, message="done once the share is back")
    finally:
        worker.backend.close()
        journal.close()
