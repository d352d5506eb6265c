"""Journal.mark_sending: the one commit between two server calls does not wait for the disk, yet a crash of the
process right after it finds the job started (an interruption counted), and `sync` puts it on the disk."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from i2vd.core.clock import ManualClock
from i2vd.store.journal import JobState, Journal
from tests.store.test_journal import LEASE, REPO_ROOT, add

KILLED_AFTER_MARK = """
import os, signal, sys
from i2vd.store.journal import Journal
journal = Journal(sys.argv[1])
assert journal.mark_sending(int(sys.argv[2]), "w") is not None
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 the moment the start is committed: no close, no checkpoint
"""


def test_a_process_killed_right_after_marking_a_start_leaves_the_job_started(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, ManualClock())
    try:
        job = add(journal)
        assert journal.claim_next("w", LEASE, prepared=True).started_at is None
    finally:
        journal.close()
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_MARK, str(path), str(job.id)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    after = Journal(path, ManualClock())
    try:
        assert after.job(job.id).started_at is not None  # in the WAL, which the OS kept for the dead process
        [recovered] = after.recover_running(max_interruptions=3)
        assert (recovered.interruptions, recovered.state) == (1, JobState.QUEUED)  # the crash loop guard counts it
    finally:
        after.close()


def test_only_the_start_of_a_prepared_job_is_committed_without_waiting_for_the_disk(tmp_path: Path) -> None:
    """It was a synchronous=FULL commit (an fsync) on the path between two server calls."""
    journal = Journal(tmp_path / "journal.sqlite3", ManualClock())
    statements: list[str] = []
    try:
        first, second = add(journal, 1), add(journal, 2)
        journal._db.set_trace_callback(statements.append)
        journal.claim_next("w", LEASE, prepared=True)
        claimed = list(statements)
        statements.clear()
        assert journal.mark_sending(first.id, "w") is not None
        marked = list(statements)
        journal._db.set_trace_callback(None)
        assert not any("synchronous" in statement for statement in claimed)  # a claim waits for the disk (FULL)
        pragmas = [index for index, statement in enumerate(marked) if "PRAGMA synchronous" in statement]
        assert [marked[index] for index in pragmas] == ["PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL"]
        update = next(index for index, statement in enumerate(marked) if statement.startswith("UPDATE jobs"))
        commit = marked.index("COMMIT")
        assert pragmas[0] < update < commit < pragmas[1]
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for every other commit
        assert journal.mark_sending(second.id, "w") is None  # not running: nothing marked
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        journal.sync()  # the WAL fsynced (a journal with no WAL file has nothing to sync)
    finally:
        journal.close()
