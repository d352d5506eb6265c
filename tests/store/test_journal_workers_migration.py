"""Version 6 of the journal (`executor: celery`): a version 5 journal, written by the release before, upgraded
gets `workers_seen`; workers recorded there are alive while seen and gone after, and stay listed."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from i2vd.core.clock import ManualClock
from i2vd.store.journal import SCHEMA_VERSION, JobState, Journal, backup_path
from i2vd.store.workers import FORGET_AFTER_SECONDS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "v5-no-lease-owner-journal.sqlite3"


def worker(worker_id: str, **extra) -> dict:
    return {
        "worker_id": worker_id,
        "queue": "i2vd",
        "host": worker_id.split("/")[0],
        "pid": 10,
        "server": "predict http://127.0.0.1:7860",
        "gate": "open: 3120 MiB used of 24576",
        "current_job": None,
        "current_key": None,
        "jobs_done": 0,
        "started_at": 1_770_000_000.0,
        "last_seen": 1_770_000_001.0,
        **extra,
    }


def test_a_version_5_journal_upgraded_keeps_its_jobs_and_records_workers(tmp_path: Path):
    path = tmp_path / "journal.sqlite3"
    shutil.copy(FIXTURE, path)
    clock = ManualClock(1_770_000_000.0)
    journal = Journal(path, clock)
    try:
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
        assert backup_path(path, 5).exists()
        assert journal.workers_seen() == []  # nothing was seen before the upgrade
        assert journal.counts()["done"] == 1 and journal.jobs(JobState.FAILED)

        journal.record_workers_seen([worker("gpu-a", current_job=3, jobs_done=2)], clock.now(), 15.0)
        [seen] = journal.workers_seen()
        assert seen["state"] == "alive" and seen["current_job"] == 3 and seen["jobs_done"] == 2
        assert seen["reported_at"] == 1_770_000_001.0 and seen["last_seen"] == clock.now()

        clock.advance(16)  # not seen for longer than its gone_after: gone, and still listed
        journal.record_workers_seen([worker("gpu-b")], clock.now(), 15.0)
        assert [(seen["worker_id"], seen["state"]) for seen in journal.workers_seen()] == [
            ("gpu-a", "gone"),
            ("gpu-b", "alive"),
        ]
        clock.advance(FORGET_AFTER_SECONDS)  # a week gone: forgotten at the next record
        journal.record_workers_seen([worker("gpu-b")], clock.now(), 15.0)
        assert [seen["worker_id"] for seen in journal.workers_seen()] == ["gpu-b"]
    finally:
        journal.close()


def test_a_worker_seen_again_is_one_row_with_what_it_says_now(tmp_path: Path):
    clock = ManualClock(1_770_000_000.0)
    journal = Journal(tmp_path / "journal.sqlite3", clock)
    try:
        journal.record_workers_seen([worker("gpu-a", current_job=1, pid=10)], clock.now(), 15.0)
        clock.advance(5)
        journal.record_workers_seen([worker("gpu-a", current_job=None, pid=11, jobs_done=1)], clock.now(), 15.0)
        [seen] = journal.workers_seen()
        assert (seen["pid"], seen["current_job"], seen["jobs_done"], seen["last_seen"]) == (11, None, 1, clock.now())
    finally:
        journal.close()
