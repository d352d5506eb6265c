"""The worker with real parts: a SQLite journal in tmp_path, jobs made by the real intake
from real image files, PredictBackend talking HTTP to the fake server, real output files.

Time is a ManualClock shared by the journal and the worker, so backoffs cost nothing:
`Worker.run(stop, burst=True)` drains the queue on the test's thread, advancing the
clock instead of sleeping. No threads of our own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from i2vd import __version__
from i2vd.config.load import Config, parse_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.ingest.watcher import DONE_FOLDER
from i2vd.jobs.worker import Worker
from i2vd.render import mp4, output
from i2vd.render.backends.predict import PredictBackend
from i2vd.render.gpu import VramGate
from i2vd.store.journal import Job, JobState, Journal
from tests.support.fakes import FakePredictServer, write_image

ATTEMPTS = 3


def make_config(tmp_path: Path, server_url: str, *, after: str = "keep", attempts: int = ATTEMPTS) -> Config:
    text = f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "{server_url}", timeout_seconds: 10, connect_timeout_seconds: 2}}
gpu: {{enabled: false}}
retry: {{attempts: {attempts}, initial_backoff_seconds: 30, max_backoff_seconds: 600}}
watch:
  - {{path: in, settle_seconds: 0, after: {after}}}
"""
    (tmp_path / "in").mkdir(exist_ok=True)
    return parse_config(text, base_dir=tmp_path)


