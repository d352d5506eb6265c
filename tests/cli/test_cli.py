"""The `i2vd` command line, called in-process as `main([...])` and read through capsys.

Each test has its own config file, state_dir and SQLite journal under tmp_path; the
batch tests talk HTTP to the fake /predict server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest

from i2vd.cli.commands import EX_CONFIG, main
from i2vd.config.load import Config, load_config
from i2vd.core.lock import StateLock
from i2vd.ingest.intake import Intake
from i2vd.service.daemon import journal_path
from i2vd.store.journal import JobState, Journal, NewJob
from tests.support.fakes import FakePredictServer, write_image

PARAMS = {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None}


def write_config(tmp_path: Path, server_url: str = "http://127.0.0.1:9") -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "{server_url}", timeout_seconds: 10, connect_timeout_seconds: 2}}
gpu: {{enabled: false}}
retry: {{attempts: 2, initial_backoff_seconds: 0.05, max_backoff_seconds: 0.2}}
watch:
  - {{path: in, settle_seconds: 0}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def restore_logging():
    """`i2vd batch` reconfigures the root logger onto the captured stderr: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file)


@pytest.fixture
def journal(config: Config):
    opened = Journal(journal_path(config))
    try:
        yield opened
    finally:
        opened.close()


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def new_job(name: str, error: str | None = None) -> NewJob:
    return NewJob(
        idem_key=f"key-{name}",
        source_path=f"/srv/in/{name}",
        root="/srv/in",
        rel_path=name,
        source_sha256="0" * 64,
        source_size=1234,
        profile_name="default",
        prompt=f"A {name} scene",
        params=PARAMS,
        error=error,
    )


@pytest.fixture
def jobs_in_every_state(journal: Journal) -> dict[str, int]:
    done, _ = journal.add_job(new_job("done.jpg"))
    assert journal.claim_next("worker", 60).id == done.id
    journal.mark_done(done.id, {"kind": "predict", "url": "http://gpu:7860/api/predict/"}, 2.5)
    running, _ = journal.add_job(new_job("running.jpg"))
    assert journal.claim_next("worker", 60).id == running.id
    rejected, _ = journal.add_job(
        new_job("broken.jpg", error="broken.jpg is damaged or incomplete: image file is truncated")
    )
    failed, _ = journal.add_job(new_job("server.jpg"))
    queued, _ = journal.add_job(new_job("queued.jpg"))
    journal.mark_failed(failed.id, "HTTP 500 from http://gpu:7860/api/predict/: boom")
    return {"done": done.id, "running": running.id, "rejected": rejected.id, "failed": failed.id, "queued": queued.id}


# -- status ----------------------------------------------------------------------------


def test_status_counts_jobs_by_state_and_shows_last_errors(capsys, config_file, jobs_in_every_state):
    code, out, _ = cli(capsys, "status", "-c", str(config_file))

    assert code == 0
    assert "daemon:  not running" in out
    assert "1 queued" in out and "1 running" in out and "1 done" in out and "2 failed" in out
    assert "image file is truncated" in out
    assert "boom" in out


def test_status_json(capsys, config_file, jobs_in_every_state, journal):
    code, out, _ = cli(capsys, "status", "--json", "-c", str(config_file))

    assert code == 0
    status = json.loads(out)
    assert status["counts"] == {"queued": 1, "running": 1, "parked": 0, "done": 1, "failed": 2}
    assert status["daemon"]["running"] is False
    assert status["journal"] == str(journal.path)
    assert {failure["id"] for failure in status["recent_failures"]} == {
        jobs_in_every_state["rejected"],
        jobs_in_every_state["failed"],
    }


def test_status_says_running_while_a_daemon_holds_the_lock(capsys, config_file, config, journal):
    journal.publish_status({"pid": os.getpid()})
    with StateLock(config.state_dir):
        code, out, _ = cli(capsys, "status", "-c", str(config_file))
    assert code == 0
    assert f"running, PID {os.getpid()}" in out

    code, out, _ = cli(capsys, "status", "-c", str(config_file))  # lock released: not running, whatever was published
    assert "not running" in out


