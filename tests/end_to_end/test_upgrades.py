"""`i2vd run` upgrades a journal of an earlier release before READY; an older i2vd refuses a newer one.

The journals are the fixtures written by earlier releases (tests/fixtures/journals/).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from i2vd.store.journal import SCHEMA_VERSION, Journal
from tests.end_to_end.harness import journal_counts, run_cli, write_config
from tests.support.fakes import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "journals"


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def place(tmp_path: Path, fixture: str) -> Path:
    journal = tmp_path / "state" / "journal.sqlite3"
    journal.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / fixture, journal)
    return journal


def test_status_and_jobs_on_an_older_journal_say_to_run_the_daemon_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    journal = place(tmp_path, "a89a1cb.sqlite3")
    content = journal.read_bytes()
    for command in ("status", "jobs"):
        result = run_cli(config, command, check=False)
        assert result.returncode == 1, result.stderr
        assert "run `i2vd run` once to upgrade" in result.stderr
        assert "Traceback" not in result.stderr
    assert journal.read_bytes() == content


def test_the_daemon_upgrades_an_older_journal_before_ready_and_keeps_every_job(tmp_path: Path, daemon_factory) -> None:
    config = write_config(tmp_path, None)
    journal = place(tmp_path, "a89a1cb.sqlite3")
    db = sqlite3.connect(journal)
    (running,) = db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchone()
    total = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.close()
    daemon = daemon_factory(config).start()  # READY=1 only after the upgrade
    assert user_version(journal) == SCHEMA_VERSION
    backup = journal.with_name("journal.sqlite3.bak-v0")
    assert user_version(backup) == 0
    assert "upgraded from schema version 0" in daemon.log()
    counts = journal_counts(tmp_path / "state")
    assert (counts["done"], counts["failed"], sum(counts.values())) == (1, 2, total)
    opened = Journal(journal)
    try:  # the job the old release left running went back to the queue at start
        assert any("after interruption 1" in event["message"] for event in opened.events(running))
    finally:
        opened.close()
    result = run_cli(config, "status")
    assert "1 done" in result.stdout
    assert daemon.stop() == 0


def test_a_newer_journal_stops_the_daemon_with_exit_78_and_is_left_alone(tmp_path: Path, daemon_factory) -> None:
    config = write_config(tmp_path, None)
    journal = place(tmp_path, "fe75e61.sqlite3")
    db = sqlite3.connect(journal)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    content = journal.read_bytes()
    daemon = daemon_factory(config).start(wait_ready=False)
    wait_for(lambda: daemon.process.poll() is not None, timeout=30, message="the daemon did not exit")
    assert daemon.process.returncode == 78
    assert "written by a newer i2vd" in daemon.log()
    assert not daemon.said("READY=1")
    assert journal.read_bytes() == content
    for command in ("status", "jobs", "retry --failed"):
        result = run_cli(config, *command.split(), check=False)
        assert result.returncode == 78 and "written by a newer i2vd" in result.stderr, (command, result.stderr)
