"""Version 3 of the journal (webhooks): a version 2 journal upgraded gets the outbox and its triggers."""

from __future__ import annotations

import shutil
from pathlib import Path

from i2vd.store.journal import JobState, Journal

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "v2-0.1.0-journal.sqlite3"


def test_a_version_2_journal_upgraded_records_outcomes_for_webhooks(tmp_path: Path):
    path = tmp_path / "journal.sqlite3"
    shutil.copy(FIXTURE, path)
    journal = Journal(path)
    try:
        assert journal.query("SELECT count(*) FROM webhook_events")[0][0] == 0  # history is not replayed
        job = journal.claim_next("w", 600)
        journal.mark_failed(job.id, "boom")
        rows = journal.query("SELECT job_id, event FROM webhook_events")
        assert [tuple(row) for row in rows] == [(job.id, JobState.FAILED.value)]
        assert journal.query("SELECT count(*) FROM webhook_outbox")[0][0] == 0
    finally:
        journal.close()
