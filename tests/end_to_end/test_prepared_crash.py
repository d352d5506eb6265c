"""kill -9 while one job is on the server and the next is prepared beside it (jobs/prepare.py).

Exactly-once: after a restart every image has one video; the prepared job, never sent, is sent
once, and no interruption is counted against it (the daemon did not die of it).
"""

from __future__ import annotations

from pathlib import Path

from i2vd.store.journal import JobState, Journal
from tests.end_to_end.harness import journal_counts, videos, write_config
from tests.end_to_end.test_daemon import photo_bytes
from tests.support.fakes import FakePredictServer, wait_for


def running_jobs(state_dir: Path) -> list[tuple[int, bool]]:
    """(id, prepared): a running job with no started_at was claimed beside a call and not yet sent."""
    journal = Journal(state_dir / "journal.sqlite3")
    try:
        return [(job.id, job.started_at is None) for job in journal.jobs() if job.state is JobState.RUNNING]
    finally:
        journal.close()


def test_kill_9_with_a_prepared_job_then_restart_sends_it_once_and_counts_no_interruption(
    tmp_path, fake_server: FakePredictServer, daemon_factory
):
    config = write_config(tmp_path, fake_server.url)
    for index in range(3):
        (tmp_path / "in" / f"img_{index}.jpg").write_bytes(photo_bytes(tmp_path / f"s{index}.jpg", seed=300 + index))
    fake_server.hang(times=1)  # the first call stays on the server: the next job is prepared meanwhile
    state = tmp_path / "state"
    first = daemon_factory(config).start()
    wait_for(
        lambda: fake_server.in_flight == 1 and any(prepared for _, prepared in running_jobs(state)),
        timeout=30,
        message=f"a job on the server and the next prepared; log:\n{first.log()}",
    )
    [prepared_id] = [job_id for job_id, prepared in running_jobs(state) if prepared]
    first.kill()
    fake_server.clear_faults()

    second = daemon_factory(config).start()
    wait_for(
        lambda: journal_counts(state).get("done") == 3,
        timeout=60,
        message=f"all done after restart; log:\n{second.log()}",
    )
    assert second.stop() == 0

    assert [video.name for video in videos(tmp_path / "out")] == [f"img_{index}.mp4" for index in range(3)]
    journal = Journal(state / "journal.sqlite3")
    try:
        jobs = {job.id: job for job in journal.jobs()}
        returned = {
            job_id: [
                event["message"] for event in journal.events(job_id) if "returned to the queue" in event["message"]
            ]
            for job_id in jobs
        }
    finally:
        journal.close()
    assert returned[prepared_id] == ["returned to the queue after prepared, never sent"]  # no interruption counted
    assert sorted(map(len, returned.values())) == [0, 1, 1]
    assert ["returned to the queue after interruption 1"] in returned.values()  # the job that was on the server
    sent = [request.image_sha256 for request in fake_server.requests]
    assert sent.count(jobs[prepared_id].source_sha256) == 1  # the prepared job went to the server once
    assert len(sent) == 4  # the interrupted call, asked again after the restart, and the two others once
    assert fake_server.max_concurrent == 1
