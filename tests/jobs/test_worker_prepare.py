"""While the server renders job k, job k+1 is claimed and read (jobs/prepare.py), and sent once call k is over.

SPEC "Performance targets": claim and prepare the next job before the current call ends; one job at
a time on the server, the VRAM gate read before each call, exactly-once kept whatever stops the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from pathlib import Path

from i2vd.jobs import prepare
from i2vd.jobs.sources import SourceFiles
from i2vd.jobs.worker import Worker
from i2vd.render.backends import http
from i2vd.render.gpu import MemoryReading, VramGate
from i2vd.store.journal import JobState
from tests.jobs.test_worker import build_rig
from tests.support.fakes import FakePredictServer, wait_for


def prepared_job(rig) -> int | None:
    """The id of the job the worker holds prepared (claimed, not sent), if any."""
    for job in rig.journal.jobs():
        if job.state is JobState.RUNNING and job.started_at is None:  # claimed, not started on the server
            return job.id
    return None


@contextlib.contextmanager
def worker_beside_call(rig, fake_server: FakePredictServer, run=None, *, burst: bool = True):
    """A worker thread for the test to start; after the test, stopped, the server released, joined, the rig closed."""
    stop = threading.Event()
    thread = threading.Thread(target=run or rig.worker.run, args=(stop,), kwargs={"burst": True} if burst else {})
    try:
        yield thread, stop
    finally:
        stop.set()
        fake_server.clear_faults()
        if thread.ident is not None:
            thread.join(timeout=30)
        rig.backend.close()
        rig.journal.close()


def until_prepared(rig, fake_server: FakePredictServer, job) -> None:
    """Until `job` is claimed and read beside call 1, which the server holds."""
    wait_for(
        lambda: prepared_job(rig) == job.id and fake_server.in_flight == 1,
        timeout=10,
        message=f"job {job.id} prepared during call 1",
    )


def test_the_next_job_is_claimed_and_read_while_the_server_renders_and_sent_after(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    rig = build_rig(tmp_path, fake_server)
    with worker_beside_call(rig, fake_server) as (worker, stop):
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, image = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)  # the first call stays on the server until released
        worker.start()
        until_prepared(rig, fake_server, second)
        held = rig.job(second.id)
        assert len(fake_server.requests) == 1  # one job on the server, not two
        assert held.output_path and held.attempts == 0  # its output path reserved beside the call
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert [rig.job(job.id).state for job in (first, second)] == [JobState.DONE, JobState.DONE]
        assert [request.image_sha256 for request in fake_server.requests][1:] == [second.source_sha256]
        assert fake_server.max_concurrent == 1
        done = rig.job(second.id)
        assert done.started_at is not None and done.interruptions == 0 and done.tries == 1
        assert done.output_path == held.output_path and Path(done.output_path).is_file()
        timings = json.loads(Path(done.output_path + ".json").read_text(encoding="utf-8"))["timings"]
        assert timings["queued"] <= timings["started"] <= timings["finished"]  # started when sent, not prepared


def test_a_job_prepared_when_the_worker_stops_goes_back_to_the_queue_unsent(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    rig = build_rig(tmp_path, fake_server)
    with worker_beside_call(rig, fake_server, burst=False) as (worker, stop):
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)
        worker.start()
        until_prepared(rig, fake_server, second)
        stop.set()  # a shutdown while call 1 runs: call 1 ends, job 2 is not sent
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert rig.job(first.id).state is JobState.DONE
        back = rig.job(second.id)
        assert back.state is JobState.QUEUED
        assert (back.attempts, back.interruptions, back.state) == (0, 0, JobState.QUEUED)
        assert len(fake_server.requests) == 1  # never sent
        rig.drain()  # its turn comes as for any queued job, with the path it reserved
        assert rig.job(second.id).state is JobState.DONE
        assert rig.job(second.id).output_path == back.output_path
        assert len(fake_server.requests) == 2


def test_with_two_servers_a_worker_prepares_only_when_the_other_still_finds_a_job(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    """No server idles while another holds a prepared job: the last jobs are each claimed when a call ends."""
    rig = build_rig(tmp_path, fake_server)
    two = dataclasses.replace(rig.config, servers=(rig.config.servers[0], rig.config.servers[0]))
    rig.worker.config = rig.intake.config = two
    with worker_beside_call(rig, fake_server) as (worker, stop):
        rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)
        worker.start()
        wait_for(lambda: fake_server.in_flight == 1, timeout=10, message="call 1 on the server")
        rig.worker._preparer.take_result()  # wait for this call's preparing, done or not done
        assert prepared_job(rig) is None and rig.job(second.id).state is JobState.QUEUED
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert rig.job(second.id).state is JobState.DONE


def test_a_reload_while_a_job_is_prepared_prepares_it_again_under_the_new_config(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    rig = build_rig(tmp_path, fake_server)
    with worker_beside_call(rig, fake_server) as (worker, stop):
        rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)
        worker.start()
        until_prepared(rig, fake_server, second)
        reloaded = dataclasses.replace(rig.config)  # a new config object, as a SIGHUP makes
        rig.worker.reconfigure(reloaded, reloaded.server)
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert rig.job(second.id).state is JobState.DONE
        messages = [event["message"] for event in rig.journal.events(second.id)]
        assert "prepared, not sent: back in the queue" in messages  # not sent as prepared under the old config
        assert len(fake_server.requests) == 2


def test_the_vram_gate_is_read_before_the_prepared_job_is_sent_not_when_it_is_prepared(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    rig = build_rig(tmp_path, fake_server)
    readings: list[tuple[int, str]] = []  # (calls the server had, job 2's state) at each reading

    def reader() -> MemoryReading:
        job = rig.journal.job(second.id)
        sent = "sent" if job.started_at is not None else "prepared" if job.state is JobState.RUNNING else "queued"
        readings.append((len(fake_server.requests), sent))
        return MemoryReading(used_mb=100, total_mb=24_000)

    gpu = dataclasses.replace(rig.config.gpu, enabled=True, source="command", max_used_mb=10_000, poll_seconds=5)
    worker = Worker(rig.config, rig.journal, rig.backend, VramGate(gpu, reader, rig.clock), clock=rig.clock, name="w")
    with worker_beside_call(rig, fake_server, worker.run) as (thread, stop):
        rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)
        thread.start()
        until_prepared(rig, fake_server, second)
        fake_server.clear_faults()
        thread.join(timeout=30)
        assert rig.job(second.id).state is JobState.DONE
        assert readings[0] == (0, "queued")  # before call 1, job 2 not claimed yet
        # Read once more after call 1, with job 2 prepared and not yet sent; not read to prepare it.
        assert readings[1:] == [(1, "prepared")]


def test_an_image_too_big_to_hold_beside_the_call_is_read_when_it_is_sent(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    monkeypatch.setattr(prepare, "PREPARED_IMAGE_MAX_BYTES", 16)  # every test image is bigger
    reads: list[tuple[int, str]] = []
    real_read = SourceFiles._read_source

    def read_source(self, job):
        reads.append((job.id, threading.current_thread().name))
        return real_read(self, job)

    monkeypatch.setattr(SourceFiles, "_read_source", read_source)
    rig = build_rig(tmp_path, fake_server)
    try:
        first, _ = rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        rig.worker.run(threading.Event(), burst=True)
        assert [rig.job(job.id).state for job in (first, second)] == [JobState.DONE, JobState.DONE]
        # Job 2 read once, at its turn on the worker's thread: not on the preparing thread beside call 1.
        assert [(job_id, "preparing" in thread) for job_id, thread in reads] == [(first.id, False), (second.id, False)]
        assert [request.image_sha256 for request in fake_server.requests] == [first.source_sha256, second.source_sha256]
        assert any("prepared" in event["message"] for event in rig.journal.events(second.id))  # it was prepared
    finally:
        rig.backend.close()
        rig.journal.close()


def test_a_file_deleted_while_its_job_is_prepared_is_not_sent_from_what_was_read(
    tmp_path: Path, fake_server: FakePredictServer
) -> None:
    rig = build_rig(tmp_path, fake_server)
    with worker_beside_call(rig, fake_server) as (worker, stop):
        rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        fake_server.hang(times=1)
        worker.start()
        until_prepared(rig, fake_server, second)
        wait_for(lambda: not rig.worker._preparer.busy)
        Path(second.source_path).unlink()  # deleted after it was read beside call 1
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert len(fake_server.requests) == 1  # job 2 was not sent from the bytes read before the deletion
        assert rig.job(second.id).state is not JobState.DONE


def test_a_prepared_job_s_start_is_synced_to_disk_beside_its_call(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """mark_sending commits without waiting for the disk; the fsync comes while the server has the request."""
    rig = build_rig(tmp_path, fake_server)
    with worker_beside_call(rig, fake_server) as (worker, stop):
        rig.add("one.png", color=(10, 20, 30))
        second, _ = rig.add("two.png", color=(40, 50, 60))
        order: list[str] = []
        real_mark, real_sync = rig.journal.mark_sending, rig.journal.sync

        def mark_sending(job_id, owner):
            order.append(f"mark {job_id}")
            return real_mark(job_id, owner)

        def sync():
            order.append("sync")
            real_sync()

        monkeypatch.setattr(rig.journal, "mark_sending", mark_sending)
        monkeypatch.setattr(rig.journal, "sync", sync)
        fake_server.hang(when=lambda request: request.image_sha256 == second.source_sha256)
        worker.start()
        wait_for(lambda: fake_server.in_flight == 1 and len(fake_server.requests) == 2, timeout=10)
        wait_for(lambda: "sync" in order, timeout=10, message=f"job 2's start synced: {order}")
        assert order == [f"mark {second.id}", "sync"]  # as it was sent: call 2 is held on the server until now
        assert rig.job(second.id).started_at is not None
        fake_server.clear_faults()
        worker.join(timeout=30)
        assert rig.job(second.id).state is JobState.DONE


def test_the_next_job_is_prepared_once_the_request_has_left_not_while_it_is_sent(
    tmp_path: Path, fake_server: FakePredictServer, monkeypatch
) -> None:
    """Preparing (journal commits, reading and hashing an image) competed with the sending for the CPU."""
    rig = build_rig(tmp_path, fake_server)
    uploading, upload = threading.Event(), threading.Event()
    real_read = http.StreamedBody.read

    def read(body, size=-1):
        uploading.set()
        upload.wait(30)  # the first request's body is held back until the test lets it go
        return real_read(body, size)

    with worker_beside_call(rig, fake_server) as (worker, _):
        try:
            rig.add("one.png", color=(10, 20, 30))
            second, _ = rig.add("two.png", color=(40, 50, 60))
            monkeypatch.setattr(http.StreamedBody, "read", read)
            fake_server.hang(times=1)
            worker.start()
            assert uploading.wait(10)
            wait_for(lambda: rig.worker._preparer._beside.holding or prepared_job(rig) is not None, timeout=10)
            assert prepared_job(rig) is None  # job 2 waits for request 1 to leave
            upload.set()
            until_prepared(rig, fake_server, second)
            fake_server.clear_faults()
            worker.join(timeout=30)
            assert rig.job(second.id).state is JobState.DONE
        finally:
            upload.set()  # before the worker is stopped and joined
