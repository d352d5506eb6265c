"""`server.oom: wait | downgrade | fail`: what the worker does when the server runs out of GPU memory.

Real parts, as in test_worker.py (whose rig this reuses): a SQLite journal in tmp_path, jobs
made by the real intake from real image files, PredictBackend over HTTP to the fake server,
which answers 500 "CUDA out of memory" when told to (`reply_oom`). Time is the rig's
ManualClock, so a backoff is crossed by advancing it, never by sleeping.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from i2vd.jobs.worker import Worker
from i2vd.render import output
from i2vd.render.gpu import MemoryReading, Reader, VramGate
from i2vd.store.journal import JobState
from tests.jobs.test_worker import Rig, build_rig, sha256
from tests.support.fakes import FakePredictServer

INITIAL_BACKOFF = 30.0  # test_worker.make_config: retry.initial_backoff_seconds
GATE_POLL_SECONDS = 5.0


def oom_rig(tmp_path: Path, server: FakePredictServer, oom: str, gpu_reader: Reader | None = None) -> Rig:
    """test_worker's rig, with a worker whose server entry says `oom: <policy>` (and a VRAM gate reading gpu_reader)."""
    rig = build_rig(tmp_path, server)
    gate = rig.worker.gate
    if gpu_reader is not None:
        gpu = dataclasses.replace(
            rig.config.gpu, enabled=True, source="command", max_used_mb=10_000, poll_seconds=GATE_POLL_SECONDS
        )
        gate = VramGate(gpu, gpu_reader, rig.clock)
    worker = Worker(
        rig.config,
        rig.journal,
        rig.backend,
        gate,
        clock=rig.clock,
        name="test-worker",
        server=dataclasses.replace(rig.config.server, oom=oom),
    )
    return dataclasses.replace(rig, worker=worker)


@pytest.fixture
def make_rig(tmp_path: Path, fake_server: FakePredictServer):
    made: list[Rig] = []

    def make(oom: str, gpu_reader: Reader | None = None) -> Rig:
        rig = oom_rig(tmp_path, fake_server, oom, gpu_reader)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.backend.close()
        rig.journal.close()


def record_of(rig: Rig, job_id: int) -> dict:
    return json.loads(output.record_path(Path(rig.job(job_id).output_path)).read_text(encoding="utf-8"))


# -- wait (the default) ------------------------------------------------------------------------------


def test_wait_uses_an_attempt_and_is_not_retried_before_the_backoff(make_rig):
    rig = make_rig("wait")
    job, image = rig.add("a.jpg")
    rig.server.reply_oom(times=1)
    stop = threading.Event()

    assert rig.worker.run_once(stop)

    waiting = rig.job(job.id)
    assert waiting.state is JobState.QUEUED
    assert waiting.attempts == 1
    assert "out of GPU memory" in waiting.last_error
    assert "CUDA out of memory" in waiting.last_error  # the server's own words are kept
    assert waiting.next_attempt_at == pytest.approx(rig.clock.now() + INITIAL_BACKOFF)
    assert waiting.params["resolution"] == "512p"  # same settings: only the wait changes things

    assert not rig.worker.run_once(stop)  # not again at once
    rig.clock.advance(INITIAL_BACKOFF - 1)
    assert not rig.worker.run_once(stop)  # nor just before the backoff is over
    assert len(rig.server.requests) == 1

    rig.clock.advance(1)
    assert rig.worker.run_once(stop)  # the OOM has cleared (times=1): the retry makes the video

    done = rig.job(job.id)
    assert done.state is JobState.DONE, done.last_error
    assert [request.image_sha256 for request in rig.server.requests] == [sha256(image)] * 2
    assert [request.resolution_index for request in rig.server.requests] == [1, 1]
    record = record_of(rig, job.id)
    assert record["attempts"] == 2
    assert record["parameters"]["resolution"] == "512p"
    assert record["downgraded_from"] is None


def test_wait_retries_only_once_the_vram_gate_opens(make_rig):
    """After the backoff the retry still waits for the GPU gate: nothing is sent while it is closed."""
    planned: list[int] = []  # MiB used the next reads see; an empty plan reads 1,000 (open)
    seen: list[tuple[int, int]] = []  # (MiB read, requests the server had by then)

    def reader() -> MemoryReading:
        used = planned.pop(0) if planned else 1_000
        seen.append((used, len(rig.server.requests)))
        return MemoryReading(used_mb=used, total_mb=24_000)

    rig = make_rig("wait", gpu_reader=reader)
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom(times=1)

    assert rig.worker.run_once(threading.Event())  # the gate is open; the server runs out of memory
    assert rig.job(job.id).attempts == 1
    planned.extend([20_000] * 3)  # the GPU is busy when the backoff ends
    rig.clock.advance(INITIAL_BACKOFF)
    before = rig.clock.now()

    assert rig.worker.run_once(threading.Event())

    assert rig.job(job.id).state is JobState.DONE
    assert seen == [(1_000, 0), (20_000, 1), (20_000, 1), (20_000, 1), (1_000, 1)]
    assert rig.clock.now() - before == pytest.approx(3 * GATE_POLL_SECONDS)
    assert len(rig.server.requests) == 2