def test_status_without_a_journal_exits_1(capsys, config_file):
    code, _, err = cli(capsys, "status", "-c", str(config_file))
    assert code == 1
    assert "no journal" in err


def test_a_bad_config_exits_78_with_every_problem(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\nprofiles: {beach: {fps: 40, frames: 2}}\nwatch: [{path: in}]\n", encoding="utf-8")
    code, _, err = cli(capsys, "status", "-c", str(bad))
    assert code == EX_CONFIG
    assert "profiles.beach.fps" in err and "profiles.beach.frames" in err


# -- jobs --------------------------------------------------------------------------------


def test_jobs_by_state_shows_the_error(capsys, config_file, jobs_in_every_state):
    code, out, _ = cli(capsys, "jobs", "--state", "failed", "-c", str(config_file))

    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["ID", "STATE"]
    assert len(lines) == 3
    assert "broken.jpg" in out and "image file is truncated" in out
    assert "server.jpg" in out and "HTTP 500" in out
    assert "queued.jpg" not in out and "done.jpg" not in out


def test_jobs_json_parses(capsys, config_file, jobs_in_every_state):
    code, out, _ = cli(capsys, "jobs", "--json", "-c", str(config_file))

    assert code == 0
    jobs = json.loads(out)
    assert {job["id"]: job["state"] for job in jobs} == {
        jobs_in_every_state["done"]: "done",
        jobs_in_every_state["running"]: "running",
        jobs_in_every_state["rejected"]: "failed",
        jobs_in_every_state["failed"]: "failed",
        jobs_in_every_state["queued"]: "queued",
    }
    assert all(job["params"] == PARAMS for job in jobs)
    done = next(job for job in jobs if job["state"] == "done")
    assert done["finished_at"] >= done["started_at"]  # when it ended (also i2vd_job_duration_seconds)
    assert all("lease_owner" not in job for job in jobs)  # journal version 5 dropped it: nothing read it


# -- retry -------------------------------------------------------------------------------


def real_failed_job(
    config: Config, journal: Journal, name: str, color: tuple[int, int, int], sidecar: str | None = None
) -> int:
    """A job made by the intake from a real image in the hot folder, then failed on the server."""
    image = config.watch[0].path / name
    write_image(image, color=color)
    if sidecar is not None:
        (image.parent / "i2vd.yaml").write_text(sidecar, encoding="utf-8")
    job = Intake(config, journal).consider(image, config.watch[0]).job
    journal.mark_failed(job.id, "HTTP 500 from the server: boom")
    return job.id


def test_retry_one_job_requeues_it_and_says_so(capsys, config_file, config, journal):
    job_id = real_failed_job(config, journal, "server.jpg", (9, 9, 9))
    code, out, _ = cli(capsys, "retry", str(job_id), "-c", str(config_file))

    assert code == 0
    assert f"job {job_id} server.jpg: queued with profile default" in out
    job = journal.job(job_id)
    assert job.state is JobState.QUEUED and job.attempts == 0 and job.last_error is None


def test_retry_failed_requeues_every_failed_job_whose_file_is_still_there(
    capsys, config_file, config, journal, jobs_in_every_state
):
    real = [real_failed_job(config, journal, f"r{index}.jpg", (index, 5, 5)) for index in range(2)]
    code, out, _ = cli(capsys, "retry", "--failed", "-c", str(config_file))

    assert code == 1  # the journal-only jobs of jobs_in_every_state have no file on disk: they fail again, saying so
    assert all(journal.job(job_id).state is JobState.QUEUED for job_id in real)
    gone = journal.job(jobs_in_every_state["failed"])
    assert gone.state is JobState.FAILED and "No such file" in gone.last_error
    assert "No such file" in out


def test_retry_applies_the_sidecar_as_it_is_now(capsys, config_file, config, journal):
    config = load_config(config_file.parent / write_profiles(config_file))
    job_id = real_failed_job(config, journal, "photo.jpg", (3, 4, 5), sidecar="profile: beach\n")
    assert journal.job(job_id).prompt == "Waves"
    (config.watch[0].path / "i2vd.yaml").write_text("profile: forest\n", encoding="utf-8")

    code, out, _ = cli(capsys, "retry", str(job_id), "-c", str(config_file))

    assert code == 0, out
    job = journal.job(job_id)
    assert (job.state, job.profile_name, job.prompt) == (JobState.QUEUED, "forest", "Leaves")


def write_profiles(config_file: Path) -> str:
    config_file.write_text(
        config_file.read_text() + "profiles:\n  beach: {prompt: Waves}\n  forest: {prompt: Leaves}\n", encoding="utf-8"
    )
    return config_file.name


def test_retry_of_an_unknown_job_exits_1_with_a_message(capsys, config_file, jobs_in_every_state):
    code, _, err = cli(capsys, "retry", "999", "-c", str(config_file))
    assert code == 1
    assert "999" in err and "no such job" in err


def test_retry_of_a_running_job_exits_1_saying_why(capsys, config_file, jobs_in_every_state):
    code, _, err = cli(capsys, "retry", str(jobs_in_every_state["running"]), "-c", str(config_file))
    assert code == 1
    assert "running" in err


# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_a_file_and_a_folder_then_again_says_known(capsys, tmp_path, config_file, config):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    single = tmp_path / "single.jpg"
    write_image(single, color=(1, 1, 1))
    write_image(photos / "a.jpg", color=(2, 2, 2))
    write_image(photos / "sub" / "b.png", color=(3, 3, 3))

    code, out, _ = cli(capsys, "enqueue", str(single), str(photos), "-c", str(config_file))

    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("queued") for line in lines), out
    journal = Journal(journal_path(config))
    try:
        assert journal.counts()["queued"] == 3
    finally:
        journal.close()

    code, out, _ = cli(capsys, "enqueue", str(single), str(photos), "-c", str(config_file))

    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("known") for line in lines), out


