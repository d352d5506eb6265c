"""A folder renamed while its images wait: the sidecar 'deleted' at the old place must not re-resolve
jobs whose files left with it (seen: `job 1 queued: shootA/a1.jpg (profile default)` logged and
recorded for a beach shoot until the job followed its file)."""

from __future__ import annotations

from pathlib import Path

from i2vd.config.load import parse_config
from i2vd.ingest.intake import Intake, Outcome
from i2vd.store.journal import Journal
from tests.support.fakes import write_image


def test_a_renamed_folder_s_jobs_keep_their_sidecar_profile_until_they_follow_their_files(tmp_path: Path):
    root = tmp_path / "in"
    (root / "shootA").mkdir(parents=True)
    (root / "shootA" / "i2vd.yaml").write_text("profile: beach\n", encoding="utf-8")
    image = root / "shootA" / "a1.jpg"
    write_image(image, color=(10, 120, 200))
    config = parse_config(
        f"output_dir: {tmp_path / 'out'}\nstate_dir: {tmp_path / 'state'}\nserver: {{kind: builtin}}\n"
        f"gpu: {{enabled: false}}\nwatch: [{{path: {root}}}]\n"
        "profiles: {default: {resolution: 256p, frames: 8, fps: 4}, beach: {prompt: Waves}}\n"
    )
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    try:
        intake = Intake(config, journal)
        job = intake.consider(image, config.watch[0]).job
        assert job.profile_name == "beach"
        (root / "shootA").rename(root / "shootB")  # the sidecar leaves with its images
        results = intake.reresolve_under(root / "shootA")
        assert all(result.outcome is Outcome.KNOWN for result in results), results
        after = journal.job(job.id)
        assert after.profile_name == "beach" and after.idem_key == job.idem_key
    finally:
        journal.close()
