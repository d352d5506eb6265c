"""`i2vd retry` of a replaced file, `i2vd forget`, and what `jobs` shows: the operator's side of failed jobs.

In-process `main([...])` with a real config, a real journal and real images, as test_cli.py.
"""

from __future__ import annotations

import json

import pytest

from i2vd.ingest.intake import Intake, Outcome
from i2vd.store.journal import JobState, Journal
from tests.cli.test_cli import (
    cli,
    config,
    config_file,
    jobs_in_every_state,
    journal,
    real_failed_job,
    restore_logging,
)  # noqa: F401
from tests.support.fakes import write_image


def test_retry_of_a_failed_job_whose_file_was_replaced_supersedes_it_and_queues_the_new_content(
    capsys, config_file, config, journal
):  # noqa: F811
    job_id = real_failed_job(config, journal, "photo.jpg", (9, 9, 9))
    write_image(config.watch[0].path / "photo.jpg", color=(200, 10, 10))  # the user saved a fixed version

    code, out, err = cli(capsys, "retry", "--failed", "-c", str(config_file))

    assert code == 0, out + err
    old = journal.job(job_id)
    assert old.state is JobState.SUPERSEDED
    assert "superseded" in out
    (new,) = [job for job in journal.jobs(JobState.QUEUED)]
    assert new.id != job_id and new.rel_path == "photo.jpg" and new.source_sha256 != old.source_sha256
    assert f"job {new.id}" in out
    counts = journal.counts()
    assert (counts["failed"], counts["queued"], counts["superseded"]) == (0, 1, 1)
    assert journal.retryable() == []  # nothing failed is left: a second `retry --failed` has nothing to do
    code, out, _ = cli(capsys, "jobs", "--state", "superseded", "-c", str(config_file))
    assert f"the file has new content (sha256 {new.source_sha256[:12]}): job {new.id}" in out
    code, out, _ = cli(capsys, "retry", "--failed", "-c", str(config_file))
    assert code == 0 and "nothing to retry" in out


def test_retry_of_a_replaced_file_whose_new_content_is_already_a_job_links_to_it(capsys, config_file, config, journal):  # noqa: F811
    job_id = real_failed_job(config, journal, "photo.jpg", (9, 9, 9))
    image = config.watch[0].path / "photo.jpg"
    write_image(image, color=(10, 200, 10))
    already = Intake(config, journal).consider(image, config.watch[0])  # the daemon saw the new version
    assert already.outcome is Outcome.QUEUED

    code, out, _ = cli(capsys, "retry", str(job_id), "-c", str(config_file))

    assert code == 0
    assert journal.job(job_id).state is JobState.SUPERSEDED
    assert f"job {already.job.id}" in out
    assert len(journal.jobs()) == 2


def test_forget_one_failed_job_or_all_drops_them_from_the_counts_and_touches_no_file(
    capsys, config_file, config, journal
):  # noqa: F811
    first = real_failed_job(config, journal, "a.jpg", (1, 2, 3))
    second = real_failed_job(config, journal, "b.jpg", (4, 5, 6))
    files = {path: path.read_bytes() for path in config.watch[0].path.iterdir()}

    code, out, _ = cli(capsys, "forget", str(first), "-c", str(config_file))
    assert code == 0 and f"job {first} a.jpg: forgotten" in out
    assert journal.counts()["failed"] == 1
    code, out, _ = cli(capsys, "forget", "--failed", "-c", str(config_file))
    assert code == 0 and f"job {second} b.jpg: forgotten" in out
    counts = journal.counts()
    assert (counts["failed"], counts["forgotten"]) == (0, 2)
    assert {path: path.read_bytes() for path in config.watch[0].path.iterdir()} == files
    code, out, _ = cli(capsys, "status", "-c", str(config_file))
    assert "0 failed" in out and "2 forgotten" in out
    code, out, _ = cli(capsys, "jobs", "--state", "forgotten", "-c", str(config_file))
    assert "a.jpg" in out and "b.jpg" in out


def test_forget_of_a_job_that_is_not_failed_exits_1_saying_why(capsys, config_file, jobs_in_every_state):  # noqa: F811
    code, _, err = cli(capsys, "forget", str(jobs_in_every_state["done"]), "-c", str(config_file))
    assert code == 1 and "it is done" in err
    code, _, err = cli(capsys, "forget", "999", "-c", str(config_file))
    assert code == 1 and "no such job" in err


def test_jobs_counts_the_try_that_made_a_done_job_as_its_record_does(capsys, config_file, jobs_in_every_state, journal):  # noqa: F811
    assert journal.job(jobs_in_every_state["done"]).attempts == 0  # no failure used: the retry budget is whole
    code, out, _ = cli(capsys, "jobs", "--state", "done", "-c", str(config_file))
    (row,) = [line.split() for line in out.splitlines() if "done.jpg" in line]
    assert row[1:3] == ["done", "1"]
    code, out, _ = cli(capsys, "jobs", "--json", "-c", str(config_file))
    tries = {job["rel_path"]: job["tries"] for job in json.loads(out)}
    assert (tries["done.jpg"], tries["server.jpg"], tries["queued.jpg"]) == (1, 1, 0)