def test_wait_fails_the_job_once_its_attempts_are_used_up(make_rig):
    rig = make_rig("wait")
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom()  # never clears

    rig.drain()

    failed = rig.job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.attempts == rig.config.retry.attempts == len(rig.server.requests)
    assert "out of GPU memory" in failed.last_error and "CUDA out of memory" in failed.last_error


def test_wait_a_job_failed_for_good_does_not_promise_a_next_try(make_rig):
    rig = make_rig("wait")
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom()

    rig.drain()

    failed = rig.job(job.id)
    assert failed.state is JobState.FAILED
    assert "next try" not in failed.last_error


# -- downgrade ---------------------------------------------------------------------------------------


def test_downgrade_steps_the_resolution_down_without_using_an_attempt(make_rig):
    rig = make_rig("downgrade")
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom(times=1)
    stop = threading.Event()

    assert rig.worker.run_once(stop)

    stepped = rig.job(job.id)
    assert stepped.state is JobState.QUEUED
    assert stepped.attempts == 0
    assert stepped.params["resolution"] == "256p"
    assert {key: value for key, value in stepped.params.items() if key != "resolution"} == {
        key: value for key, value in job.params.items() if key != "resolution"
    }
    assert "512p" in stepped.last_error and "256p" in stepped.last_error
    assert stepped.next_attempt_at <= rig.clock.now()  # with lower settings, at once
    assert stepped.idem_key == job.idem_key  # still the request the user made

    assert rig.worker.run_once(stop)

    done = rig.job(job.id)
    assert done.state is JobState.DONE, done.last_error
    assert [request.resolution_index for request in rig.server.requests] == [1, 0]
    record = record_of(rig, job.id)
    assert record["parameters"]["resolution"] == "256p"
    assert record["downgraded_from"]["resolution"] == "512p"
    assert record["idempotency_key"] == job.idem_key
    assert record["attempts"] == 1


def test_downgrade_at_the_lowest_resolution_falls_back_to_waiting(make_rig):
    rig = make_rig("downgrade")
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom(times=2)  # at 512p, then again at 256p
    stop = threading.Event()

    assert rig.worker.run_once(stop)
    assert rig.worker.run_once(stop)

    waiting = rig.job(job.id)
    assert waiting.state is JobState.QUEUED
    assert waiting.attempts == 1
    assert waiting.params["resolution"] == "256p"
    assert "out of GPU memory" in waiting.last_error
    assert waiting.next_attempt_at == pytest.approx(rig.clock.now() + INITIAL_BACKOFF)
    assert not rig.worker.run_once(stop)
    assert [request.resolution_index for request in rig.server.requests] == [1, 0]

    rig.drain()  # the backoff passes on the manual clock

    assert rig.job(job.id).state is JobState.DONE
    assert [request.resolution_index for request in rig.server.requests] == [1, 0, 0]
    record = record_of(rig, job.id)
    assert (record["parameters"]["resolution"], record["downgraded_from"]["resolution"], record["attempts"]) == (
        "256p",
        "512p",
        2,
    )


# -- fail --------------------------------------------------------------------------------------------


def test_fail_fails_the_job_at_once_and_the_others_go_on(make_rig):
    rig = make_rig("fail")
    bad, bad_image = rig.add("bad.jpg", color=(10, 20, 30))
    good, _ = rig.add("good.jpg", color=(200, 210, 220))
    rig.server.reply_oom(when=lambda request: request.image_sha256 == sha256(bad_image))

    rig.drain()

    failed = rig.job(bad.id)
    assert failed.state is JobState.FAILED
    assert "out of GPU memory" in failed.last_error and "CUDA out of memory" in failed.last_error
    assert sum(request.image_sha256 == sha256(bad_image) for request in rig.server.requests) == 1
    assert rig.job(good.id).state is JobState.DONE
    assert not (rig.config.output_dir / "bad.mp4").exists()
    assert rig.worker.state.jobs_failed == 1
