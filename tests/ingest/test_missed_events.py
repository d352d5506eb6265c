"""Missed events: an inotify queue overflow (watchdog only logs it) triggers a rescan; an exhausted
inotify watch limit falls back to polling. Nothing written meanwhile is missed."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from i2vd.ingest.intake import Intake
from i2vd.ingest.loop import IntakeLoop
from i2vd.ingest.watcher import FolderWatch
from i2vd.store.journal import Journal
from tests.ingest.test_intake_watch import make_config, running
from tests.support.fakes import wait_for, write_image


def test_a_queue_overflow_reported_by_watchdog_makes_the_loop_rescan(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # rescan_seconds 3600: only the overflow can make it look again
    journal = Journal(config.state_dir / "journal.sqlite3")
    loop = IntakeLoop(config, Intake(config, journal))
    try:
        with running(loop):
            write_image(config.watch[0].path / "seen.jpg", color=(1, 1, 1))
            wait_for(lambda: journal.counts()["queued"] == 1)
            loop.watches[0].stop()  # from here on no event reaches the loop: as if the kernel had dropped them
            write_image(config.watch[0].path / "unseen.jpg", color=(2, 2, 2))
            logging.getLogger("watchdog.observers.inotify_c").warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            wait_for(lambda: journal.counts()["queued"] == 2, message="the rescan found the file whose event was lost")
    finally:
        journal.close()


def test_an_exhausted_watch_limit_falls_back_to_polling_and_says_so(tmp_path: Path, caplog) -> None:
    root = tmp_path / "in"
    root.mkdir()
    seen: list[Path] = []

    def observers(polling: bool):
        if not polling:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return PollingObserver(timeout=0.1)

    watch = FolderWatch(root, False, seen.append, lambda folder: None, make_observer=observers)
    try:
        assert watch.start()
        assert (watch.method, watch.reason) == ("polling", "inotify failed: inotify watch limit reached")
        assert "falling back to polling" in caplog.text
        write_image(root / "polled.jpg")
        wait_for(lambda: root / "polled.jpg" in seen, message="the polling observer sees new files")
    finally:
        watch.stop()


def test_a_dead_inotify_watcher_is_replaced_by_polling(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    journal = Journal(config.state_dir / "journal.sqlite3")
    loop = IntakeLoop(config, Intake(config, journal))
    try:
        with running(loop):
            watch = loop.watches[0]
            wait_for(lambda: watch.active)
            assert isinstance(watch._observer, Observer)
            for emitter in list(watch._observer.emitters):
                emitter.stop()  # what happens when adding a watch for a new folder fails
                emitter.join(timeout=5)
            wait_for(lambda: watch.method == "polling" and watch.active, message="the loop noticed and polls instead")
            write_image(config.watch[0].path / "later.jpg", color=(3, 3, 3))
            wait_for(lambda: journal.counts()["queued"] == 1, timeout=10)
    finally:
        journal.close()