@pytest.mark.parametrize(
    "sidecar, expected_state", [("profile: beach\nfps: 99\n", "parked"), ("profile: beach\n", "failed")]
)
def test_parked_and_failed_jobs_show_the_profile_their_sidecar_names(
    capsys, config_file, config, journal: Journal, sidecar, expected_state
):  # noqa: F811
    config_file.write_text(config_file.read_text() + "profiles:\n  beach: {prompt: Waves}\n", encoding="utf-8")
    from i2vd.config.load import load_config

    config = load_config(config_file)
    folder = config.watch[0].path / "shoot"
    folder.mkdir()
    (folder / "i2vd.yaml").write_text(sidecar, encoding="utf-8")
    image = folder / "photo.jpg"
    if expected_state == "failed":
        image.write_bytes(b"not an image at all")
    else:
        write_image(image, color=(3, 3, 3))
    result = Intake(config, journal).consider(image, config.watch[0])
    assert result.job.state.value == expected_state
    assert result.job.profile_name == "beach"


# -- batch --profile ---------------------------------------------------------------------


def test_batch_and_enqueue_refuse_an_unknown_profile_naming_the_known_ones(capsys, tmp_path):
    from tests.cli.test_cli import write_config

    config_file = write_config(tmp_path)
    config_file.write_text(config_file.read_text() + "profiles:\n  beach: {prompt: Waves}\n", encoding="utf-8")
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.jpg", color=(1, 1, 1))
    for command in ("batch", "enqueue"):
        code, out, err = cli(capsys, command, str(photos), "--profile", "beech", "-c", str(config_file))
        assert code == 2, (command, out, err)
        assert "unknown profile 'beech'" in err and "beach" in err
    assert not (tmp_path / "state" / "journal.sqlite3").exists()  # nothing recorded


def test_batch_with_another_profile_on_a_done_folder_makes_the_videos_it_asks_for(capsys, tmp_path, fake_server):
    from tests.cli.test_cli import write_config

    config_file = write_config(tmp_path, fake_server.url)
    config_file.write_text(config_file.read_text() + "profiles:\n  beach: {prompt: Waves}\n", encoding="utf-8")
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "a.jpg", color=(1, 1, 1))
    write_image(photos / "b.jpg", color=(2, 2, 2))
    (photos / "b.jpg.yaml").write_text("profile: default\n", encoding="utf-8")  # b's own sidecar wins over --profile

    code, _, err = cli(capsys, "batch", str(photos), "-c", str(config_file))
    assert code == 0 and "2 done" in err
    code, _, err = cli(capsys, "batch", str(photos), "--profile", "beach", "-c", str(config_file))

    assert code == 0, err
    assert [request.prompt for request in fake_server.requests].count("Waves") == 1  # a.jpg again, as beach
    assert len(fake_server.requests) == 3
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        assert sorted((job.rel_path, job.profile_name) for job in journal.jobs(JobState.DONE)) == [
            ("a.jpg", "beach"),
            ("a.jpg", "default"),
            ("b.jpg", "default"),
        ]
    finally:
        journal.close()
    code, _, err = cli(capsys, "batch", str(photos), "--profile", "beach", "-c", str(config_file))
    assert code == 0 and len(fake_server.requests) == 3  # and a third run has nothing to do


# -- writers on an older journal -----------------------------------------------------------


def test_a_writer_upgrades_an_older_journal_unless_a_daemon_of_the_earlier_release_runs_on_it(capsys, tmp_path):
    import shutil
    import sqlite3
    from pathlib import Path

    from i2vd.core.lock import StateLock
    from i2vd.store.journal import SCHEMA_VERSION
    from tests.cli.test_cli import write_config

    config_file = write_config(tmp_path)
    path = tmp_path / "state" / "journal.sqlite3"
    path.parent.mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "62516b9.sqlite3", path)

    def version() -> int:
        db = sqlite3.connect(path)
        try:
            return db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()

    with StateLock(tmp_path / "state"):  # the old daemon, not yet restarted after the package upgrade
        for command in (["forget", "--failed"], ["enqueue", str(tmp_path / "in")], ["batch", str(tmp_path / "in")]):
            code, _, err = cli(capsys, *command, "-c", str(config_file))
            assert code == 1 and "run `i2vd run` once to upgrade" in err, (command, err)
        assert version() == 0
    code, out, _ = cli(capsys, "forget", "--failed", "-c", str(config_file))
    assert code == 0 and "forgotten" in out
    assert version() == SCHEMA_VERSION and path.with_name("journal.sqlite3.bak-v0").is_file()
