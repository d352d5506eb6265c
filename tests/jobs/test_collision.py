"""`collision: suffix | overwrite | fail` per profile: two different images whose profile names the same
video (`output: clip.mp4`), with the real intake, journal, worker and the fake predict server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from i2vd.config.load import ConfigError, parse_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.jobs.worker import Worker
from i2vd.render.backends.predict import PredictBackend
from i2vd.render.gpu import VramGate
from i2vd.store.journal import JobState, Journal
from tests.support.fakes import FakePredictServer, write_image


def config_text(url: str, collision: str) -> str:
    return f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "{url}", timeout_seconds: 10, connect_timeout_seconds: 2}}
gpu: {{enabled: false}}
watch: [{{path: in, settle_seconds: 0}}]
profiles:
  default: {{output: "clip.mp4", collision: {collision}}}
"""


@pytest.fixture
def run_two(tmp_path: Path, fake_server: FakePredictServer):
    opened = []

    def run(collision: str):
        (tmp_path / "in").mkdir(exist_ok=True)
        config = parse_config(config_text(fake_server.url, collision), base_dir=tmp_path)
        clock = ManualClock()
        journal = Journal(config.state_dir / "journal.sqlite3", clock)
        backend = PredictBackend(fake_server.url, "/api/predict/", timeout_seconds=10, connect_timeout_seconds=2)
        opened.extend([journal, backend])
        worker = Worker(config, journal, backend, VramGate.from_config(config.gpu, clock), clock=clock, name="w")
        intake = Intake(config, journal)
        ids = []
        for index, name in enumerate(("a.png", "b.png")):
            path = config.watch[0].path / name
            write_image(path, color=(index * 90, 20, 20))
            result = intake.consider(path, config.watch[0])
            assert result.outcome is Outcome.QUEUED
            ids.append(result.job.id)
            worker.run(threading.Event(), burst=True)
        return config, journal, [journal.job(job_id) for job_id in ids]

    yield run
    for thing in opened:
        thing.close()


def _record(video: Path) -> dict:
    return json.loads(video.with_name(video.name + ".json").read_text())


def test_suffix_keeps_both_videos(run_two):
    config, _, (first, second) = run_two("suffix")
    assert (first.state, second.state) == (JobState.DONE, JobState.DONE)
    assert first.output_path == str(config.output_dir / "clip.mp4")
    assert second.output_path == str(config.output_dir / "clip-1.mp4")
    assert _record(Path(second.output_path))["job_id"] == second.id


def test_overwrite_replaces_the_other_jobs_video(run_two):
    config, journal, (first, second) = run_two("overwrite")
    video = config.output_dir / "clip.mp4"
    assert (first.state, second.state) == (JobState.DONE, JobState.DONE)
    assert second.output_path == str(video) and first.output_path is None
    assert _record(video)["job_id"] == second.id and _record(video)["source"]["relative_path"] == "b.png"
    assert not (config.output_dir / "clip-1.mp4").exists()
    assert any("overwritten by job" in event["message"] for event in journal.events(first.id))


def test_fail_fails_the_job_naming_the_existing_video(run_two):
    config, _, (first, second) = run_two("fail")
    video = config.output_dir / "clip.mp4"
    assert first.state is JobState.DONE
    assert second.state is JobState.FAILED
    assert str(video) in second.last_error and "collision: fail" in second.last_error
    assert _record(video)["job_id"] == first.id  # untouched
    assert sorted(path.name for path in config.output_dir.iterdir()) == ["clip.mp4", "clip.mp4.json"]


def test_an_unknown_policy_is_a_config_problem(tmp_path: Path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text("http://127.0.0.1:9", "replace"), base_dir=tmp_path)
    assert "profiles.default.collision" in caught.value.report()