@dataclass
class Rig:
    config: Config
    clock: ManualClock
    journal: Journal
    intake: Intake
    backend: PredictBackend
    worker: Worker
    server: FakePredictServer

    @property
    def root(self) -> Path:
        return self.config.watch[0].path

    def add(self, relative: str, color: tuple[int, int, int] = (200, 80, 40)) -> tuple[Job, bytes]:
        """Write a real image under the root and make its job through the intake."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = write_image(path, color=color)
        result = self.intake.consider(path, self.config.root_for(path))
        assert result.outcome is Outcome.QUEUED, result
        return result.job, data

    def drain(self) -> None:
        self.worker.run(threading.Event(), burst=True)

    def job(self, job_id: int) -> Job:
        return self.journal.job(job_id)


def build_rig(tmp_path: Path, server: FakePredictServer, **config_options) -> Rig:
    config = make_config(tmp_path, server.url, **config_options)
    clock = ManualClock()
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    backend = PredictBackend(
        config.server.url,
        config.server.path,
        timeout_seconds=config.server.timeout_seconds,
        connect_timeout_seconds=config.server.connect_timeout_seconds,
    )
    worker = Worker(config, journal, backend, VramGate.from_config(config.gpu, clock), clock=clock, name="test-worker")
    return Rig(config, clock, journal, Intake(config, journal), backend, worker, server)


@pytest.fixture
def rig(tmp_path: Path, fake_server: FakePredictServer):
    made = build_rig(tmp_path, fake_server)
    try:
        yield made
    finally:
        made.backend.close()
        made.journal.close()


@pytest.fixture
def moving_rig(tmp_path: Path, fake_server: FakePredictServer):
    made = build_rig(tmp_path, fake_server, after="move")
    try:
        yield made
    finally:
        made.backend.close()
        made.journal.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_files(folder: Path) -> list[str]:
    return (
        sorted(entry.name for entry in folder.rglob("*") if output.TEMP_MARK in entry.name) if folder.exists() else []
    )


# -- the happy path ----------------------------------------------------------------


def test_job_becomes_done_with_video_and_audit_record_at_the_mirrored_path(rig):
    job, image = rig.add("holiday/golden_retriever-2.jpg")

    rig.drain()

    done = rig.job(job.id)
    assert done.state is JobState.DONE, done.last_error
    video = rig.config.output_dir / "holiday" / "golden_retriever-2.mp4"
    assert done.output_path == str(video)
    assert mp4.probe(video).frames > 0
    assert f"source_sha256={sha256(image)}" in mp4.read_comment(video)

    record = json.loads(output.record_path(video).read_text(encoding="utf-8"))
    assert record["idempotency_key"] == job.idem_key
    assert record["source"]["sha256"] == sha256(image)
    assert record["source"]["path"] == str(rig.root / "holiday" / "golden_retriever-2.jpg")
    assert record["source"]["size"] == len(image)
    assert record["profile"] == "default"
    assert record["prompt"] == "A golden retriever 2 scene with smooth motion"
    assert record["parameters"] == {
        "resolution": "512p",
        "frames": 16,
        "fps": 8,
        "steps": 50,
        "guidance": 9.0,
        "seed": None,
    }
    assert record["server"]["kind"] == "predict"
    assert record["server"]["url"] == rig.server.url + "/api/predict/"
    assert set(record["timings"]) >= {"queued", "started", "finished", "server_seconds"}
    assert record["timings"]["queued"] <= record["timings"]["started"] <= record["timings"]["finished"]
    assert record["attempts"] == 1
    assert record["i2vd_version"] == __version__

    [received] = rig.server.requests
    assert received.image == image
    assert received.prompt == "A golden retriever 2 scene with smooth motion"
    assert (received.resolution_index, received.frames, received.fps, received.steps, received.guidance) == (
        1,
        16,
        8,
        50,
        9.0,
    )
    assert temp_files(rig.config.output_dir) == []
    assert rig.worker.state.jobs_done == 1


# -- the job's own failures use attempts ---------------------------------------------


def test_http_500_for_one_image_is_retried_then_failed_while_the_others_are_done(rig):
    good_one, _ = rig.add("a.jpg", color=(10, 20, 30))
    bad, bad_image = rig.add("b.jpg", color=(40, 50, 60))
    good_two, _ = rig.add("c.jpg", color=(70, 80, 90))
    rig.server.fail_with(
        500, "Internal Server Error: boom", when=lambda request: request.image_sha256 == sha256(bad_image)
    )

    rig.drain()

    failed = rig.job(bad.id)
    assert failed.state is JobState.FAILED
    assert failed.attempts == ATTEMPTS
    assert "HTTP 500" in failed.last_error and "boom" in failed.last_error
    assert sum(1 for request in rig.server.requests if request.image_sha256 == sha256(bad_image)) == ATTEMPTS
    assert rig.job(good_one.id).state is JobState.DONE
    assert rig.job(good_two.id).state is JobState.DONE
    assert not (rig.config.output_dir / "b.mp4").exists()
    assert temp_files(rig.config.output_dir) == []


def test_garbage_reply_uses_an_attempt_and_says_the_video_is_unusable(rig):
    job, _ = rig.add("a.jpg")
    rig.server.reply_garbage(times=1)

    assert rig.worker.run_once(threading.Event())

    retried = rig.job(job.id)
    assert retried.state is JobState.QUEUED
    assert retried.attempts == 1
    assert "unusable video" in retried.last_error
    assert not (rig.config.output_dir / "a.mp4").exists()
    assert not output.record_path(rig.config.output_dir / "a.mp4").exists()
    assert temp_files(rig.config.output_dir) == []

    rig.drain()  # the backoff passes on the manual clock; the next reply is a real video

    assert rig.job(job.id).state is JobState.DONE
    record = json.loads(output.record_path(rig.config.output_dir / "a.mp4").read_text())
    assert record["attempts"] == 2
    assert len(rig.server.requests) == 2


def test_out_of_memory_uses_an_attempt_with_the_oom_message(rig):
    job, _ = rig.add("a.jpg")
    rig.server.reply_oom(times=1)

    assert rig.worker.run_once(threading.Event())

    retried = rig.job(job.id)
    assert retried.state is JobState.QUEUED
    assert retried.attempts == 1
    assert "out of memory" in retried.last_error.lower()
    assert retried.next_attempt_at > rig.clock.now()  # not retried at once with the same settings

    rig.drain()
    assert rig.job(job.id).state is JobState.DONE


# -- failures that are not the job's own use none ------------------------------------


def test_server_down_requeues_without_using_an_attempt_then_recovers(rig):
    job, image = rig.add("a.jpg")
    rig.server.go_down()

    assert rig.worker.run_once(threading.Event())

    waiting = rig.job(job.id)
    assert waiting.state is JobState.QUEUED
    assert waiting.attempts == 0
    assert "cannot reach" in waiting.last_error
    assert rig.worker.state.server_down_since is not None
    assert rig.worker.state.server_error

    rig.server.come_up()
    rig.drain()

    done = rig.job(job.id)
    assert done.state is JobState.DONE
    assert done.attempts == 0
    assert rig.worker.state.server_down_since is None
    assert [request.image for request in rig.server.requests] == [image]


# -- the source at run time ----------------------------------------------------------


def test_source_deleted_before_the_job_runs_fails_the_job(rig):
    job, _ = rig.add("a.jpg")
    Path(job.source_path).unlink()

    rig.drain()

    failed = rig.job(job.id)
    assert failed.state is JobState.FAILED
    assert "source file is gone" in failed.last_error
    assert rig.server.requests == []


def test_source_changed_after_it_was_queued_fails_the_job(rig):
    job, _ = rig.add("a.jpg", color=(1, 2, 3))
    write_image(Path(job.source_path), color=(250, 250, 250))

    rig.drain()

    failed = rig.job(job.id)
    assert failed.state is JobState.FAILED
    assert "changed" in failed.last_error
    assert rig.server.requests == []


# -- the crash window ----------------------------------------------------------------


def crashed_after_rename(rig: Rig, mp4_bytes: bytes) -> tuple[Job, Path]:
    """A job whose video and record were renamed into place just before the daemon died."""
    job, _ = rig.add("a.jpg")
    claimed = rig.journal.claim_next("dead-daemon", 1000)
    assert claimed.id == job.id
    video = output.default_video_path(rig.config.output_dir, claimed.rel_path, claimed.output_name)
    assert rig.journal.set_output_path(job.id, str(video))
    output.write_video(
        video,
        job.id,
        mp4_bytes,
        {"idempotency_key": job.idem_key, "job_id": job.id},
        comment="written before the crash",
    )
    return job, video


def test_finished_output_from_before_a_crash_is_marked_done_without_a_server_call(rig, mp4_bytes):
    job, video = crashed_after_rename(rig, mp4_bytes)
    [recovered] = rig.journal.recover_running(3)
    assert recovered.state is JobState.QUEUED
    before = video.read_bytes()

    rig.drain()

    assert rig.job(job.id).state is JobState.DONE
    assert rig.server.requests == []
    assert video.read_bytes() == before
    assert not (video.parent / "a-1.mp4").exists()


def test_stray_temp_files_are_removed_when_a_finished_output_is_recovered(rig, mp4_bytes):
    job, video = crashed_after_rename(rig, mp4_bytes)
    stray = output.temp_path(video, job.id)
    stray.write_bytes(b"half a video")
    rig.journal.recover_running(3)

    rig.drain()

    assert rig.job(job.id).state is JobState.DONE
    assert not stray.exists()


def test_stray_temp_files_of_the_job_are_removed_before_it_runs_again(rig):
    job, _ = rig.add("a.jpg")
    claimed = rig.journal.claim_next("dead-daemon", 1000)
    video = output.default_video_path(rig.config.output_dir, claimed.rel_path, None)
    rig.journal.set_output_path(job.id, str(video))
    video.parent.mkdir(parents=True)
    own_video_temp = output.temp_path(video, job.id)
    own_record_temp = output.temp_path(output.record_path(video), job.id)
    other_jobs_temp = output.temp_path(video.with_name("other.mp4"), job.id + 100)
    for stray in (own_video_temp, own_record_temp, other_jobs_temp):
        stray.write_bytes(b"left by a crash")
    rig.journal.recover_running(3)

    rig.drain()

    assert rig.job(job.id).state is JobState.DONE
    assert video.is_file()
    assert len(rig.server.requests) == 1
    assert not own_video_temp.exists() and not own_record_temp.exists()
    assert other_jobs_temp.exists()  # another job's temp file is not this job's to remove


def test_with_the_journal_lost_a_finished_video_is_recognised_by_its_key_and_not_rendered_again(rig, tmp_path):
    job, _ = rig.add("holiday/a.jpg")
    rig.drain()
    assert len(rig.server.requests) == 1
    video = Path(rig.job(job.id).output_path)
    before = video.read_bytes()
    rig.journal.close()
    (rig.config.state_dir / "journal.sqlite3").unlink()  # lost: a new journal starts from job 1 again
    for leftover in rig.config.state_dir.glob("journal.sqlite3*"):
        leftover.unlink()
    rig.journal = Journal(rig.config.state_dir / "journal.sqlite3", rig.clock)
    rig.clock.advance(60)
    rig.intake = Intake(rig.config, rig.journal)
    rig.worker = Worker(
        rig.config,
        rig.journal,
        rig.backend,
        VramGate.from_config(rig.config.gpu, rig.clock),
        clock=rig.clock,
        name="test-worker",
    )
    again = rig.intake.consider(rig.root / "holiday/a.jpg", rig.config.watch[0]).job

    rig.drain()

    assert rig.job(again.id).state is JobState.DONE
    assert len(rig.server.requests) == 1, "the finished video was rendered a second time"
    assert video.read_bytes() == before and not (video.parent / "a-1.mp4").exists()


def test_retry_of_a_done_job_still_renders_it_again(rig):
    job, _ = rig.add("a.jpg")
    rig.drain()
    [result] = rig.intake.retry([job.id])
    assert result.job is not None and rig.job(job.id).state is JobState.QUEUED

    rig.drain()

    assert rig.job(job.id).state is JobState.DONE
    assert len(rig.server.requests) == 2  # the user asked for it


def test_a_server_that_drops_the_connection_mid_reply_uses_an_attempt_each_time(rig):
    """An image that crashes the server is not sent forever: each drop is one attempt, then it fails."""
    job, _ = rig.add("crasher.jpg")
    rig.server.drop_mid_reply()

    rig.drain()

    done = rig.job(job.id)
    assert (done.state, done.attempts) == (JobState.FAILED, ATTEMPTS)
    assert "dropped the connection" in done.last_error
    assert len(rig.server.requests) == ATTEMPTS


def test_a_large_base64_reply_arrives_intact_through_the_files_under_state_dir(rig, tmp_path):
    """The reply is far above what is held in memory: spooled under state_dir, decoded in chunks, then removed."""
    import numpy

    noise = numpy.random.default_rng(7).integers(0, 256, size=(48, 120, 160, 3), dtype=numpy.uint8)
    mp4.encode_frames(iter(noise), tmp_path / "big.mp4", 8)  # noise: a video that does not compress
    big = (tmp_path / "big.mp4").read_bytes()
    assert len(big) > 4 * 64 * 1024
    rig.server.video = big
    job, _ = rig.add("a.jpg")

    rig.drain()

    video = Path(rig.job(job.id).output_path)
    assert rig.job(job.id).state is JobState.DONE
    assert mp4.probe(video).frames == 48
    assert list((rig.config.state_dir / "incoming").iterdir()) == []


def test_unfinished_reply_files_of_a_crashed_daemon_are_removed_at_start(rig):
    from i2vd.jobs.worker import build_workers

    incoming = rig.config.state_dir / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "reply-0123.json.part").write_bytes(b'{"data": ["AAAA')
    workers = build_workers(rig.config, rig.journal, rig.clock)
    for worker in workers:
        worker.backend.close()
    assert list(incoming.iterdir()) == []


# -- naming --------------------------------------------------------------------------


def test_two_images_with_the_same_stem_get_distinct_videos(rig):
    jpeg_job, jpeg = rig.add("shots/a.jpg", color=(10, 100, 200))
    png_job, png = rig.add("shots/a.png", color=(200, 100, 10))

    rig.drain()

    first, second = rig.job(jpeg_job.id), rig.job(png_job.id)
    assert first.state is JobState.DONE and second.state is JobState.DONE
    shots = rig.config.output_dir / "shots"
    assert first.output_path == str(shots / "a.mp4")
    assert second.output_path == str(shots / "a-1.mp4")
    assert json.loads(output.record_path(shots / "a.mp4").read_text())["source"]["sha256"] == sha256(jpeg)
    assert json.loads(output.record_path(shots / "a-1.mp4").read_text())["source"]["sha256"] == sha256(png)
    assert sorted(path.name for path in shots.iterdir()) == ["a-1.mp4", "a-1.mp4.json", "a.mp4", "a.mp4.json"]


def test_a_file_that_is_not_ours_is_never_overwritten(rig):
    job, _ = rig.add("a.jpg")
    foreign = rig.config.output_dir / "a.mp4"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"somebody else's video")

    rig.drain()

    assert rig.job(job.id).output_path == str(rig.config.output_dir / "a-1.mp4")
    assert foreign.read_bytes() == b"somebody else's video"


# -- after: move ---------------------------------------------------------------------


def test_after_move_moves_the_source_into_the_done_folder_once_the_video_exists(moving_rig):
    job, image = moving_rig.add("sub/a.jpg")
    source = moving_rig.root / "sub" / "a.jpg"

    moving_rig.drain()

    assert moving_rig.job(job.id).state is JobState.DONE
    assert (moving_rig.config.output_dir / "sub" / "a.mp4").is_file()
    moved = moving_rig.root / DONE_FOLDER / "sub" / "a.jpg"
    assert moved.read_bytes() == image
    assert not source.exists()


def test_after_move_leaves_the_source_when_no_video_was_made(moving_rig):
    job, image = moving_rig.add("a.jpg")
    moving_rig.server.reply_garbage()

    moving_rig.drain()

    assert moving_rig.job(job.id).state is JobState.FAILED
    assert (moving_rig.root / "a.jpg").read_bytes() == image
    assert not (moving_rig.root / DONE_FOLDER).exists()


def test_after_move_never_replaces_an_earlier_original_of_the_same_name(moving_rig):
    first_job, first_image = moving_rig.add("a.jpg", color=(10, 10, 10))
    moving_rig.drain()
    assert moving_rig.job(first_job.id).state is JobState.DONE
    second_job, second_image = moving_rig.add("a.jpg", color=(240, 240, 240))  # a new photo under the same name

    moving_rig.drain()

    assert moving_rig.job(second_job.id).state is JobState.DONE
    kept = sorted(sha256(path.read_bytes()) for path in (moving_rig.root / DONE_FOLDER).rglob("*") if path.is_file())
    assert kept == sorted([sha256(first_image), sha256(second_image)])


def test_after_move_still_happens_for_a_job_recovered_from_the_crash_window(moving_rig, mp4_bytes):
    job, _ = crashed_after_rename(moving_rig, mp4_bytes)
    moving_rig.journal.recover_running(3)

    moving_rig.drain()

    assert moving_rig.job(job.id).state is JobState.DONE
    assert moving_rig.server.requests == []
    assert (moving_rig.root / DONE_FOLDER / "a.jpg").is_file()
    assert not (moving_rig.root / "a.jpg").exists()


def test_after_move_leaves_a_newer_version_saved_while_the_job_ran_and_it_becomes_its_own_job(moving_rig, tmp_path):
    job, first = moving_rig.add("sub/a.jpg", color=(10, 20, 30))
    source = moving_rig.root / "sub" / "a.jpg"
    newer = write_image(tmp_path / "edited.jpg", color=(200, 20, 30))

    def save_newer_version(request) -> bool:  # the photographer saves an edit while the server renders
        source.write_bytes(newer)
        return False

    moving_rig.server.reply_garbage(when=save_newer_version)
    moving_rig.drain()

    assert moving_rig.job(job.id).state is JobState.DONE
    assert source.read_bytes() == newer, "the newer version was moved away with the finished one"
    assert not (moving_rig.root / DONE_FOLDER / "sub" / "a.jpg").exists()
    second = moving_rig.intake.consider(source, moving_rig.config.watch[0])
    assert second.outcome.value == "queued"
    moving_rig.server.clear_faults()
    moving_rig.drain()
    assert moving_rig.job(second.job.id).state is JobState.DONE
    assert (moving_rig.root / DONE_FOLDER / "sub" / "a.jpg").read_bytes() == newer


def test_a_folder_replaced_by_a_link_after_queueing_is_never_read_through(rig, tmp_path):
    job, image = rig.add("sub/a.jpg", color=(30, 160, 30))
    outside = tmp_path / "elsewhere"
    (rig.root / "sub").rename(outside)  # the folder leaves the root ...
    (rig.root / "sub").symlink_to(outside, target_is_directory=True)  # ... and a link to it takes its place

    rig.drain()

    failed = rig.job(job.id)
    assert (failed.state, failed.attempts) == (JobState.FAILED, 0)
    assert failed.last_error.startswith("source file is gone")
    assert rig.server.requests == []


class _IntakeCommitsMidLook(Journal):
    """A journal whose look for the job's content is answered just before the intake records the new place.

    The worker's look (files_with_content) and its "gone" verdict are two steps; a renamed folder's
    file seen by the intake between them was lost for good (found under load by the 50-image rename test).
    """

    def __init__(self, *args, late_file: Path, intake: Intake, config: Config, **kwargs):
        super().__init__(*args, **kwargs)
        self.late_file, self.intake, self.config, self.raced = late_file, intake, config, False
        self.looks = 0

    def files_with_content(self, sha256: str):
        seen = super().files_with_content(sha256)
        self.looks += 1
        if self.looks == 2:  # the second look, after the settle window: the one that decides "gone"
            self.raced = True
            self.intake.consider(self.late_file, self.config.root_for(self.late_file))  # commits right now
        return seen


def test_a_moved_file_the_intake_records_while_the_worker_looks_is_not_lost(tmp_path, fake_server):
    config = make_config(tmp_path, fake_server.url)
    clock = ManualClock()
    root = config.watch[0].path
    source = root / "shoot" / "img.jpg"
    source.parent.mkdir(parents=True)
    data = write_image(source, color=(9, 99, 199))
    moved = root / "2026" / "wedding" / "img.jpg"
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    job = Intake(config, journal).consider(source, config.root_for(source)).job
    journal.close()
    journal = _IntakeCommitsMidLook(
        config.state_dir / "journal.sqlite3", clock, late_file=moved, intake=None, config=config
    )
    journal.intake = Intake(config, journal)
    backend = PredictBackend(config.server.url, config.server.path, timeout_seconds=10, connect_timeout_seconds=2)
    worker = Worker(config, journal, backend, VramGate.from_config(config.gpu, clock), clock=clock, name="test")
    try:
        (root / "2026").mkdir()
        (root / "shoot").rename(root / "2026" / "wedding")
        worker.run_once(threading.Event())  # not there: it waits a settle window for the intake
        assert (journal.job(job.id).state, journal.looks) == (JobState.QUEUED, 1)
        clock.advance(60)
        worker.run_once(threading.Event())  # looks again: the intake records the new place mid-look
        assert journal.raced
        worker.run(threading.Event(), burst=True)
        done = journal.job(job.id)
        assert (done.state, done.rel_path) == (JobState.DONE, "2026/wedding/img.jpg"), done.last_error
        assert [request.image_sha256 for request in fake_server.requests] == [sha256(data)]
    finally:
        backend.close()
        journal.close()


class _WorkerFailsMidSlice(Journal):
    """The worker's "gone" verdict lands while the intake reads a slice: after the intake looked for
    waiting jobs to move (the job was running then), before it records the slice's files."""

    def add_jobs(self, items):
        for new, _ in items:
            for job in self.jobs_with_content([new.source_sha256], (JobState.RUNNING,)):
                self.mark_failed(job.id, f"source file is gone: {job.source_path}", count_attempt=False)
        return super().add_jobs(items)


def test_a_job_failed_as_gone_while_the_intake_reads_its_new_place_follows_it(tmp_path, fake_server):
    config = make_config(tmp_path, fake_server.url)
    root = config.watch[0].path
    source = root / "shoot" / "img.jpg"
    source.parent.mkdir(parents=True)
    write_image(source, color=(19, 99, 199))
    journal = _WorkerFailsMidSlice(config.state_dir / "journal.sqlite3", ManualClock())
    try:
        intake = Intake(config, journal)
        job = intake.consider(source, config.root_for(source)).job
        assert journal.claim_next("worker", 60).id == job.id  # the worker is on it
        (root / "2026").mkdir()
        (root / "shoot").rename(root / "2026" / "wedding")
        moved = root / "2026" / "wedding" / "img.jpg"
        result = intake.consider(moved, config.root_for(moved))
        assert (result.outcome, result.job.id) == (Outcome.QUEUED, job.id)
        assert (journal.job(job.id).state, journal.job(job.id).rel_path) == (JobState.QUEUED, "2026/wedding/img.jpg")
    finally:
        journal.close()
