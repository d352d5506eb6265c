"""While the server renders job k+1, job k's video is checked, tagged and written beside the call.

SPEC "Performance targets": the server is never left idle while i2vd checks, tags and writes the
previous video; one job at a time on the server stays the rule.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from i2vd.jobs import received
from i2vd.render import output
from i2vd.render.backends import http
from i2vd.store.journal import JobState
from tests.jobs.test_worker import build_rig
from tests.jobs.test_worker_prepare import worker_beside_call
from tests.support.fakes import FakePredictServer, wait_for


def test_the_next_job_is_on_the_server_while_the_previous_video_is_written(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    rig = build_rig(tmp_path, fake_server)
    try:
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        real_write = output.write_video
        seen: dict[int, bool] = {}

        def write_video(destination, job_id, *args, **kwargs):
            if job_id == first.id:  # the first video is held until the server has the second job, or 10 s
                deadline = time.monotonic() + 10
                while len(fake_server.requests) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                seen[job_id] = len(fake_server.requests) >= 2
            return real_write(destination, job_id, *args, **kwargs)

        monkeypatch.setattr(output, "write_video", write_video)
        rig.worker.run(threading.Event(), burst=True)
        assert seen == {first.id: True}, "job 2 reached the server only after job 1's video was written"
        assert rig.job(first.id).state is JobState.DONE
        assert rig.job(second.id).state is JobState.DONE
        assert len(fake_server.requests) == 2  # each asked once
        assert fake_server.max_concurrent == 1  # one job at a time on the server
        assert Path(rig.job(first.id).output_path).is_file() and Path(rig.job(second.id).output_path).is_file()
    finally:
        rig.backend.close()
        rig.journal.close()


def test_a_video_that_cannot_be_written_beside_the_call_keeps_its_usual_outcome(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """A disk full while job k is written beside job k+1's call: job k waits (no attempt used), its video kept."""
    rig = build_rig(tmp_path, fake_server)
    try:
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        real_write = output.write_video
        stop = threading.Event()
        tries: list[int] = []

        def write_video(destination, job_id, *args, **kwargs):
            if job_id == first.id:
                tries.append(job_id)
                if len(tries) == 2:  # its retry (the queue's turn after the backoff): enough seen
                    stop.set()
                raise OSError(28, "No space left on device")
            return real_write(destination, job_id, *args, **kwargs)

        monkeypatch.setattr(output, "write_video", write_video)
        rig.worker.run(stop, burst=True)
        assert rig.job(second.id).state is JobState.DONE
        held = rig.job(first.id)
        assert held.state is JobState.QUEUED and held.attempts == 0 and "cannot write output" in (held.last_error or "")
        monkeypatch.setattr(output, "write_video", real_write)
        rig.clock.advance(3600)
        rig.worker.run(threading.Event(), burst=True)
        assert rig.job(first.id).state is JobState.DONE
        assert len(fake_server.requests) == 2  # the kept video was written: the server was not asked twice
    finally:
        rig.backend.close()
        rig.journal.close()


def test_a_reply_that_cannot_be_kept_beside_the_next_call_waits_using_no_attempt(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """The reply is kept (fsynced under state_dir) on the finishing thread: a full disk there is the disk's fault."""
    rig = build_rig(tmp_path, fake_server)
    try:
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        real_keep = received.keep
        kept_on: list[str] = []

        def keep(folder, job, reply, server):
            kept_on.append(threading.current_thread().name)
            if job.id == first.id and len(kept_on) == 1:
                raise OSError(28, "No space left on device")
            return real_keep(folder, job, reply, server)

        monkeypatch.setattr(received, "keep", keep)
        rig.worker.run(threading.Event(), burst=True)
        assert all(name.startswith("i2vd-finishing") for name in kept_on)  # never between two calls
        assert rig.job(second.id).state is JobState.DONE
        done = rig.job(first.id)  # waited for the disk (its backoff), then asked again and written
        assert done.state is JobState.DONE and done.attempts == 0
        messages = [event["message"] for event in rig.journal.events(first.id)]
        assert any("cannot keep the video under state_dir" in message for message in messages)
        assert not list((rig.config.state_dir / received.INCOMING).glob("*.mp4"))  # no reply left behind
        assert len(fake_server.requests) == 3  # not kept, so asked again: once more, not more
    finally:
        rig.backend.close()
        rig.journal.close()


def test_one_preparing_and_one_finishing_thread_serve_every_job_of_a_run_and_end_with_it(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """A thread started for each job made the worker wait for it to be scheduled, between two calls."""
    rig = build_rig(tmp_path, fake_server)
    try:
        jobs = [rig.add(f"{index}.png", color=(index, 20, 30))[0] for index in range(4)]
        real_keep = received.keep
        kept_on: list[threading.Thread] = []

        def keep(folder, job, reply, server):
            kept_on.append(threading.current_thread())
            return real_keep(folder, job, reply, server)

        real_prepare = rig.worker._prepare_next
        prepared_on: list[threading.Thread] = []

        def prepare_next():
            prepared_on.append(threading.current_thread())
            return real_prepare()

        monkeypatch.setattr(received, "keep", keep)
        monkeypatch.setattr(rig.worker, "_prepare_next", prepare_next)
        rig.worker.run(threading.Event(), burst=True)
        assert [rig.job(job.id).state for job in jobs] == [JobState.DONE] * 4
        assert len(kept_on) == 4 and len(set(kept_on)) == 1  # one finishing thread for the four videos
        assert len(prepared_on) >= 3 and len(set(prepared_on)) == 1  # one preparing thread for the run
        assert not kept_on[0].is_alive() and not prepared_on[0].is_alive()  # both ended with the run
    finally:
        rig.backend.close()
        rig.journal.close()


def test_the_last_video_is_finished_once_the_next_request_has_left_and_at_once_when_none_follows(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """Keeping, probing and tagging competed with sending the next request for the CPU."""
    rig = build_rig(tmp_path, fake_server)
    uploading, upload = threading.Event(), threading.Event()
    real_read = http.StreamedBody.read
    reads: list[int] = []

    def read(body, size=-1):
        if not reads or reads[-1] != id(body):
            reads.append(id(body))
        if len(reads) == 2:  # the second request's body is held back until the test lets it go
            uploading.set()
            upload.wait(30)
        return real_read(body, size)

    with worker_beside_call(rig, fake_server) as (worker, _):
        try:
            first, _ = rig.add("one.png", color=(10, 20, 30))
            second, _ = rig.add("two.png", color=(40, 50, 60))
            monkeypatch.setattr(http.StreamedBody, "read", read)
            worker.start()
            assert uploading.wait(10)
            finisher = rig.worker._finisher
            wait_for(lambda: finisher._beside.holding or rig.job(first.id).state is JobState.DONE, timeout=10)
            assert rig.job(first.id).state is JobState.RUNNING  # video 1 waits for request 2 to leave
            upload.set()
            wait_for(lambda: rig.job(first.id).state is JobState.DONE, timeout=10)
            worker.join(timeout=30)  # nothing follows video 2: written at once, the run ends
            assert rig.job(second.id).state is JobState.DONE
        finally:
            upload.set()  # before the worker is stopped and joined
