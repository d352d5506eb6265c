"""Bursts of new images read, hashed and decoded in worker processes (i2vd/ingest/examine_pool.py).

A bad file fails only its own job, also when its decoder kills the process it runs in; what the
pool finds is what the intake thread would find; nothing behind a link is read; no process is left.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from i2vd.ingest import chunks as pool_chunks
from i2vd.ingest import examine_pool
from i2vd.ingest.examine_pool import ExaminePool, examine_file
from i2vd.ingest.intake import Intake, Outcome
from i2vd.store.journal import JobState, Journal
from tests.ingest.test_bad_files import bomb_png
from tests.ingest.test_intake_watch import make_config
from tests.support.crashing_decoder import examine_or_die
from tests.support.fakes import write_image


@pytest.fixture
def pools():
    made: list[ExaminePool] = []

    def make(**options) -> ExaminePool:
        made.append(ExaminePool(**options))
        return made[-1]

    yield make
    for pool in made:
        pool.close()
    assert multiprocessing.active_children() == [], "a pool process was left behind"


def images(root: Path, count: int, prefix: str = "img") -> list[Path]:
    paths = [root / f"{prefix}_{index:02}.png" for index in range(count)]
    for index, path in enumerate(paths):
        write_image(path, color=(index, 7 * index % 256, 40))
    return paths


def intake_of(tmp_path: Path, name: str) -> tuple[Intake, Journal, Path]:
    (tmp_path / name).mkdir()
    config = make_config(tmp_path / name)
    journal = Journal(config.state_dir / "journal.sqlite3")
    return Intake(config, journal), journal, config.watch[0].path


def test_a_file_that_kills_its_decoder_process_fails_alone_and_the_intake_goes_on(tmp_path, pools):
    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        promises: list[str] = []
        intake.pool = pools(workers=1, function=examine_or_die, beat=lambda seconds, doing: promises.append(doing))
        files = images(root, 30)
        crasher = root / "crash_me.png"
        write_image(crasher, color=(250, 1, 1))
        files.insert(17, crasher)
        results = intake.consider_many([(path, intake.config.watch[0], True) for path in files])
        outcomes = {path.name: result.outcome for path, result in zip(files, results)}
        assert outcomes.pop("crash_me.png") is Outcome.FAILED
        assert set(outcomes.values()) == {Outcome.QUEUED}
        [failed] = journal.jobs(JobState.FAILED)
        assert failed.rel_path == "crash_me.png" and examine_pool.CRASHED in failed.last_error
        assert failed.source_sha256 == examine_file(str(crasher), str(root)).sha256  # hashed, never decoded here
        assert "finding the file that crashed the decoder process" in promises  # liveness: the wait was announced
        more = images(root, 20, prefix="later")  # the intake goes on, in a fresh pool
        again = intake.consider_many([(path, intake.config.watch[0], True) for path in more])
        assert {result.outcome for result in again} == {Outcome.QUEUED}
        assert journal.counts()["queued"] == 50
    finally:
        journal.close()


def test_what_the_pool_finds_is_what_the_intake_thread_finds(tmp_path, pools):
    made = {}
    for name, pool in (("inline", None), ("pooled", pools(workers=2))):
        intake, journal, root = intake_of(tmp_path, name)
        try:
            intake.pool = pool
            files = images(root, 16)
            good = files[0].read_bytes()
            for bad, data in (("empty.png", b""), ("half.png", good[: len(good) // 2]), ("bomb.png", bomb_png())):
                (root / bad).write_bytes(data)
                files.append(root / bad)
            (root / "notes.png").write_text("a shopping list")
            (tmp_path / name / "elsewhere").mkdir()
            write_image(tmp_path / name / "elsewhere" / "secret.png", color=(3, 3, 3))
            (root / "linked").symlink_to(tmp_path / name / "elsewhere")
            files += [root / "notes.png", root / "linked" / "secret.png"]
            # Sidecars of every kind: the pool works the jobs out as the intake thread would.
            (root / "i2vd.yaml").write_text('vars: {place: "the coast"}\npriority: 2\nsteps: 30\n')
            (root / "img_03.png.yaml").write_text('prompt: "{{ subject }} at {{ place }}"\n')
            (root / "img_04.txt").write_text("a caption for four\n")
            (root / "parked").mkdir()
            (root / "parked" / "i2vd.yaml").write_text("steps: [not a number\n")
            files += images(root / "parked", 2, prefix="waits")
            intake.consider_many([(path, intake.config.watch[0], True) for path in files])
            made[name] = sorted(
                (
                    job.rel_path,
                    job.state.value,
                    job.source_sha256,
                    job.source_size,
                    (job.last_error or "").replace(f"/{name}/", "/"),
                    job.profile["facts"],
                    job.idem_key if job.state is JobState.QUEUED else "",  # a parked or failed one's key has its path
                    job.prompt,
                    job.params,
                    json.loads(job.profile_json.replace(f"/{name}/", "/")) | {"hash": "of its sidecars' paths"},
                    job.priority,
                    job.profile_name,
                )
                for job in journal.jobs()
            )
        finally:
            journal.close()
    assert made["pooled"] == made["inline"]
    assert len(made["inline"]) == 23 and sum(state == "failed" for _, state, *_ in made["inline"]) == 5
    prompts = {rel_path: prompt for rel_path, *_, prompt, _, _, _, _ in made["inline"]}
    assert prompts["img_03.png"] == "img 03 at the coast" and prompts["img_04.png"] == "a caption for four"
    assert sum(state == "parked" for _, state, *_ in made["inline"]) == 2


def test_a_sidecar_edited_after_the_pool_read_it_is_what_the_jobs_get(tmp_path, pools):
    """The pool reads the next burst's sidecars while this one is recorded: a sidecar event meanwhile (the watch
    says so) makes the intake work those jobs out again with the sidecar as it is now."""
    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        intake.pool = pools(workers=1)
        watch_root = intake.config.watch[0]
        (root / "i2vd.yaml").write_text('prompt: "before {{ subject }}"\n')
        first, second, third = (images(root, 20, prefix=prefix) for prefix in ("first", "second", "third"))

        def burst(files, coming=()):
            intake.consider_many([(path, watch_root, True) for path in files], coming=[(p, watch_root) for p in coming])
            for _, future in intake.pool.orphans:
                future.result(timeout=30)  # the next burst has been read and worked out with the sidecar as it was

        burst(first, coming=second)
        (root / "i2vd.yaml").write_text('prompt: "after {{ subject }}"\n')
        intake.settings_changed()  # what the watch does on the sidecar's event
        burst(second, coming=third)
        prompts = {job.rel_path: job.prompt for job in journal.jobs()}
        assert {prompts[path.name] for path in first} == {f"before first {index:02}" for index in range(20)}
        assert {prompts[path.name] for path in second} == {f"after second {index:02}" for index in range(20)}
        # The premise: without the event the pool's early reading stands (the event is what sets it right).
        (root / "i2vd.yaml").write_text('prompt: "later {{ subject }}"\n')
        burst(third)
        assert {job.prompt for job in journal.jobs() if job.rel_path.startswith("third")} == {
            f"after third {index:02}" for index in range(20)
        }
    finally:
        journal.close()


def test_nothing_behind_a_linked_folder_is_read_in_a_pool_process(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    write_image(tmp_path / "elsewhere" / "secret.png", color=(3, 3, 3))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere")
    assert examine_file(str(tmp_path / "root" / "linked" / "secret.png"), str(tmp_path / "root")) is None
    examined = examine_file(str(tmp_path / "elsewhere" / "secret.png"), str(tmp_path / "elsewhere"))
    assert examined is not None and examined.facts.format == "PNG"


def test_a_few_files_are_read_in_the_intake_thread_with_no_process_started(tmp_path, pools):
    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        intake.pool = pools()
        files = images(root, examine_pool.POOL_MIN_FILES - 1)
        intake.consider_many([(path, intake.config.watch[0], True) for path in files])
        assert journal.counts()["queued"] == len(files)
        assert multiprocessing.active_children() == []
    finally:
        journal.close()


def test_a_pool_that_cannot_start_leaves_the_reading_to_the_intake_thread(tmp_path, pools, monkeypatch):
    """Spawning needs an importable __main__: a program embedding the daemon without one still journals."""
    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        intake.pool = pools()

        def refuse(self):
            raise RuntimeError("An attempt has been made to start a new process before bootstrapping")

        monkeypatch.setattr(ExaminePool, "_pool", refuse)
        files = images(root, examine_pool.POOL_MIN_FILES + 4)
        results = intake.consider_many([(path, intake.config.watch[0], True) for path in files])
        assert {result.outcome for result in results} == {Outcome.QUEUED}
        assert intake.pool.unavailable
    finally:
        journal.close()


def test_the_pool_starts_while_a_burst_settles_not_when_its_first_slice_is_due(tmp_path, pools):
    """Spawning the processes (~0.5 s of imports each) overlaps the settle window of a big drop."""
    from i2vd.core.clock import ManualClock
    from i2vd.ingest.loop import IntakeLoop

    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        loop = IntakeLoop(intake.config, intake, clock=ManualClock())
        intake.pool = pools(workers=1)
        images(root, examine_pool.POOL_MIN_FILES - 1)
        loop.tick()  # the first scan: the files settle from now on
        assert not intake.pool.started  # a handful is read in the intake thread: no process for them
        images(root, 1, prefix="one-more")
        loop.reconcile(0)
        loop.tick()
        assert intake.pool.started and journal.counts().get("queued", 0) == 0  # nothing has settled yet
    finally:
        loop.stop_watches()
        journal.close()


def test_a_big_drop_is_one_log_line_a_slice_and_a_small_one_a_line_a_job(tmp_path, pools, caplog):
    """journald drops a service's lines past its rate limit (10,000 in 30 s by default), warnings among them."""
    import logging

    intake, journal, root = intake_of(tmp_path, "hot")
    try:
        caplog.set_level(logging.DEBUG, logger="i2vd.intake")
        watch_root = intake.config.watch[0]
        intake.consider_many([(path, watch_root, True) for path in images(root, 3, prefix="few")])
        queued_lines = [r for r in caplog.records if "queued" in r.getMessage() and r.levelno == logging.INFO]
        assert [r.getMessage() for r in queued_lines] == [
            f"job {n} queued: few_0{n - 1}.png (profile default)" for n in (1, 2, 3)
        ]
        caplog.clear()
        intake.pool = pools(workers=1)
        intake.consider_many([(path, watch_root, True) for path in images(root, 40, prefix="many")])
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert infos == ["40 jobs queued: many_00.png ... many_39.png (a line each at debug level)"]
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG and " queued: many_" in r.getMessage()]
        assert len(debug) == 40 and debug[0].JOB_ID == 4  # each job's own line, with its journald fields
    finally:
        journal.close()


