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
        assert journal.webhook_events(100) == []  # history is not replayed
        job = journal.claim_next("w", 600)
        journal.mark_failed(job.id, "boom")
        events = journal.webhook_events(100)
        assert [(event.job_id, event.event, event.server) for event in events] == [
            (job.id, JobState.FAILED.value, None)
        ]
        assert journal.outbox_counts() == {"undelivered": 1, "given_up": 0, "last_failure": None}  # the event only
        assert journal.due_deliveries(journal.clock.now(), 100) == []
    finally:
        journal.close()
