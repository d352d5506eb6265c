"""A job waiting on a file system's trouble (an output folder that cannot be made, a share that is gone) backs off
like any retry: doubling from retry.initial_backoff_seconds up to max_backoff_seconds, never using an attempt, so
a disk that stays unavailable for a night is not retried (and logged) every initial backoff. The worker rig of
test_worker.py: a real journal, the real intake, the fake /predict server, a ManualClock."""

from __future__ import annotations

import threading

from i2vd.store.journal import JobState
from tests.jobs.test_worker import rig  # noqa: F401 - the fixture

INITIAL = 30.0  # test_worker.make_config's retry: initial_backoff_seconds 30, max_backoff_seconds 600


def one_turn(rig) -> None:  # noqa: F811
    assert rig.worker.run_once(threading.Event()), "the due job was not taken"


def test_a_disk_that_stays_unavailable_is_retried_with_a_growing_backoff_and_no_attempt_used(rig):  # noqa: F811
    rig.config.output_dir.parent.mkdir(parents=True, exist_ok=True)
    rig.config.output_dir.write_text("a file where the output folder should be")  # mkdir fails: ENOTDIR/EEXIST
    job, _ = rig.add("shoot/a.jpg")

    waits = []
    for _ in range(7):
        one_turn(rig)
        waiting = rig.job(job.id)
        assert waiting.state is JobState.QUEUED and waiting.attempts == 0
        assert "cannot write output" in waiting.last_error
        waits.append(waiting.next_attempt_at - rig.clock.now())
        rig.clock.advance(waits[-1])

    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert len(rig.server.requests) == 1  # the video is kept under state_dir meanwhile: asked once

    rig.config.output_dir.unlink()  # the disk is back: done, and the next wait starts from the beginning again
    one_turn(rig)
    assert rig.job(job.id).state is JobState.DONE


def test_the_backoff_starts_again_for_a_job_whose_disk_came_back_before(rig):  # noqa: F811
    rig.config.output_dir.parent.mkdir(parents=True, exist_ok=True)
    rig.config.output_dir.write_text("not a folder")
    first, _ = rig.add("a.jpg")
    for _ in range(3):
        one_turn(rig)
        rig.clock.advance(rig.job(first.id).next_attempt_at - rig.clock.now())
    rig.config.output_dir.unlink()
    one_turn(rig)
    assert rig.job(first.id).state is JobState.DONE

    rig.config.output_dir.rename(rig.config.output_dir.with_name("out-done"))
    rig.config.output_dir.write_text("gone again")
    second, _ = rig.add("b.jpg", color=(10, 200, 30))
    one_turn(rig)
    assert rig.job(second.id).next_attempt_at - rig.clock.now() == INITIAL
