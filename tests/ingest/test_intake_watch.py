"""The intake loop with real inotify on temp folders and a real SQLite journal.

Each test runs IntakeLoop.run in one thread with a stop Event, and always stops
the watches and joins the thread. Nothing sleeps for a fixed time: every wait polls
the journal (or the loop) for a condition with a deadline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from i2vd.config.load import Config, parse_config
from i2vd.ingest.intake import Intake
from i2vd.ingest.loop import IntakeLoop
from i2vd.ingest.watcher import DONE_FOLDER, FolderWatch
from i2vd.store.journal import Job, JobState, Journal
from tests.support.fakes import wait_for, write_image, write_slowly

SETTLE_SECONDS = 0.4
TIMEOUT = 10


def make_config(tmp_path: Path, *, prompt: str | None = None, output_dir: str = "out") -> Config:
    profiles = f'profiles: {{default: {{prompt: "{prompt}"}}}}' if prompt else ""
    text = f"""
state_dir: state
output_dir: {output_dir}
server: {{kind: predict, url: "http://127.0.0.1:9", timeout_seconds: 10}}
gpu: {{enabled: false}}
retry: {{attempts: 2, initial_backoff_seconds: 0.1, max_backoff_seconds: 0.5}}
watch:
  - {{path: in, settle_seconds: {SETTLE_SECONDS}, poll: false, rescan_seconds: 3600}}
{profiles}
"""
    (tmp_path / "in").mkdir(exist_ok=True)
    return parse_config(text, base_dir=tmp_path)


@pytest.fixture
def journal_factory(tmp_path: Path):
    opened: list[Journal] = []

    def make(config: Config) -> Journal:
        journal = Journal(config.state_dir / "journal.sqlite3")
        opened.append(journal)
        return journal

    yield make
    for journal in opened:
        journal.close()


@contextmanager
def running(loop: IntakeLoop, *, after_first_scan: bool = False) -> Iterator[IntakeLoop]:
    """The loop in its own thread, stopped and joined after; optionally once its startup reconcile is done."""
    stop = threading.Event()
    loop.start_watches()
    thread = threading.Thread(target=loop.run, args=(stop,), name="test-intake-loop")
    thread.start()
    try:
        if after_first_scan:
            wait_for(lambda: loop._last_scan, timeout=TIMEOUT, message="no initial reconcile")
        yield loop
    finally:
        stop.set()
        loop.stop_watches()
        thread.join(timeout=TIMEOUT)
        assert not thread.is_alive(), "the intake loop did not stop"


def new_loop(config: Config, journal: Journal) -> IntakeLoop:
    return IntakeLoop(config, Intake(config, journal))


def job_for(journal: Journal, rel_path: str) -> Job | None:
    return next((job for job in journal.jobs() if job.rel_path == rel_path), None)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seen_as_not_ready(loop: IntakeLoop, path: Path) -> bool:
    """The loop looked at `path` once it had settled and found it did not decode yet (still arriving)."""
    return path in loop._undecodable


# -- complete files only -----------------------------------------------------------


def test_a_slowly_written_file_becomes_one_job_only_once_it_is_complete(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    staging = tmp_path / "staging"
    staging.mkdir()
    image = write_image(staging / "photo.jpg", size=(320, 240))
    target = config.watch[0].path / "photo.jpg"
    go_on = threading.Event()
    writer = threading.Thread(target=write_slowly, args=(target, image, 3, go_on), name="test-slow-writer")

    loop = new_loop(config, journal)
    with running(loop):
        writer.start()
        try:
            wait_for(
                lambda: seen_as_not_ready(loop, target), timeout=TIMEOUT, message="the partial file was never looked at"
            )
            assert journal.jobs() == []  # a third of a JPEG settled once: not a job, not a failure
        finally:
            go_on.set()
            writer.join(timeout=TIMEOUT)
        job = wait_for(lambda: job_for(journal, "photo.jpg"), timeout=TIMEOUT, message="no job for the completed file")

    assert target.read_bytes() == image
    assert job.state is JobState.QUEUED, job.last_error
    assert job.source_sha256 == sha256(image)
    assert job.source_size == len(image)
    assert len(journal.jobs()) == 1


def test_a_truncated_jpeg_left_unchanged_becomes_a_failed_job_with_a_clear_error(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    image = write_image(tmp_path / "whole.jpg", size=(320, 240))
    (config.watch[0].path / "broken.jpg").write_bytes(image[: len(image) // 2])

    with running(new_loop(config, journal)):
        job = wait_for(lambda: job_for(journal, "broken.jpg"), timeout=TIMEOUT, message="no job for the truncated file")

    assert job.state is JobState.FAILED
    assert "broken.jpg" in job.last_error
    assert "damaged or incomplete" in job.last_error or "truncated" in job.last_error
    assert len(journal.jobs()) == 1


# -- what is looked at ---------------------------------------------------------------


JUNK = (
    ".hidden.jpg",
    "._photo.jpg",
    ".DS_Store",
    "Thumbs.db",
    "@eaDir/photo.jpg",
    "#recycle/photo.jpg",
    "#snapshot/photo.jpg",
    ".@__thumb/photo.jpg",
    "photo.jpg.part",
    "photo.jpg.crdownload",
    "photo.jpg.tmp",
    "~$photo.jpg",
    "notes.txt",
    f"{DONE_FOLDER}/done.jpg",
    "videos/not-an-input.jpg",  # the output folder, inside the root here
)


def write_junk(root: Path, prefix: str) -> None:
    for index, name in enumerate(JUNK):
        path = root / name
        path = path.with_name(path.name.replace("photo", f"{prefix}photo"))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, color=(index, 10, 10), format="JPEG")


def test_junk_names_and_our_own_folders_are_ignored(tmp_path, journal_factory):
    config = make_config(tmp_path, output_dir="in/videos")
    journal = journal_factory(config)
    root = config.watch[0].path
    write_junk(root, "before-")  # seen by the first reconcile

    loop = new_loop(config, journal)
    with running(loop):
        wait_for(lambda: loop._last_scan, timeout=TIMEOUT, message="no initial reconcile")
        write_junk(root, "after-")  # seen by inotify
        write_image(root / "real.jpg", color=(1, 2, 3))
        wait_for(lambda: job_for(journal, "real.jpg"), timeout=TIMEOUT, message="the real image was not found")
        assert loop.reconcile(0) == 0  # a full scan suggests nothing either

    assert [job.rel_path for job in journal.jobs()] == ["real.jpg"]
    assert len(loop.tracker) == 0


def test_files_in_a_folder_made_after_start_are_found(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    root = config.watch[0].path

    loop = new_loop(config, journal)
    with running(loop):
        wait_for(lambda: loop._last_scan, timeout=TIMEOUT, message="no initial reconcile")
        deeper = root / "new" / "deeper"
        deeper.mkdir(parents=True)  # the file lands at once, perhaps before its folder's watch exists
        images = {
            name: write_image(deeper / name, color=(index * 40, 0, 0)) for index, name in enumerate(("a.jpg", "b.png"))
        }
        wait_for(
            lambda: len(journal.jobs()) == 2, timeout=TIMEOUT, message="files in the new folder were not all found"
        )

    for name, data in images.items():
        job = job_for(journal, f"new/deeper/{name}")
        assert job is not None and job.state is JobState.QUEUED
        assert job.source_sha256 == sha256(data)


def test_files_present_at_start_are_found_by_the_initial_reconcile(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    root = config.watch[0].path
    (root / "sub").mkdir()
    names = ["one.jpg", "two.png", "sub/three.jpg"]
    for index, name in enumerate(names):
        write_image(root / name, color=(0, index * 50, 0))

    with running(new_loop(config, journal)):
        wait_for(lambda: len(journal.jobs()) == 3, timeout=TIMEOUT, message="files present at start were not all found")

    assert sorted(job.rel_path for job in journal.jobs()) == sorted(names)
    assert all(job.state is JobState.QUEUED for job in journal.jobs())


def test_a_second_loop_on_the_same_journal_finds_nothing_new(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    root = config.watch[0].path
    for index, name in enumerate(("one.jpg", "two.jpg")):
        write_image(root / name, color=(0, 0, index * 90))
    with running(new_loop(config, journal)):
        wait_for(lambda: len(journal.jobs()) == 2, timeout=TIMEOUT)
    before = journal.jobs()

    second = new_loop(config, journal_factory(config))  # a restart: a new loop, the same journal file
    assert second.reconcile(0) == 0
    assert len(second.tracker) == 0

    touched = root / "one.jpg"
    info = touched.stat()
    with running(second):
        os.utime(touched, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))  # a touch: new mtime, same content
        wait_for(
            lambda: journal.known_file(str(touched)).mtime_ns == info.st_mtime_ns + 5_000_000_000,
            timeout=TIMEOUT,
            message="the touched file was not looked at again",
        )

    assert journal.jobs() == before


def test_the_same_image_under_another_name_makes_no_second_job(tmp_path, journal_factory):
    config = make_config(tmp_path, prompt="Waves")  # no file name in the prompt: same image, same request
    journal = journal_factory(config)
    root = config.watch[0].path
    write_image(root / "a.jpg")

    with running(new_loop(config, journal)):
        first = wait_for(lambda: job_for(journal, "a.jpg"), timeout=TIMEOUT)
        shutil.copyfile(root / "a.jpg", root / "copy of a.jpg")
        known = wait_for(
            lambda: journal.known_file(str(root / "copy of a.jpg")),
            timeout=TIMEOUT,
            message="the copy was never looked at",
        )

    assert known.job_id == first.id
    assert [job.id for job in journal.jobs()] == [first.id]


# -- robustness ----------------------------------------------------------------------


def test_an_exception_in_the_file_callback_does_not_stop_the_watcher(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="i2vd.watcher")
    seen: list[str] = []

    def on_file(path: Path) -> None:
        if path.name.startswith("boom"):
            raise RuntimeError("handler bug")
        seen.append(path.name)

    watch = FolderWatch(tmp_path, False, on_file, lambda path: None)
    assert watch.start()
    try:
        write_image(tmp_path / "boom.jpg")
        write_image(tmp_path / "fine.jpg")
        wait_for(lambda: "fine.jpg" in seen, timeout=TIMEOUT, message="the watcher stopped after the exception")
        assert watch.active
        wait_for(lambda: any("error handling" in record.getMessage() for record in caplog.records), timeout=TIMEOUT)
    finally:
        watch.stop()
    assert "boom.jpg" not in seen


def test_an_exception_in_the_folder_callback_does_not_stop_the_watcher(tmp_path):
    folders: list[str] = []
    files: list[str] = []

    def on_folder(path: Path) -> None:
        if path.name == "boom":
            raise OSError("handler bug")
        folders.append(path.name)

    watch = FolderWatch(tmp_path, False, lambda path: files.append(path.name), on_folder)
    assert watch.start()
    try:
        (tmp_path / "boom").mkdir()
        (tmp_path / "fine").mkdir()
        wait_for(lambda: "fine" in folders, timeout=TIMEOUT, message="the watcher stopped after the exception")
        write_image(tmp_path / "fine" / "x.jpg")
        wait_for(lambda: "x.jpg" in files, timeout=TIMEOUT)
        assert watch.active
    finally:
        watch.stop()


def test_a_fifo_a_folder_and_a_symlink_named_like_images_do_not_hang_or_stop_the_intake(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    root = config.watch[0].path
    outside = tmp_path / "private.jpg"
    private = write_image(outside, color=(9, 9, 9))

    loop = new_loop(config, journal)
    with running(loop):
        wait_for(lambda: loop._last_scan, timeout=TIMEOUT, message="no initial reconcile")
        os.mkfifo(root / "pipe.jpg")  # reading it would block forever
        (root / "folder.jpg").mkdir()
        (root / "link.jpg").symlink_to(outside)  # points outside the root: never followed
        write_image(root / "real.jpg", color=(1, 2, 3))
        wait_for(lambda: job_for(journal, "real.jpg"), timeout=TIMEOUT, message="the intake stopped")

    jobs = {job.rel_path: job for job in journal.jobs()}
    assert jobs.pop("real.jpg").state is JobState.QUEUED
    assert all(job.state is JobState.FAILED for job in jobs.values())  # ignored, or failed with a reason: never sent
    assert all(job.source_sha256 != sha256(private) for job in jobs.values())


# -- links are never followed --------------------------------------------------------


@pytest.mark.parametrize("poll", [True, False], ids=["polling", "inotify"])
def test_a_symlinked_folder_made_while_watching_is_never_followed(tmp_path, journal_factory, poll):
    config = make_config(tmp_path)
    config = dataclasses.replace(config, watch=(dataclasses.replace(config.watch[0], poll=poll),))
    journal = journal_factory(config)
    root = config.watch[0].path
    outside = tmp_path / "etc"
    outside.mkdir()
    secret = write_image(outside / "passwd.jpg", color=(9, 9, 1))
    (root / "deep" / "er").mkdir(parents=True)
    loop = new_loop(config, journal)
    with running(loop, after_first_scan=True):
        (root / "deep" / "er" / "etc").symlink_to(outside, target_is_directory=True)
        (root / "loop").symlink_to(root, target_is_directory=True)
        later = write_image(outside / "later.jpg", color=(9, 9, 2))  # appears behind the link while watched
        write_image(root / "deep" / "er" / "marker.jpg", color=(1, 1, 9))
        wait_for(lambda: job_for(journal, "deep/er/marker.jpg"), timeout=TIMEOUT, message="the marker is queued")
        wait_for(lambda: len(loop.tracker) == 0, timeout=TIMEOUT, message="everything seen has settled")
        loop.rescan_all()
        wait_for(lambda: not loop._rescan_requested and loop._last_scan, timeout=TIMEOUT, message="a rescan ran")
    assert {job.rel_path for job in journal.jobs()} == {"deep/er/marker.jpg"}
    assert not {sha256(secret), sha256(later)} & {job.source_sha256 for job in journal.jobs()}


# -- a job follows its content -------------------------------------------------------------


@contextmanager
def worker_for(config: Config, journal: Journal, server_url: str) -> Iterator:
    from i2vd.core.clock import Clock
    from i2vd.jobs.worker import Worker
    from i2vd.render.backends.predict import PredictBackend
    from i2vd.render.gpu import VramGate

    backend = PredictBackend(server_url, config.server.path, timeout_seconds=10, connect_timeout_seconds=5)
    try:
        yield Worker(config, journal, backend, VramGate.from_config(config.gpu, Clock()), name="test-worker")
    finally:
        backend.close()


def put(path: Path, color: tuple[int, int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_image(path, color=color)


def moved_config(tmp_path: Path, server_url: str) -> Config:
    config = make_config(tmp_path, prompt="plain")
    entry = config.servers[0]
    return dataclasses.replace(
        config, servers=(dataclasses.replace(entry, server=dataclasses.replace(entry.server, url=server_url)),)
    )


def test_a_folder_renamed_while_its_jobs_wait_is_followed_and_the_videos_mirror_the_new_place(
    tmp_path, journal_factory, fake_server
):
    from tests.support.fakes import write_text

    config = moved_config(tmp_path, fake_server.url)
    journal = journal_factory(config)
    root = config.watch[0].path
    for number in range(12):
        put(root / "shoot" / f"img{number:02}.jpg", (number * 20, 40, 80))
    write_text(root / "2026" / "i2vd.yaml", 'prompt: "clients 2026"\n')
    with running(new_loop(config, journal)):
        wait_for(lambda: journal.counts()["queued"] == 12, timeout=TIMEOUT, message="12 jobs wait")
        ids = sorted(job.id for job in journal.jobs())
        (root / "shoot").rename(root / "2026" / "wedding")  # the photographer files the shoot away
        wait_for(
            lambda: all(job.rel_path.startswith("2026/wedding/") for job in journal.jobs()),
            timeout=TIMEOUT,
            message="every job follows its file",
        )
        wait_for(
            lambda: all(job.prompt == "clients 2026" for job in journal.jobs()),
            timeout=TIMEOUT,
            message="the sidecar of the new place applies",
        )
    assert sorted(job.id for job in journal.jobs()) == ids, "the same jobs, no new ones"
    with worker_for(config, journal, fake_server.url) as worker:
        worker.run(threading.Event(), burst=True)
    jobs = journal.jobs()
    assert {job.state for job in jobs} == {JobState.DONE}, [job.last_error for job in jobs]
    assert sorted(Path(job.output_path).relative_to(config.output_dir).as_posix() for job in jobs) == [
        f"2026/wedding/img{number:02}.mp4" for number in range(12)
    ]


def test_a_file_moved_between_subfolders_copied_then_deleted_or_deleted_for_good(
    tmp_path, journal_factory, fake_server
):
    config = moved_config(tmp_path, fake_server.url)
    journal = journal_factory(config)
    root = config.watch[0].path
    moved = put(root / "a" / "moved.jpg", (250, 10, 10))
    copied = put(root / "a" / "copied.jpg", (10, 250, 10))
    put(root / "a" / "deleted.jpg", (10, 10, 250))
    with running(new_loop(config, journal)):
        wait_for(lambda: journal.counts()["queued"] == 3, timeout=TIMEOUT, message="3 jobs wait")
        (root / "b").mkdir()
        (root / "a" / "moved.jpg").rename(root / "b" / "moved.jpg")
        shutil.copy2(root / "a" / "copied.jpg", root / "b" / "copied.jpg")  # copy, then delete the original
        wait_for(lambda: job_for(journal, "b/moved.jpg"), timeout=TIMEOUT, message="the moved file's job follows it")
        wait_for(
            lambda: journal.known_file(str(root / "b" / "copied.jpg")), timeout=TIMEOUT, message="the copy is seen"
        )
        (root / "a" / "copied.jpg").unlink()
        (root / "a" / "deleted.jpg").unlink()
    with worker_for(config, journal, fake_server.url) as worker:
        worker.run(threading.Event(), burst=True)
    jobs = {Path(job.rel_path).name: job for job in journal.jobs()}
    assert len(jobs) == 3
    assert (jobs["moved.jpg"].state, jobs["moved.jpg"].output_path) == (
        JobState.DONE,
        str(config.output_dir / "b" / "moved.mp4"),
    )
    assert (jobs["copied.jpg"].state, jobs["copied.jpg"].rel_path) == (JobState.DONE, "b/copied.jpg")
    assert jobs["copied.jpg"].output_path == str(config.output_dir / "b" / "copied.mp4")
    assert jobs["deleted.jpg"].state is JobState.FAILED
    assert (jobs["deleted.jpg"].attempts, jobs["deleted.jpg"].last_error.startswith("source file is gone")) == (0, True)
    sent = sorted(request.image_sha256 for request in fake_server.requests)
    assert sent == sorted([sha256(moved), sha256(copied)])


def test_a_job_failed_as_gone_comes_back_when_its_content_shows_up_and_retry_works(
    tmp_path, journal_factory, fake_server
):
    from i2vd.ingest.intake import Intake

    config = moved_config(tmp_path, fake_server.url)
    journal = journal_factory(config)
    root = config.watch[0].path
    image = put(root / "old" / "x.jpg", (7, 7, 70))
    other = put(root / "old" / "y.jpg", (200, 200, 80))
    intake = Intake(config, journal)
    assert intake.consider(root / "old" / "x.jpg", config.watch[0]).outcome.value == "queued"
    assert intake.consider(root / "old" / "y.jpg", config.watch[0]).outcome.value == "queued"
    (root / "old").rename(root / "new")  # moved while nothing watched (the daemon was stopped)
    with worker_for(config, journal, fake_server.url) as worker:
        worker.run(threading.Event(), burst=True)  # it claims before any rescan saw the new place
        assert {job.state for job in journal.jobs()} == {JobState.FAILED}
        [y] = [job for job in journal.jobs() if job.rel_path == "old/y.jpg"]
        intake.consider(root / "new" / "x.jpg", config.watch[0])  # a rescan finds x at the new place
        assert job_for(journal, "new/x.jpg").state is JobState.QUEUED, "the failed job is revived at the new place"
        journal.remember_file(
            str(root / "new" / "y.jpg"), len(other), (root / "new" / "y.jpg").stat().st_mtime_ns, sha256(other), y.id
        )
        assert [result.outcome.value for result in intake.retry([y.id])] == ["queued"]
        worker.run(threading.Event(), burst=True)
    assert {job.rel_path: job.state for job in journal.jobs()} == {
        "new/x.jpg": JobState.DONE,
        "new/y.jpg": JobState.DONE,
    }
    assert len(fake_server.requests) == 2 and sha256(image) in {
        request.image_sha256 for request in fake_server.requests
    }


# -- a drop of thousands of files ----------------------------------------------------------


class SlowDiskClock:
    """A manual clock on which every look at the time finds it a little later (a slow share): time bounds bite."""

    def __init__(self, step: float):
        from i2vd.core.clock import ManualClock

        self.manual, self.step = ManualClock(), step

    def now(self) -> float:
        return self.manual.now()

    def monotonic(self) -> float:
        self.manual.advance(self.step)
        return self.manual.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        return self.manual.wait(stop, seconds)


def drop_thousands(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        image = Image.frombytes("L", (4, 2), number.to_bytes(8, "big"))
        image.save(folder / f"IMG_{number:05}.png")


def test_a_drop_of_thousands_is_taken_in_bounded_slices_and_the_first_jobs_start_early(tmp_path, journal_factory):
    from i2vd.core.clock import ManualClock

    config = make_config(tmp_path)
    journal = journal_factory(config)
    count = 2500
    drop_thousands(config.watch[0].path / "drop", count)
    clock = ManualClock()
    loop = IntakeLoop(config, Intake(config, journal), clock)
    try:
        loop.tick()  # the first rescan suggests every file
        clock.advance(SETTLE_SECONDS * 2)
        loop.tick()
        first = journal.claim_next("test-worker", 60)
        assert first is not None, "no job could start after the first slice"
        assert len(journal.known_files()) <= loop.SLICE_FILES < count, "the whole drop was hashed in one tick"
        rounds = 1
        while len(journal.known_files()) < count:
            before = len(journal.known_files())
            loop.tick()
            assert 0 < len(journal.known_files()) - before <= loop.SLICE_FILES
            rounds += 1
        assert rounds >= count // loop.SLICE_FILES
        assert journal.counts()["queued"] + journal.counts()["running"] == count
    finally:
        loop.stop_watches()


def test_each_file_of_a_drop_is_handed_to_the_pool_to_read_ahead_once(tmp_path, journal_factory):
    """The pool reads the next slices' files while one is recorded; the loop handed the same 400 files over at each
    slice (a Path, a root and a journal look-up each, twice), though the pool was already reading most of them."""
    from i2vd.core.clock import ManualClock

    config = make_config(tmp_path)
    journal = journal_factory(config)
    count = 1000
    drop_thousands(config.watch[0].path / "drop", count)
    clock = ManualClock()
    intake = Intake(config, journal)
    handed: list[str] = []
    slices: list[list[str]] = []
    consider_many = intake.consider_many

    def recording(files, **options):
        slices.append([str(path) for path, _, _ in files])
        handed.extend(str(path) for path, _ in options.get("coming", ()))
        return consider_many(files, **options)

    intake.consider_many = recording
    loop = IntakeLoop(config, intake, clock)
    try:
        loop.tick()
        clock.advance(SETTLE_SECONDS * 2)
        while len(journal.known_files()) < count:
            loop.tick()
        assert len(handed) == len(set(handed)), "a file was handed over to be read ahead more than once"
        assert len(slices[0]) == loop.SLICE_FILES
        assert len(set(handed)) == count - loop.SLICE_FILES and not set(handed) & set(slices[0])
        assert journal.counts()["queued"] == count
    finally:
        loop.stop_watches()


def test_a_slice_is_bounded_by_time_too_and_the_heartbeat_stays_fresh(tmp_path, journal_factory):
    config = make_config(tmp_path)
    journal = journal_factory(config)
    count = 300
    drop_thousands(config.watch[0].path / "drop", count)
    clock = SlowDiskClock(step=0.25)
    overdue: list[float] = []
    loop = IntakeLoop(
        config, Intake(config, journal, on_queued=lambda job: overdue.append(loop.heartbeat.overdue_seconds())), clock
    )
    loop.heartbeat.margin_seconds = 2 * loop.SLICE_SECONDS  # a watchdog as tight as a slice: only slicing keeps it fed
    stop = threading.Event()
    done = threading.Thread(
        target=lambda: wait_for(lambda: len(journal.known_files()) == count, timeout=60) and stop.set()
    )
    done.start()
    try:
        loop.run(stop)  # in this thread: its heartbeat is read from its own on_queued calls
    finally:
        stop.set()
        done.join()
        loop.stop_watches()
    assert len(overdue) == count and max(overdue) == 0.0, "the heartbeat went stale while a slice was hashed"
