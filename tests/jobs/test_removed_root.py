"""A watch root taken out of the config (the operator moved the hot folder elsewhere) while jobs of it wait, and its
folder gone: those jobs are not "waiting for an offline share" forever. Each is looked for (the same content under
a root still watched is used), then fails as gone, using no attempt; `i2vd retry` brings it back. A root still in
the config that vanishes is still an offline share. The worker rig of test_worker.py."""

from __future__ import annotations

import shutil
import threading

from i2vd.config.load import parse_config
from i2vd.store.journal import JobState
from tests.jobs.test_worker import rig  # noqa: F401 - the fixture


def watching_only(rig, folder: str):  # noqa: F811
    (rig.config.state_dir.parent / folder).mkdir(exist_ok=True)
    text = f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "{rig.server.url}", timeout_seconds: 10, connect_timeout_seconds: 2}}
gpu: {{enabled: false}}
retry: {{attempts: 3, initial_backoff_seconds: 30, max_backoff_seconds: 600}}
watch:
  - {{path: {folder}, settle_seconds: 0}}
"""
    return parse_config(text, base_dir=rig.config.state_dir.parent)


def turns_until_settled(rig, job_id: int, turns: int = 10):  # noqa: F811
    for _ in range(turns):
        job = rig.job(job_id)
        if job.state is not JobState.QUEUED:
            return job
        rig.clock.advance(max(0.0, job.next_attempt_at - rig.clock.now()))
        rig.worker.run_once(threading.Event())
    return rig.job(job_id)


def test_a_job_of_a_root_removed_from_the_config_whose_folder_is_gone_fails_as_gone_not_offline_forever(rig):  # noqa: F811
    job, _ = rig.add("shoot/a.jpg")
    config = watching_only(rig, "elsewhere")
    rig.worker.reconfigure(config, config.server)
    rig.worker._apply_setup()
    shutil.rmtree(rig.root)

    settled = turns_until_settled(rig, job.id)

    assert settled.state is JobState.FAILED, settled.last_error
    assert settled.last_error.startswith("source file is gone") and settled.attempts == 0
    assert rig.server.requests == []


def test_a_root_still_in_the_config_that_vanishes_is_an_offline_share_and_its_jobs_wait(rig):  # noqa: F811
    job, _ = rig.add("shoot/a.jpg")
    shutil.rmtree(rig.root)

    waiting = turns_until_settled(rig, job.id, turns=5)

    assert waiting.state is JobState.QUEUED and "offline" in waiting.last_error and waiting.attempts == 0