def test_enqueue_a_text_file_named_jpg_reports_failed_with_the_reason(capsys, tmp_path, config_file, config):
    fake = tmp_path / "x.jpg"
    fake.write_text("this is not a photo\n", encoding="utf-8")

    code, out, _ = cli(capsys, "enqueue", str(fake), "-c", str(config_file))

    assert code == 1
    assert out.startswith("failed")
    assert "x.jpg" in out and "not an image" in out
    journal = Journal(journal_path(config))
    try:
        [job] = journal.jobs()
        assert job.state is JobState.FAILED and "not an image" in job.last_error
    finally:
        journal.close()


# -- batch -------------------------------------------------------------------------------


def test_batch_processes_every_image_and_a_second_run_is_instant(capsys, tmp_path, fake_server: FakePredictServer):
    config_file = write_config(tmp_path, fake_server.url)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    images = {"a.jpg": (10, 0, 0), "b.png": (0, 10, 0), "sub/c.jpg": (0, 0, 10)}
    for name, color in images.items():
        write_image(photos / name, color=color)

    code, _, err = cli(capsys, "batch", str(photos), "-c", str(config_file))

    assert code == 0, err
    assert "3 done, 0 failed" in err
    assert len(fake_server.requests) == 3
    for name in images:
        video = tmp_path / "out" / Path(name).with_suffix(".mp4")
        assert video.is_file() and video.with_name(video.name + ".json").is_file()

    started = time.monotonic()
    code, _, err = cli(capsys, "batch", str(photos), "-c", str(config_file))
    elapsed = time.monotonic() - started

    assert code == 0, err
    assert len(fake_server.requests) == 3  # resumable: nothing is done twice
    assert "3 done, 0 failed" in err
    assert elapsed < 3


def test_batch_reports_a_failed_image_and_exits_1(capsys, tmp_path, fake_server: FakePredictServer):
    config_file = write_config(tmp_path, fake_server.url)
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "good.jpg", color=(10, 0, 0))
    bad = write_image(photos / "bad.jpg", color=(0, 10, 0))
    fake_server.fail_with(500, "boom", when=lambda request: request.image_sha256 == hashlib.sha256(bad).hexdigest())

    code, _, err = cli(capsys, "batch", str(photos), "-c", str(config_file))

    assert code == 1
    assert "1 done, 1 failed" in err
    assert "bad.jpg" in err and "HTTP 500" in err
