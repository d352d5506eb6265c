"""Recording new jobs, a burst at a time (a mixin of Journal).

A first start records 100,000 files in slices of a few hundred: each slice is one transaction
of three statements run many times (jobs, their events, the files), and the jobs it hands
back are made from the rows it wrote, not read again.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from i2vd.store.records import (
    FAILED_AT_INTAKE_EVENT,
    Job,
    NewJob,
    _job,
    db_path,
    printable,
)
from i2vd.store.schema import EVENTS_KEPT

# Every column of a new job; those not named here take the table's default (none, 0).
_NEW_JOB_COLUMNS = (
    "id",
    "idem_key",
    "state",
    "source_path",
    "root",
    "rel_path",
    "source_sha256",
    "source_size",
    "profile_name",
    "prompt",
    "params_json",
    "profile_json",
    "output_name",
    "priority",
    "next_attempt_at",
    "last_error",
    "queued_at",
    "finished_at",
    "updated_at",
)
_INSERT_JOB = f"INSERT INTO jobs ({', '.join(_NEW_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_NEW_JOB_COLUMNS))})"
# What the table gives a new job's other columns (schema.py): a job read back has exactly these.
_DEFAULTS = {
    "output_path": None,
    "attempts": 0,
    "interruptions": 0,
    "lease_expires_at": None,
    "server_json": None,
    "server_seconds": None,
    "started_at": None,
}


class JobRecording:
    def add_job(self, new: NewJob, mtime_ns: int | None = None) -> tuple[Job, bool]:
        """Record a job unless one with the same idempotency key exists.

        Returns the job and whether it was created. The file is remembered in the
        same transaction, so a crash cannot leave a job whose file looks unseen.
        """
        return self.add_jobs([(new, mtime_ns)])[0]

    def add_jobs(self, items: list[tuple[NewJob, int | None]]) -> list[tuple[Job, bool]]:
        """add_job for many files in one transaction: one fsync for a whole burst of new files."""
        now = self.clock.now()
        with self._write() as db:
            ids = self._job_ids_by_idem_key(db, [new.idem_key for new, _ in items])  # one query a slice, not a file
            existing = sorted(set(ids.values()))
            # One writer (the transaction holds the write lock): ids are given as SQLite would, max + 1 onwards.
            next_id = (db.execute("SELECT max(id) FROM jobs").fetchone()[0] or 0) + 1
            made: dict[int, tuple[NewJob, dict[str, Any]]] = {}
            results, files = [], []
            for new, mtime_ns in items:
                job_id = ids.get(new.idem_key)
                created = job_id is None  # a second file of one content and settings in a burst joins the first
                if created:
                    job_id = ids[new.idem_key] = next_id
                    made[job_id] = new, _new_row(new, job_id, now)
                    next_id += 1
                results.append((job_id, created))
                files.append((new, mtime_ns, job_id))
            db.executemany(_INSERT_JOB, [tuple(row[name] for name in _NEW_JOB_COLUMNS) for _, row in made.values()])
            self._events(db, [(job_id, *_recorded_event(new)) for job_id, (new, _) in made.items()])
            self._remember_files(db, files)
            found = {row["id"]: row for row in self._rows_by_id(db, existing)}
        jobs = {job_id: _job({**_DEFAULTS, **row}) for job_id, (_, row) in made.items()}
        return [(jobs[job_id] if job_id in jobs else _job(found[job_id]), created) for job_id, created in results]

    def _events(self, db: sqlite3.Connection, items: list[tuple[int | None, str, str]]) -> None:
        """_event for many (job id, level, message) at once."""
        if not items:
            return
        for _, level, message in items:
            self._failures.note(level, message)
        before = db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        now = self.clock.now()
        db.executemany(
            "INSERT INTO events (at, job_id, level, message) VALUES (?, ?, ?, ?)",
            [(now, job_id, level, printable(message)) for job_id, level, message in items],
        )
        bound_events(db, before, before + len(items))  # ids follow on from the largest (no AUTOINCREMENT)


def bound_events(db: sqlite3.Connection, before: int, after: int) -> None:
    """Events `before` + 1 .. `after` were just added: the table is kept bounded once per thousand ids, without a
    sweep on every insert."""
    if after // 1000 > before // 1000:
        db.execute("DELETE FROM events WHERE id <= ?", (after - EVENTS_KEPT,))


def _new_row(new: NewJob, job_id: int, now: float) -> dict[str, Any]:
    """The jobs row a NewJob makes, as it is written (paths as db_path stores them, text made printable)."""
    return {
        "id": job_id,
        "idem_key": new.idem_key,
        "state": new.state.value,
        "source_path": db_path(new.source_path),
        "root": db_path(new.root),
        "rel_path": db_path(new.rel_path),
        "source_sha256": new.source_sha256,
        "source_size": new.source_size,
        "profile_name": new.profile_name,
        "prompt": printable(new.prompt),
        "params_json": new.params_json,
        "profile_json": new.profile_json,
        "output_name": printable(new.output_name),
        "priority": new.priority,
        "next_attempt_at": now,
        "last_error": printable(new.error or new.parked),
        "queued_at": now,
        "finished_at": now if new.error else None,
        "updated_at": now,
    }


def _recorded_event(new: NewJob) -> tuple[str, str]:
    """The event that says how a new job was recorded (level, message)."""
    if new.error:
        return "error", f"{FAILED_AT_INTAKE_EVENT}{new.error}"
    if new.parked:
        return "warning", f"parked {new.rel_path}: {new.parked}"
    return "info", f"queued {new.rel_path} (profile {new.profile_name})"
