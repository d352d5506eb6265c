"""While the daemon runs: an outcome that could not be recorded, and a wall clock stepped back.

The worker rig of test_worker.py: a real journal, the real intake, the fake /predict server
over HTTP, a ManualClock (each idle round advances it by the idle poll).
"""

from __future__ import annotations

import sqlite3
import threading

from i2vd.jobs.worker import IDLE_POLL_SECONDS
from i2vd.store.journal import JobState
from tests.jobs.test_worker import rig  # noqa: F401 - the fixture


def rounds_until_a_job_is_taken(worker, rounds: int) -> int | None:
    """The worker's own loop, one round at a time: how many idle rounds passed before it took a job."""
    stop = threading.Event()
    for round_number in range(rounds):
        if worker.run_once(stop):
            return round_number
        worker._idle()
    return None


def test_a_job_whose_outcome_could_not_be_recorded_returns_to_the_queue_when_its_lease_expires(rig, monkeypatch):  # noqa: F811
    job, _ = rig.add("beach.jpg")
    disk_full = sqlite3.OperationalError("database or disk is full")

    def fail(*arguments, **keywords):
        raise disk_full

    # The state disk is full for a moment: neither "done" nor the fallback "requeue" is recorded.
    monkeypatch.setattr(rig.journal, "mark_done", fail)
    monkeypatch.setattr(rig.journal, "requeue", fail)
    rig.drain()
    assert rig.job(job.id).state is JobState.RUNNING
    assert len(rig.server.requests) == 1
    monkeypatch.undo()  # space is back

    lease_rounds = int(rig.worker.lease_seconds / IDLE_POLL_SECONDS) + 5
    assert rounds_until_a_job_is_taken(rig.worker, lease_rounds) is not None, "the job stayed running until a restart"
    done = rig.job(job.id)
    assert done.state is JobState.DONE
    assert len(rig.server.requests) == 1  # the video written before is recognised: no second render
    assert any("lease expired" in event["message"] for event in rig.journal.events(job.id))


def test_a_worker_still_on_its_job_keeps_it_past_the_lease(rig):  # noqa: F811
    job, _ = rig.add("beach.jpg")
    claimed = rig.journal.claim_next(rig.worker.name, rig.worker.lease_seconds)
    assert claimed.id == job.id
    rig.clock.advance(rig.worker.lease_seconds * 2)  # a slow output share, a clock stepped forward
    assert rounds_until_a_job_is_taken(rig.worker, 3) is None
    assert rig.job(job.id).state is JobState.RUNNING
    rig.journal.release(job.id)


def test_a_wall_clock_step_back_does_not_stall_the_queue_longer_than_the_longest_backoff(rig):  # noqa: F811
    job, _ = rig.add("beach.jpg")
    rig.server.fail_with(500, times=1)
    assert rounds_until_a_job_is_taken(rig.worker, 1) == 0
    assert rig.job(job.id).state is JobState.QUEUED  # the server failed it once: waits 30 s
    rig.clock.advance(-6 * 3600)  # NTP steps a clock that was six hours ahead
    max_backoff = rig.config.retry.max_backoff_seconds
    taken = rounds_until_a_job_is_taken(rig.worker, int(max_backoff / IDLE_POLL_SECONDS) + 5)
    assert taken is not None, "the queue stalled for the size of the step"
    assert rig.job(job.id).state is JobState.DONE
