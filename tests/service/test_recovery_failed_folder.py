"""A job failed by crash-loop recovery ("interrupted N times": the file crashed the daemon each time) is a failure
like any other: with `on_failure: move` its source goes into `.i2vd-failed/` with its error file, so the next start
does not pick the same file up again from the hot folder's view of a photographer, and `i2vd retry` brings it back.
"""

from __future__ import annotations

from pathlib import Path

from i2vd.config.load import load_config
from i2vd.ingest.intake import Intake
from i2vd.service.daemon import Daemon
from i2vd.store.journal import JobState, Journal, journal_path
from tests.end_to_end.harness import write_config
from tests.support.fakes import write_image


def test_a_job_failed_by_crash_loop_recovery_is_moved_into_the_failed_folder(tmp_path: Path):
    path = write_config(
        tmp_path,
        None,
        watch=[{"path": str(tmp_path / "in"), "settle_seconds": 0.5, "on_failure": "move"}],
        retry={"attempts": 2, "max_interruptions": 2},
    )
    config = load_config(path)
    source = tmp_path / "in" / "shoot" / "crashes.jpg"
    source.parent.mkdir(parents=True)
    write_image(source)
    journal = Journal(journal_path(config))
    try:
        job = Intake(config, journal).consider(source, config.watch[0]).job
        assert journal.claim_next("a daemon that died", 600).id == job.id
        journal.recover_running(config.retry.max_interruptions)  # its first crash: back in the queue
        assert journal.claim_next("a daemon that died again", 600).id == job.id
    finally:
        journal.close()

    daemon = Daemon(config)
    daemon.start()
    try:
        failed = daemon.journal.job(job.id)
        assert failed.state is JobState.FAILED and "interrupted 2 times" in failed.last_error
        moved = tmp_path / "in" / ".i2vd-failed" / "shoot" / "crashes.jpg"
        assert moved.is_file() and not source.exists()
        assert "interrupted 2 times" in (moved.parent / "crashes.jpg.error.txt").read_text(encoding="utf-8")
    finally:
        daemon.request_stop()
        daemon.shutdown()
