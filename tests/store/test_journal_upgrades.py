"""Journals written by earlier releases open, upgrade in place after a backup, and keep working.

The fixtures under tests/fixtures/journals/ were written by those releases themselves
(README.md there says which commit wrote each). Every test works on a copy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import i2vd.store.journal as journal_module
from i2vd.core.clock import ManualClock
from i2vd.store.journal import SCHEMA_VERSION, JobState, Journal, JournalVersionError, NewJob, backup_path
from i2vd.store.status import render_jobs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "journals"
RELEASE_FIXTURES = sorted(FIXTURES.glob("*.sqlite3"))
# Columns a later version dropped because nothing read them: version 5, jobs.lease_owner (who took the job is
# in the claim's event, "started by <owner>")
DROPPED_COLUMNS = {"lease_owner"}


def _version_of(path: Path) -> int:
    """PRAGMA user_version read from the file header (offset 60): opening a WAL journal, even read-only,
    would leave -wal and -shm files beside the committed fixture."""
    with open(path, "rb") as handle:
        header = handle.read(64)
    assert header.startswith(b"SQLite format 3\0"), f"{path} is not an SQLite file"
    return int.from_bytes(header[60:64], "big")


def test_collecting_the_fixtures_leaves_nothing_beside_them() -> None:
    assert sorted(FIXTURES.glob("*.sqlite3-*")) == []


OLDER_FIXTURES = [path for path in RELEASE_FIXTURES if _version_of(path) < SCHEMA_VERSION]


def rows(path: Path, table: str) -> list[dict]:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY 1")]
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def columns(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    finally:
        db.close()


@pytest.fixture(params=RELEASE_FIXTURES, ids=[path.stem for path in RELEASE_FIXTURES])
def old_journal(request, tmp_path: Path) -> Path:
    target = tmp_path / "state" / "journal.sqlite3"
    target.parent.mkdir()
    shutil.copyfile(request.param, target)
    return target


def test_every_fixture_is_described_in_the_readme() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    assert RELEASE_FIXTURES, "no journal fixtures"
    for fixture in RELEASE_FIXTURES:
        assert fixture.name in readme, f"{fixture.name} is not described in {FIXTURES / 'README.md'}"
    assert any(user_version(fixture) == SCHEMA_VERSION for fixture in RELEASE_FIXTURES), (
        "this release's journal is no fixture"
    )


def test_a_journal_of_each_release_is_upgraded_with_every_row_kept(old_journal: Path) -> None:
    version = user_version(old_journal)
    before = {table: rows(old_journal, table) for table in ("jobs", "events", "files", "daemon_status")}
    states = {row["id"]: row["state"] for row in before["jobs"]}
    assert {"queued", "running", "done", "failed"} <= set(states.values())

    journal = Journal(old_journal, ManualClock(1_770_000_000.0))
    journal.close()

    assert user_version(old_journal) == SCHEMA_VERSION
    after = {table: rows(old_journal, table) for table in before}
    for table in ("events", "files", "daemon_status"):
        assert after[table] == before[table], table
    assert len(after["jobs"]) == len(before["jobs"])
    for old, new in zip(before["jobs"], after["jobs"], strict=True):
        kept = {name: value for name, value in old.items() if name not in DROPPED_COLUMNS}
        assert {name: new[name] for name in kept} == kept  # every column it had, unchanged: done stays done
        assert DROPPED_COLUMNS.isdisjoint(new)
        assert new["priority"] == old.get("priority", 0)
        assert json.loads(new["profile_json"]) == json.loads(old.get("profile_json", "{}"))
    if version < SCHEMA_VERSION:
        backup = backup_path(old_journal, version)
        assert {table: rows(backup, table) for table in before} == before
        assert user_version(backup) == version
    assert not list(old_journal.parent.glob("*.partial"))


def test_an_upgraded_journal_of_each_release_works(old_journal: Path) -> None:
    clock = ManualClock(1_770_000_000.0)
    journal = Journal(old_journal, clock)
    try:
        counts = journal.counts()
        before_failed = journal.jobs(JobState.FAILED)
        assert counts["running"] == 1 and counts["done"] == 1 and before_failed
        # the daemon's start: the job that was running when the old release stopped goes back to the queue
        assert [job.state for job in journal.recover_running(3)] == [JobState.QUEUED]
        claimed = []
        while (job := journal.claim_next("new-release", 60)) is not None:
            claimed.append(job)
            journal.set_output_path(job.id, f"/srv/out/new-{job.id}.mp4")
            journal.mark_done(job.id, {"kind": "builtin"}, 1.0)
            journal.release(job.id)
            clock.advance(60)  # the one waiting for its retry becomes due
        assert len(claimed) == counts["queued"] + 1
        # retry of a job the old release failed, as `i2vd retry` does it
        failed = before_failed[0]
        new = NewJob(
            idem_key=failed.idem_key + ":retry",
            source_path=failed.source_path,
            root=failed.root,
            rel_path=failed.rel_path,
            source_sha256=failed.source_sha256,
            source_size=failed.source_size,
            profile_name=failed.profile_name,
            prompt=failed.prompt,
            params=failed.params,
        )
        retried, other = journal.reresolve(failed.id, new, from_states=(JobState.FAILED,), fresh_start=True)
        assert other is None and retried.state is JobState.QUEUED and retried.attempts == 0
        assert journal.claim_next("new-release", 60).id == failed.id
        # the states of this release
        assert journal.forget(None) == [job.id for job in before_failed[1:]]
        assert journal.counts()["forgotten"] == len(before_failed) - 1
        assert journal.events(failed.id)[0]["job_id"] == failed.id
        # what `i2vd jobs` prints and `jobs --json` gives, for every job of the old release
        table = render_jobs(journal.jobs())
        assert all(job.rel_path in table and job.as_dict()["state"] == job.state.value for job in journal.jobs())
    finally:
        journal.close()


@pytest.mark.parametrize("fixture", OLDER_FIXTURES, ids=[path.stem for path in OLDER_FIXTURES])
def test_a_read_only_open_of_an_older_journal_says_to_run_the_daemon_once(tmp_path: Path, fixture: Path) -> None:
    old_journal = tmp_path / "journal.sqlite3"
    shutil.copyfile(fixture, old_journal)
    with pytest.raises(JournalVersionError, match=r"run `i2vd run` once to upgrade") as raised:
        Journal(old_journal, read_only=True)
    assert not raised.value.newer
    assert user_version(old_journal) < SCHEMA_VERSION  # untouched


def test_a_newer_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    content = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(JournalVersionError, match=r"written by a newer i2vd") as raised:
            Journal(path, read_only=read_only)
        assert raised.value.newer
    assert path.read_bytes() == content
    assert not list(tmp_path.glob("*.bak-*"))


def test_a_new_journal_starts_at_this_release_s_version_without_a_backup(tmp_path: Path) -> None:
    Journal(tmp_path / "journal.sqlite3").close()
    assert user_version(tmp_path / "journal.sqlite3") == SCHEMA_VERSION
    assert not list(tmp_path.glob("*.bak-*"))


def test_a_migration_that_fails_leaves_the_old_journal_as_it_was(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "journal.sqlite3"
    shutil.copyfile(FIXTURES / "a89a1cb.sqlite3", path)
    before = rows(path, "jobs")

    def broken(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal_module, "MIGRATIONS", (journal_module.MIGRATIONS[0], broken))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        Journal(path)
    assert user_version(path) == 0
    assert "priority" not in columns(path)  # the first step's ALTER TABLE was rolled back with the rest
    assert rows(path, "jobs") == before
    monkeypatch.undo()
    Journal(path).close()  # and the next start upgrades it
    assert user_version(path) == SCHEMA_VERSION and "priority" in columns(path)


def test_the_migrations_are_one_function_per_version() -> None:
    assert len(journal_module.MIGRATIONS) == SCHEMA_VERSION
    assert all(callable(step) and step.__doc__ for step in journal_module.MIGRATIONS)


def _indexed_columns(path: Path) -> set[tuple[str, str]]:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = set()
        for table, index in db.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index'").fetchall():
            columns = [row[2] for row in db.execute(f"PRAGMA index_info('{index}')")]
            if columns:
                found.add((table, columns[0]))
        return found
    finally:
        db.close()


def test_an_upgraded_journal_finds_content_by_index(old_journal: Path) -> None:
    """Version 4: each slice of a big drop looks files and jobs up by content; without an index each look
    read all 100,000 rows. Version 7: files are found through their jobs (files by job, jobs by content)."""
    Journal(old_journal).close()
    indexed = _indexed_columns(old_journal)
    assert {("files", "job_id"), ("jobs", "source_sha256")} <= indexed
    assert ("files", "sha256") not in indexed  # a random key per new file: a third of recording a job
    db = sqlite3.connect(f"{old_journal.resolve().as_uri()}?mode=ro", uri=True)
    try:
        plan = " ".join(
            row[-1]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT path, job_id FROM files WHERE job_id IN"
                " (SELECT id FROM jobs WHERE source_sha256 = ?) AND sha256 = ?",
                ("0" * 64, "0" * 64),
            )
        )
    finally:
        db.close()
    assert "files_by_job" in plan and "jobs_by_content" in plan and "SCAN" not in plan


def test_an_upgraded_journal_finds_every_file_of_a_content(old_journal: Path) -> None:
    """files_with_content goes through the jobs since version 7: it finds what looking files up by their own
    content found in the journal each release wrote."""
    contents = {row["sha256"] for row in rows(old_journal, "files")}
    expected = {
        sha256: sorted((row["path"], row["job_id"]) for row in rows(old_journal, "files") if row["sha256"] == sha256)
        for sha256 in contents
    }
    assert any(expected.values())
    journal = Journal(old_journal)
    try:
        assert {sha256: sorted(journal.files_with_content(sha256)) for sha256 in contents} == expected
    finally:
        journal.close()


def test_a_version_4_journal_loses_lease_owner_and_nothing_else(tmp_path: Path) -> None:
    """Version 5 drops jobs.lease_owner: the journal of the release before keeps every job, event and file."""
    path = tmp_path / "journal.sqlite3"
    shutil.copyfile(FIXTURES / "v4-content-index-journal.sqlite3", path)
    assert user_version(path) == 4 and "lease_owner" in columns(path)
    before = {table: rows(path, table) for table in ("jobs", "events", "files", "daemon_status", "webhook_events")}
    running = [row for row in before["jobs"] if row["state"] == "running"]
    assert running and all(row["lease_owner"] for row in running)  # the v4 release wrote it at each claim

    journal = Journal(path, ManualClock(1_770_000_000.0))
    try:
        assert [job.id for job in journal.jobs(JobState.RUNNING)] == [row["id"] for row in running]
        assert all(
            journal.events(row["id"])[-1]["message"] == f"started by {row['lease_owner']}" for row in running
        )  # who took each one is still said
    finally:
        journal.close()

    assert user_version(path) == SCHEMA_VERSION and columns(path) == columns(
        FIXTURES / "v5-no-lease-owner-journal.sqlite3"
    )
    after = {table: rows(path, table) for table in before}
    assert after["jobs"] == [{k: v for k, v in row.items() if k != "lease_owner"} for row in before["jobs"]]
    for table in ("events", "files", "daemon_status", "webhook_events"):
        assert after[table] == before[table], table
    assert {table: rows(backup_path(path, 4), table) for table in before} == before
    assert not list(path.parent.glob("*.partial"))


def test_on_sqlite_before_3_35_the_unused_column_stays(tmp_path: Path) -> None:
    """ALTER TABLE ... DROP COLUMN came with SQLite 3.35: an older library leaves lease_owner in place, unnamed."""
    path = tmp_path / "journal.sqlite3"
    shutil.copyfile(FIXTURES / "v4-content-index-journal.sqlite3", path)
    drop = journal_module.MIGRATIONS[4]
    db = sqlite3.connect(path)
    try:
        drop(db, sqlite_version=(3, 34, 1))
        assert "lease_owner" in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        drop(db)
        assert "lease_owner" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    finally:
        db.close()
