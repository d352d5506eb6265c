"""`on_failure: move` and its round trip through `retry`: real images, a real journal, the real intake
and worker, and the fake predict server failing (then fixed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from i2vd.config.load import parse_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.ingest.operations import retry
from i2vd.ingest.watcher import scan
from i2vd.jobs.worker import Worker
from i2vd.render.backends.predict import PredictBackend
from i2vd.render.gpu import VramGate
from i2vd.store.journal import JobState, Journal
from tests.support.fakes import FakePredictServer, write_image


class Rig:
    def __init__(self, tmp_path: Path, server: FakePredictServer, on_failure: str = "move"):
        (tmp_path / "in").mkdir(exist_ok=True)
        self.config = parse_config(
            f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "{server.url}", timeout_seconds: 10, connect_timeout_seconds: 2}}
gpu: {{enabled: false}}
retry: {{attempts: 1}}
watch: [{{path: in, settle_seconds: 0, on_failure: {on_failure}}}]
""",
            base_dir=tmp_path,
        )
        self.root = self.config.watch[0].path
        self.clock = ManualClock()
        self.journal = Journal(self.config.state_dir / "journal.sqlite3", self.clock)
        self.backend = PredictBackend(server.url, "/api/predict/", timeout_seconds=10, connect_timeout_seconds=2)
        self.worker = Worker(
            self.config,
            self.journal,
            self.backend,
            VramGate.from_config(self.config.gpu, self.clock),
            clock=self.clock,
            name="w",
        )
        self.intake = Intake(self.config, self.journal)

    def add(self, relative: str, color=(200, 80, 40)) -> tuple[int, bytes]:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = write_image(path, color=color)
        result = self.intake.consider(path, self.root_config)
        assert result.outcome is Outcome.QUEUED, result
        return result.job.id, data

    @property
    def root_config(self):
        return self.config.watch[0]

    def drain(self) -> None:
        self.worker.run(threading.Event(), burst=True)

    def close(self) -> None:
        self.backend.close()
        self.journal.close()


@pytest.fixture
def rig(tmp_path: Path, fake_server: FakePredictServer):
    made = Rig(tmp_path, fake_server)
    yield made
    made.close()


def test_a_failed_source_moves_to_the_failed_folder_with_its_error_and_retry_brings_it_back(rig, fake_server):
    job_id, data = rig.add("shoot/a.png")
    fake_server.fail_with(500, "CUDA exploded")
    rig.drain()
    job = rig.journal.job(job_id)
    assert job.state is JobState.FAILED
    parked = rig.root / ".i2vd-failed" / "shoot" / "a.png"
    assert not (rig.root / "shoot" / "a.png").exists()
    assert parked.read_bytes() == data
    error_text = (parked.parent / "a.png.error.txt").read_text()
    assert f"job: {job_id}" in error_text and "CUDA exploded" in error_text
    # the intake never takes what lies in the failed folder
    assert [path for path, _ in scan(rig.root, rig.config.excluded_folders())] == []

    fake_server.clear_faults()
    (result,) = retry(rig.config, rig.journal, [job_id])
    assert result.ok and result.outcome == "queued"
    assert (rig.root / "shoot" / "a.png").read_bytes() == data
    assert not parked.exists() and not (parked.parent / "a.png.error.txt").exists()
    rig.drain()
    assert rig.journal.job(job_id).state is JobState.DONE


def test_retry_never_overwrites_a_file_that_took_the_name_meanwhile(rig, fake_server):
    job_id, data = rig.add("a.png")
    fake_server.fail_with(500, "boom")
    rig.drain()
    newer = write_image(rig.root / "a.png", color=(1, 200, 1))  # the user dropped another a.png since
    fake_server.clear_faults()

    (result,) = retry(rig.config, rig.journal, [job_id])

    assert result.ok, result
    assert (rig.root / "a.png").read_bytes() == newer  # untouched
    assert (rig.root / "a-1.png").read_bytes() == data
    job = rig.journal.job(job_id)
    assert job.state is JobState.QUEUED and job.rel_path == "a-1.png"
    assert list((rig.root / ".i2vd-failed").iterdir()) == []
    rig.drain()
    assert rig.journal.job(job_id).state is JobState.DONE


def test_a_source_saved_again_before_the_failure_stays_in_place(rig, fake_server):
    job_id, _ = rig.add("a.png")
    newer = write_image(rig.root / "a.png", color=(5, 5, 250))  # changed after it was queued
    rig.drain()
    job = rig.journal.job(job_id)
    assert job.state is JobState.FAILED and "changed" in job.last_error
    assert (rig.root / "a.png").read_bytes() == newer
    assert not (rig.root / ".i2vd-failed").exists()


def test_a_name_taken_in_the_failed_folder_gets_a_suffix(rig, fake_server):
    first, first_data = rig.add("a.png", color=(1, 1, 1))
    fake_server.fail_with(500, "boom")
    rig.drain()
    second, second_data = rig.add("a.png", color=(2, 2, 2))  # a new a.png fails as well
    rig.drain()
    failed = rig.root / ".i2vd-failed"
    assert (failed / "a.png").read_bytes() == first_data
    assert (failed / "a-1.png").read_bytes() == second_data
    assert f"job: {second}" in (failed / "a-1.png.error.txt").read_text()
    fake_server.clear_faults()
    results = retry(rig.config, rig.journal, [second])
    assert results[0].ok
    assert (rig.root / "a.png").read_bytes() == second_data and (failed / "a.png").read_bytes() == first_data


def test_keep_leaves_the_failed_source_in_place(tmp_path, fake_server):
    rig = Rig(tmp_path, fake_server, on_failure="keep")
    try:
        job_id, data = rig.add("a.png")
        fake_server.fail_with(500, "boom")
        rig.drain()
        assert rig.journal.job(job_id).state is JobState.FAILED
        assert (rig.root / "a.png").read_bytes() == data and not (rig.root / ".i2vd-failed").exists()
    finally:
        rig.close()


def test_a_file_that_fails_at_intake_moves_too_and_a_link_never_does(rig, fake_server):
    junk = rig.root / "notes.jpg"
    junk.write_text("not an image at all")
    result = rig.intake.consider(junk, rig.root_config)
    assert result.outcome is Outcome.FAILED
    parked = rig.root / ".i2vd-failed" / "notes.jpg"
    assert parked.read_text() == "not an image at all" and not junk.exists()
    assert f"job: {result.job.id}" in (rig.root / ".i2vd-failed" / "notes.jpg.error.txt").read_text()
    target = rig.root.parent / "outside.png"
    write_image(target)
    (rig.root / "link.png").symlink_to(target)
    linked = rig.intake.consider(rig.root / "link.png", rig.root_config)
    assert linked.outcome is Outcome.FAILED
    assert (rig.root / "link.png").is_symlink() and not (rig.root / ".i2vd-failed" / "link.png").exists()
