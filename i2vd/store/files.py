"""The journal's memory of the files the watcher has seen (a mixin of Journal)."""

from __future__ import annotations

import sqlite3

from i2vd.store.records import (
    _JOB_COLUMNS,
    Job,
    JobState,
    KnownFile,
    NewJob,
    _job,
    _sql,
    db_path,
    printable,
    py_path,
)


class FileMemory:
    # -- files seen by the watcher -------------------------------------------------

    def known_files(self) -> dict[str, tuple[int, int]]:
        """path -> (size, mtime_ns) of every file already handled: the reconcile's memory."""
        with self._lock:
            cursor = self._db.execute("SELECT path, size, mtime_ns FROM files")
            return {py_path(path): (size, mtime_ns) for path, size, mtime_ns in cursor}

    def known_file(self, path: str) -> KnownFile | None:
        rows = self._read("SELECT size, mtime_ns, sha256, job_id FROM files WHERE path = ?", (db_path(path),))
        return KnownFile(*rows[0]) if rows else None

    def known_files_at(self, paths: list[str]) -> dict[str, KnownFile]:
        """known_file for a burst of paths in a few queries: path -> what the journal remembers of it."""
        found: dict[str, KnownFile] = {}
        unique = sorted(set(paths))
        for start in range(0, len(unique), 500):
            chunk = [db_path(path) for path in unique[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT path, size, mtime_ns, sha256, job_id FROM files WHERE path IN ({marks})", tuple(chunk)
            )
            found.update((py_path(row[0]), KnownFile(*row[1:])) for row in rows)
        return found

    def remember_file(self, path: str, size: int, mtime_ns: int, sha256: str, job_id: int | None) -> None:
        """The file as seen now, tied to `job_id`, unless that job is gone since the caller looked it up (merged away
        by `i2vd retry` in its own process) or its id is another content's job now (the next new job takes a freed
        id): the file then stays as it was and is read again next time, when it finds the job that holds its work."""
        with self._write() as db:
            self._remember_file(db, path, size, mtime_ns, sha256, job_id)

    def forget_files(self, paths: list[str]) -> None:
        """The next look at these files reads them afresh (asked for with other settings than their job's)."""
        with self._write() as db:
            db.executemany("DELETE FROM files WHERE path = ?", [(db_path(path),) for path in paths])

    @staticmethod
    def _job_ids_by_idem_key(db: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        """idem_key -> id of the jobs that already have one of these keys (a burst's new files, in a few queries)."""
        found: dict[str, int] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = db.execute(f"SELECT idem_key, id FROM jobs WHERE idem_key IN ({','.join('?' * len(chunk))})", chunk)
            found.update((key, job_id) for key, job_id in rows)
        return found

    @staticmethod
    def _remember_files(db: sqlite3.Connection, items: list[tuple[NewJob, int | None, int]]) -> None:
        """_remember_file for each (job, mtime_ns, job id) with an mtime, in one statement run many times."""
        db.executemany(
            "INSERT INTO files (path, size, mtime_ns, sha256, job_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
            " sha256 = excluded.sha256, job_id = excluded.job_id",
            [
                (db_path(new.source_path), new.source_size, mtime_ns, new.source_sha256, job_id)
                for new, mtime_ns, job_id in items
                if mtime_ns is not None
            ],
        )

    @staticmethod
    def _remember_file(
        db: sqlite3.Connection, path: str, size: int, mtime_ns: int, sha256: str, job_id: int | None
    ) -> None:
        db.execute(
            "INSERT INTO files (path, size, mtime_ns, sha256, job_id) SELECT ?, ?, ?, ?, ?"
            " WHERE ? IS NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = ? AND source_sha256 = ?)"
            " ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
            " sha256 = excluded.sha256, job_id = excluded.job_id",
            (db_path(path), size, mtime_ns, sha256, job_id, job_id, job_id, sha256),
        )

    def files_with_content(self, sha256: str) -> list[tuple[str, int | None]]:
        """(path, job id) of every file seen with this content: where a job whose file went away may find it."""
        # By its jobs (schema version 7): a file's content is its job's, and files are indexed by job.
        rows = self._read(
            "SELECT path, job_id FROM files WHERE job_id IN (SELECT id FROM jobs WHERE source_sha256 = ?)"
            " AND sha256 = ?",
            (sha256, sha256),
        )
        return [(py_path(path), job_id) for path, job_id in rows]

    def jobs_with_content(self, sha256s: list[str], states: tuple[JobState, ...]) -> list[Job]:
        """Jobs in `states` whose source has one of these contents (one query for a whole burst)."""
        jobs = []
        unique = sorted(set(sha256s))
        state_marks = ",".join("?" * len(states))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._read(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE source_sha256 IN ({','.join('?' * len(chunk))})"
                f" AND state IN ({state_marks}) ORDER BY id",
                (*chunk, *(state.value for state in states)),
            )
            jobs += [_job(row) for row in rows]
        return jobs

    def relocate(
        self, job_id: int, source_path: str, root: str, rel_path: str, *, from_states: tuple[JobState, ...]
    ) -> Job | None:
        """The job's file was moved (or its content found elsewhere under a root): the job follows it.

        Its video will mirror the new place (a not yet written output path is forgotten); a job
        failed because its file was gone goes back to the queue. None when the job moved on.
        """
        now = self.clock.now()
        with self._write() as db:
            row = db.execute("SELECT state, source_path FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobState(row["state"]) not in from_states:
                return None
            revive = ""
            if JobState(row["state"]) is JobState.FAILED:
                revive = (
                    f", state = {_sql(JobState.QUEUED)}, last_error = NULL, finished_at = NULL, next_attempt_at = ?"
                )
            db.execute(
                (
                    f"UPDATE jobs SET source_path = ?, root = ?, rel_path = ?, "
                    f"output_path = NULL, updated_at = ?{revive} WHERE id = ?"
                ),
                (db_path(source_path), db_path(root), db_path(rel_path), now, *((now,) if revive else ()), job_id),
            )
            self._event(
                db,
                job_id,
                "info",
                f"its file is now {printable(source_path)} (was {printable(py_path(row['source_path']))})",
            )
            return _job(db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