def test_a_caption_written_after_an_earlier_chunk_read_its_folder_is_seen_by_the_next_chunk(tmp_path):
    """Each chunk lists its folders itself. A listing kept from an earlier chunk (tried in round 5 for speed) could be
    older than a caption written within its image's settle window, noticed late on a polling share: the image's job
    went out with the template's other words before the caption's event moved the settings generation."""
    (tmp_path / "hot").mkdir()
    config = make_config(tmp_path / "hot", prompt="{{ caption or subject }}")
    root = config.watch[0].path
    shoot = root / "shoot"
    shoot.mkdir()
    first, second = images(shoot, 2)
    context = examine_pool.SettingsContext.of(config, "default", 1)
    assert examine_pool._examine_chunk(examine_file, [(str(first), str(root))], context)[0].new_job.prompt == "img 00"
    (shoot / "img_01.txt").write_text("a red kite over the dunes")  # the same settings generation: no event yet
    examined = examine_pool._examine_chunk(examine_file, [(str(second), str(root))], context)[0]
    assert examined.new_job.prompt == "a red kite over the dunes"


def test_a_file_over_max_image_mb_is_never_read_in_a_pool_process(tmp_path):
    """A 2 GB TIFF in a burst: the pool leaves it to the intake thread, which fails it unread (watch.max_image_mb);
    read whole in a pool process, it could bring the OOM killer to the machine."""
    import dataclasses

    (tmp_path / "hot").mkdir()
    config = make_config(tmp_path / "hot")
    config = dataclasses.replace(config, watch=(dataclasses.replace(config.watch[0], max_image_mb=0.05),))
    root = config.watch[0].path
    big, small = root / "poster.bmp", root / "small.jpg"
    write_image(big, size=(200, 200))
    write_image(small)
    context = examine_pool.SettingsContext.of(config, "default", 1)
    found = examine_pool._examine_chunk(examine_file, [(str(big), str(root)), (str(small), str(root))], context)
    assert found[0] is None and found[1].new_job is not None


