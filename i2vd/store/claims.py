"""The worker's side of the journal: claims, leases, outcomes, retries (a mixin of Journal)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Collection
from typing import Any

from i2vd.store.records import (
    _JOB_COLUMNS,
    FAILED_EVENT,
    Job,
    JobState,
    _job,
    _sql,
    db_path,
    printable,
    py_path,
)

# A job claimed beside the previous call (jobs/prepare.py) is `running` with no `started_at` until it is sent
# (mark_sending): a daemon that dies before then did not die of it, so recover_running counts no interruption.


class Claims:
    # -- the worker's side ---------------------------------------------------------

    def ready_count(self) -> int:
        now = self.clock.now()
        sql = f"SELECT count(*) FROM jobs WHERE state = {_sql(JobState.QUEUED)} AND next_attempt_at <= ?"
        return self._read(sql, (now,))[0][0]

    def next_attempt_at(self) -> float | None:
        """When the earliest queued job becomes due, or None when nothing is queued."""
        return self._read(f"SELECT min(next_attempt_at) FROM jobs WHERE state = {_sql(JobState.QUEUED)}")[0][0]

    def claim_next(
        self, owner: str, lease_seconds: float, skip_roots: Collection[str] = (), *, prepared: bool = False
    ) -> Job | None:
        """The next due job: highest priority first, then the watch root whose turn is longest ago, then oldest.

        `prepared`: claimed to be read beside the current call, not yet sent (no `started_at` until mark_sending).

        Taking roots in turn means one huge drop in one hot folder does not starve the others. Jobs under
        `skip_roots` (roots outside their schedule) stay queued; the other roots are looked at as usual.
        """
        now = self.clock.now()
        with self._write() as db:
            # One indexed look per root (there are few) instead of sorting every due job (there may be 100k).
            candidates = []
            queued_roots = f"SELECT DISTINCT root FROM jobs WHERE state = {_sql(JobState.QUEUED)}"
            for (root,) in db.execute(queued_roots).fetchall():
                if py_path(root) in skip_roots:
                    continue
                best = db.execute(
                    "SELECT id, root, priority, next_attempt_at FROM jobs INDEXED BY jobs_by_root_turn"
                    f" WHERE state = {_sql(JobState.QUEUED)} AND root = ? AND next_attempt_at <= ?"
                    " ORDER BY priority DESC, next_attempt_at, id LIMIT 1",
                    (root, now),
                ).fetchone()
                if best is not None:
                    turn = db.execute("SELECT turn FROM root_turns WHERE root = ?", (root,)).fetchone()
                    candidates.append(
                        (-best["priority"], turn[0] if turn else 0, best["next_attempt_at"], best["id"], best["root"])
                    )
            if not candidates:
                return None
            *_, job_id, root = min(candidates)
            row = {"id": job_id, "root": root}
            db.execute(
                "INSERT INTO root_turns (root, turn) VALUES (?, (SELECT coalesce(max(turn), 0) + 1 FROM root_turns))"
                " ON CONFLICT (root) DO UPDATE SET turn = excluded.turn",
                (row["root"],),
            )
            db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.RUNNING)}, lease_expires_at = ?, started_at = ?,"
                " updated_at = ? WHERE id = ?",
                (now + lease_seconds, None if prepared else now, now, row["id"]),
            )
            self._event(db, row["id"], "info", f"{'prepared' if prepared else 'started'} by {owner}")
            self._held.add(row["id"])
            return _job(db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def mark_sending(self, job_id: int, owner: str) -> float | None:
        """A prepared job goes to the server now (`owner`'s call): it has started, and a crash from here interrupts
        it. Returns when it started (None: no longer running, forgotten meanwhile).

        Committed without waiting for the disk, the one commit between two server calls: in WAL mode the commit
        is in the WAL file (the OS holds it) when this returns, so a crash of the process (kill -9, an OOM kill,
        a decoder's segfault: what interruptions count) finds the job started; `sync()`, beside the call as the
        request leaves (jobs/prepare.py), or any later commit, puts it on the disk for a power cut too.
        """
        now = self.clock.now()
        with self._lock:
            self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._write() as db:
                    cursor = db.execute(
                        f"UPDATE jobs SET started_at = ?, updated_at = ? WHERE id = ?"
                        f" AND state = {_sql(JobState.RUNNING)}",
                        (now, now, job_id),
                    )
                    if not cursor.rowcount:
                        return None
                    self._event(db, job_id, "info", f"started by {owner}")
                    return now
            finally:
                self._db.execute("PRAGMA synchronous = FULL")

    def sync(self) -> None:
        """What was committed without waiting for the disk (mark_sending) on the disk now: the WAL file fsynced."""
        try:
            descriptor = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL (checkpointed away, or a journal not in WAL mode): its commits waited for the disk
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def give_back(self, job_id: int) -> bool:
        """A prepared job that was not sent: queued again as it was (its place, attempts and interruptions)."""
        now = self.clock.now()
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, lease_expires_at = NULL,"
                f" updated_at = ? WHERE id = ? AND state = {_sql(JobState.RUNNING)} AND started_at IS NULL",
                (now, job_id),
            )
            if cursor.rowcount:
                self._event(db, job_id, "info", "prepared, not sent: back in the queue")
            return cursor.rowcount == 1

    def release(self, job_id: int) -> None:
        """The worker is off this job (recorded or not): from now on its lease alone says whether it is taken."""
        with self._lock:
            self._held.discard(job_id)

    def tidy(self, max_wait_seconds: float) -> tuple[list[int], int]:
        """While the daemon runs: expired leases back to the queue, no wait beyond `max_wait_seconds` from now.

        A running job that no worker here is on and whose lease expired had an outcome that
        could not be recorded (the state disk was full for a moment): it goes back to the
        queue, using no attempt. A wall clock stepped back would push every wait out by the
        size of the step; waits are pulled in to `max_wait_seconds` from now.
        Returns the jobs returned to the queue and how many waits were shortened. Reads
        first and writes only when something is to change.
        """
        now = self.clock.now()
        latest = now + max_wait_seconds
        with self._lock:
            held = set(self._held)
            expired = [
                job_id
                for (job_id,) in self._db.execute(
                    (
                        f"SELECT id FROM jobs WHERE state = {_sql(JobState.RUNNING)} "
                        f"AND coalesce(lease_expires_at, 0) <= ?"
                    ),
                    (now,),
                )
                if job_id not in held
            ]
            far = self._db.execute(
                f"SELECT count(*) FROM jobs WHERE state = {_sql(JobState.QUEUED)} AND next_attempt_at > ?", (latest,)
            ).fetchone()[0]
            if not expired and not far:
                return [], 0
            with self._write() as db:
                returned = []
                for job_id in expired:
                    if job_id in self._held:
                        continue
                    cursor = db.execute(
                        f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, next_attempt_at = ?,"
                        " lease_expires_at = NULL, updated_at = ?"
                        f" WHERE id = ? AND state = {_sql(JobState.RUNNING)} AND coalesce(lease_expires_at, 0) <= ?",
                        (now, now, job_id, now),
                    )
                    if cursor.rowcount:
                        returned.append(job_id)
                        note = "lease expired with no outcome recorded: returned to the queue"
                        self._event(db, job_id, "warning", note)
                shortened = db.execute(
                    f"UPDATE jobs SET next_attempt_at = ? WHERE state = {_sql(JobState.QUEUED)} AND next_attempt_at >"
                    " ?",
                    (latest, latest),
                ).rowcount
                if shortened:
                    note = f"{shortened} job(s) waited past max_backoff ({max_wait_seconds:.0f} s) from now"
                    self._event(db, None, "warning", note + " (the wall clock stepped back?): now due within it")
            return returned, shortened

    def set_output_path(self, job_id: int, output_path: str) -> bool:
        """Record where the video will go; False when another job already owns that path."""
        try:
            with self._write() as db:
                db.execute(
                    "UPDATE jobs SET output_path = ?, updated_at = ? WHERE id = ?",
                    (db_path(output_path), self.clock.now(), job_id),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def take_output_path(self, job_id: int, output_path: str) -> bool:
        """`collision: overwrite`: the path becomes this job's, taken from a finished job (whose video is
        replaced; it keeps an event saying so); False while a queued or running job owns it."""
        with self._write() as db:
            row = db.execute("SELECT id, state FROM jobs WHERE output_path = ?", (db_path(output_path),)).fetchone()
            if row is not None and row["id"] != job_id:
                if row["state"] in (JobState.QUEUED.value, JobState.RUNNING.value):
                    return False
                db.execute("UPDATE jobs SET output_path = NULL WHERE id = ?", (row["id"],))
                self._event(db, row["id"], "info", f"its video {output_path} is being overwritten by job {job_id}")
            db.execute(
                "UPDATE jobs SET output_path = ?, updated_at = ? WHERE id = ?",
                (db_path(output_path), self.clock.now(), job_id),
            )
        return True

    def output_owner(self, output_path: str) -> int | None:
        rows = self._read("SELECT id FROM jobs WHERE output_path = ?", (db_path(output_path),))
        return rows[0][0] if rows else None

    def mark_done(self, job_id: int, server: dict[str, Any], server_seconds: float | None, note: str = "done") -> None:
        now = self.clock.now()
        with self._write() as db:
            db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.DONE)}, lease_expires_at = NULL,"
                " last_error = NULL,"
                " interruptions = 0, server_json = ?, server_seconds = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                (json.dumps(server, sort_keys=True), server_seconds, now, now, job_id),
            )
            self._event(db, job_id, "info", note)

    def mark_failed(self, job_id: int, error: str, *, count_attempt: bool = True) -> None:
        with self._write() as db:
            self._mark_failed(db, job_id, error, count_attempt)

    def _mark_failed(self, db: sqlite3.Connection, job_id: int, error: str, count_attempt: bool) -> None:
        now = self.clock.now()
        db.execute(
            f"UPDATE jobs SET state = {_sql(JobState.FAILED)}, attempts = attempts + ?, last_error = ?,"
            " lease_expires_at = NULL, interruptions = 0, finished_at = ?, updated_at = ? WHERE id = ?",
            (1 if count_attempt else 0, printable(error), now, now, job_id),
        )
        self._event(db, job_id, "error", f"{FAILED_EVENT}{error}")

    def fail_as_gone(self, job_id: int, error: str, examined: frozenset[str]) -> bool:
        """Fail a job whose file is gone (no attempt used), unless the intake tied a place of its content to it
        that the worker's look did not see (recorded after the look): then back to the queue, due now.

        One transaction, so a new place recorded by the intake is either seen here or, recorded later, finds
        the job failed as gone (and the intake's follow-the-content revives it).
        """
        now = self.clock.now()
        with self._write() as db:
            row = db.execute("SELECT source_sha256 FROM jobs WHERE id = ?", (job_id,)).fetchone()
            places = (
                db.execute("SELECT path FROM files WHERE sha256 = ? AND job_id = ?", (row[0], job_id)) if row else []
            )
            unseen = [py_path(path) for (path,) in places if py_path(path) not in examined]
            if unseen:
                db.execute(
                    f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, next_attempt_at = ?,"
                    " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                    (now, now, job_id),
                )
                self._event(db, job_id, "info", f"its content was just seen at {printable(unseen[0])}: looking there")
                return False
            self._mark_failed(db, job_id, error, count_attempt=False)
        return True

    def requeue(self, job_id: int, error: str | None, retry_at: float, *, count_attempt: bool) -> None:
        """A running job back to the queue; `count_attempt` is False for failures that are not the job's own.

        Only a running job moves: a job finished meanwhile (shutdown racing the worker) stays as it is.
        """
        now = self.clock.now()
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, attempts = attempts + ?, last_error = coalesce(?,"
                " last_error),"
                " next_attempt_at = ?, lease_expires_at = NULL, interruptions = 0,"
                f" updated_at = ? WHERE id = ? AND state = {_sql(JobState.RUNNING)}",
                (1 if count_attempt else 0, printable(error), retry_at, now, job_id),
            )
            if error and cursor.rowcount:
                self._event(db, job_id, "warning", f"will retry at {retry_at:.0f}: {error}")

    # -- recovery ------------------------------------------------------------------

    def recover_running(self, max_interruptions: int) -> list[Job]:
        """Return every `running` job to the queue: called only while holding the daemon lock.

        Each such job was interrupted by a dead daemon; one interrupted too often
        is failed so a file that crashes the process cannot hold the queue forever.
        """
        now = self.clock.now()
        with self._write() as db:
            rows = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = {_sql(JobState.RUNNING)}").fetchall()
            for row in rows:
                # Claimed beside another call and never sent: not interrupted (jobs/prepare.py).
                prepared = row["started_at"] is None
                interruptions = row["interruptions"] + (0 if prepared else 1)
                if not prepared and interruptions >= max_interruptions:
                    error = f"interrupted {interruptions} times (the daemon died while running it)"
                    db.execute(
                        f"UPDATE jobs SET state = {_sql(JobState.FAILED)}, interruptions = ?, last_error = ?,"
                        " lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                        (interruptions, error, now, now, row["id"]),
                    )
                    self._event(db, row["id"], "error", f"{FAILED_EVENT}{error}")
                else:
                    db.execute(
                        f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, interruptions = ?, next_attempt_at = ?,"
                        " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                        (interruptions, now, now, row["id"]),
                    )
                    note = "prepared, never sent" if prepared else f"interruption {interruptions}"
                    self._event(db, row["id"], "warning", f"returned to the queue after {note}")
            ids = [row["id"] for row in rows]
            return (
                [
                    _job(row)
                    for row in db.execute(
                        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
                    )
                ]
                if ids
                else []
            )

    def retryable(self, job_ids: list[int] | None = None) -> list[Job]:
        """Every failed job, or the named jobs that are failed or done."""
        if job_ids is None:
            rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = {_sql(JobState.FAILED)} ORDER BY id")
        else:
            marks = ",".join("?" * len(job_ids))
            finished = _sql(JobState.FAILED, JobState.DONE)
            sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks}) AND state IN ({finished}) ORDER BY id"
            rows = self._read(sql, tuple(job_ids))
        return [_job(row) for row in rows]

    def supersede(self, job_id: int, new_sha256: str, new_job_id: int | None) -> bool:
        """A failed job whose file now holds other content: closed as superseded (the content is its own job)."""
        now = self.clock.now()
        follow = f": job {new_job_id}" if new_job_id is not None else ""
        note = f"superseded: the file has new content (sha256 {new_sha256[:12]}){follow}"
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.SUPERSEDED)}, last_error = ?, updated_at = ?"
                f" WHERE id = ? AND state = {_sql(JobState.FAILED)}",
                (note, now, job_id),
            )
            if cursor.rowcount:
                self._event(db, job_id, "info", note)
            return bool(cursor.rowcount)

    def forget(self, job_ids: list[int] | None) -> list[int]:
        """`i2vd forget`: failed jobs (all, or the named ones) leave the counts; their rows and files stay."""
        now = self.clock.now()
        with self._write() as db:
            if job_ids is None:
                every_failed = f"SELECT id FROM jobs WHERE state = {_sql(JobState.FAILED)} ORDER BY id"
                ids = [row[0] for row in db.execute(every_failed)]
            else:
                failed = f"SELECT 1 FROM jobs WHERE id = ? AND state = {_sql(JobState.FAILED)}"
                ids = [job_id for job_id in job_ids if db.execute(failed, (job_id,)).fetchone()]
            for job_id in ids:
                forget = f"UPDATE jobs SET state = {_sql(JobState.FORGOTTEN)}, updated_at = ? WHERE id = ?"
                db.execute(forget, (now, job_id))
                self._event(db, job_id, "info", "forgotten: no longer counted as failed; kept in history")
            return ids
