"""File names from real shares: bytes that are not UTF-8, newlines, and the NFC/NFD forms of one name."""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from pathlib import Path

import pytest

from i2vd.config.load import Config, parse_config
from i2vd.core.clock import Clock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.jobs.worker import build_workers
from i2vd.store.journal import JobState, Journal
from tests.support.fakes import write_image


@pytest.fixture
def setup(tmp_path: Path):
    (tmp_path / "in").mkdir()
    config = parse_config(
        f"output_dir: {tmp_path / 'out'}\nstate_dir: {tmp_path / 'state'}\nserver: {{kind: builtin}}\n"
        f"gpu: {{enabled: false}}\nwatch: [{{path: {tmp_path / 'in'}}}]\n"
        "profiles: {default: {resolution: 256p, frames: 8, fps: 4}}\n"
    )
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    yield config, journal
    journal.close()


def run_all(config: Config, journal: Journal) -> None:
    [worker] = build_workers(config, journal, Clock())
    try:
        worker.run(threading.Event(), burst=True)
    finally:
        worker.backend.close()


def in_root(config: Config, raw_name: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(str(config.watch[0].path)) + b"/" + raw_name))


def test_a_name_that_is_not_utf8_is_recorded_processed_and_audited_without_holding_up_others(setup):
    config, journal = setup
    odd = in_root(config, b"caf\xe9 \xff.jpg")
    write_image(odd, color=(1, 2, 3))
    plain = config.watch[0].path / "plain.jpg"
    write_image(plain, color=(4, 5, 6))
    results = Intake(config, journal).consider_many([(odd, config.watch[0], True), (plain, config.watch[0], True)])
    assert [result.outcome for result in results] == [Outcome.QUEUED, Outcome.QUEUED]
    assert journal.known_file(str(odd)) is not None
    assert str(odd) in journal.known_files()

    run_all(config, journal)
    jobs = {job.source_path: job for job in journal.jobs()}
    assert jobs[str(odd)].state is JobState.DONE and jobs[str(plain)].state is JobState.DONE
    assert jobs[str(odd)].prompt == "A caf\ufffd \ufffd scene with smooth motion"  # a prompt is readable text
    video = Path(jobs[str(odd)].output_path)
    assert os.fsencode(video.name) == b"caf\xe9 \xff.mp4"  # the output keeps the name's own bytes
    record = json.loads(video.with_name(video.name + ".json").read_bytes())
    assert os.fsencode(record["source"]["path"]) == os.fsencode(str(odd))  # JSON escapes keep the exact bytes


def test_a_newline_in_a_name_is_just_a_character(setup):
    config, journal = setup
    odd = config.watch[0].path / "two\nlines.jpg"
    write_image(odd, color=(7, 8, 9))
    assert Intake(config, journal).consider(odd, config.watch[0]).outcome is Outcome.QUEUED
    run_all(config, journal)
    [job] = journal.jobs()
    assert job.state is JobState.DONE and Path(job.output_path).name == "two\nlines.mp4"


def test_nfc_and_nfd_forms_of_one_name_make_one_video_when_the_content_is_the_same(setup):
    config, journal = setup
    nfc = config.watch[0].path / unicodedata.normalize("NFC", "café.jpg")
    nfd = config.watch[0].path / unicodedata.normalize("NFD", "café.jpg")
    assert nfc != nfd
    data = write_image(nfc, color=(10, 11, 12))
    nfd.write_bytes(data)
    intake = Intake(config, journal)
    first, second = intake.consider(nfc, config.watch[0]), intake.consider(nfd, config.watch[0])
    assert first.outcome is Outcome.QUEUED
    assert second.outcome is Outcome.KNOWN and second.job.id == first.job.id  # same content, same prompt: one job
    run_all(config, journal)
    assert [path.name for path in (config.output_dir).glob("*.mp4")] == [unicodedata.normalize("NFC", "café.mp4")]


def test_nfc_and_nfd_names_with_different_content_get_two_videos_that_do_not_look_alike(setup):
    config, journal = setup
    nfc = config.watch[0].path / unicodedata.normalize("NFC", "café.jpg")
    nfd = config.watch[0].path / unicodedata.normalize("NFD", "café.jpg")
    write_image(nfc, color=(10, 11, 12))
    write_image(nfd, color=(99, 11, 12))
    intake = Intake(config, journal)
    assert intake.consider(nfc, config.watch[0]).outcome is Outcome.QUEUED
    assert intake.consider(nfd, config.watch[0]).outcome is Outcome.QUEUED
    run_all(config, journal)
    assert sorted(path.name for path in config.output_dir.glob("*.mp4")) == sorted(
        [unicodedata.normalize("NFC", "café.mp4"), unicodedata.normalize("NFC", "café-1.mp4")]
    )