def test_a_chunk_s_files_are_asked_of_the_kernel_together_and_none_behind_a_link(tmp_path, monkeypatch):
    """The pool asks for a chunk's files at once before reading them (a first start reads them from disk); a file
    in a folder that is a link to elsewhere is not opened for that either."""
    import os

    from tests.core.test_images import _advised

    intake, journal, root = intake_of(tmp_path, "hot")
    journal.close()
    (root / "shoot").mkdir()
    files = images(root / "shoot", 3)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = images(outside, 1, prefix="secret")[0]
    (root / "linked").symlink_to(outside, target_is_directory=True)
    calls = _advised(monkeypatch)
    chunk = [(str(path), str(root)) for path in files] + [(str(root / "linked" / secret.name), str(root))]
    results = examine_pool._examine_chunk(examine_file, chunk, None)
    assert [path for path, *_ in calls] == [str(path) for path in files]
    assert all(result is not None and result.facts is not None for result in results[:3]) and results[3] is None
    assert all(advice == os.POSIX_FADV_WILLNEED for *_, advice in calls)


def test_on_a_network_share_the_kernel_is_not_asked_first(tmp_path, monkeypatch):
    """On NFS or SMB each file's extra open and close for the read-ahead are round trips of their own: there the
    files are only read, as before. An unknown file system is not read ahead either."""
    from i2vd.core.mounts import Mount
    from tests.core.test_images import _advised

    intake, journal, root = intake_of(tmp_path, "hot")
    journal.close()
    (root / "share").mkdir()
    files = images(root / "share", 3)
    chunk = [(str(path), str(root)) for path in files]
    calls = _advised(monkeypatch)
    for mounts in ([Mount(str(root / "share"), "nfs4", "nas:/photos")], []):
        monkeypatch.setattr(pool_chunks, "read_mounts", lambda mounts=mounts: mounts)
        results = examine_pool._examine_chunk(examine_file, chunk, None)
        assert calls == [] and all(result is not None and result.facts is not None for result in results)
    monkeypatch.setattr(pool_chunks, "read_mounts", lambda: [Mount("/", "ext4", "/dev/sda1")])
    examine_pool._examine_chunk(examine_file, chunk, None)
    assert [path for path, *_ in calls] == [path for path, _ in chunk]
