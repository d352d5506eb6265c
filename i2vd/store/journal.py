"""The SQLite journal: jobs, the files already seen, events and the daemon's status.

It and its mixins (i2vd.store.files, .claims, .queries, .outbox; the layout in .schema) hold all the SQL.
The database runs in WAL mode with synchronous=FULL so a power cut after a commit loses nothing (one commit, a
prepared job's start, is fsynced just after instead: Claims.mark_sending), and every write is
a `BEGIN IMMEDIATE` transaction so a claim can never be taken twice. Readers
(`i2vd status`, `i2vd jobs`) open the same file from other processes while the
daemon writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from i2vd.core.clock import Clock
from i2vd.store.claims import Claims
from i2vd.store.files import FileMemory
from i2vd.store.outbox import Outbox
from i2vd.store.queries import Queries
from i2vd.store.recording import JobRecording, bound_events
from i2vd.store.records import (
    _JOB_COLUMNS,
    CLOSED_STATES,
    FAILED_EVENT,
    PATH_FIELDS,
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
from i2vd.store.schema import (
    EVENTS_KEPT,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    WEBHOOK_TRIGGERS,
    JournalVersionError,
    backup_path,
)
from i2vd.store.tally import FailureTally
from i2vd.store.workers import WorkersSeen

__all__ = [
    "CLOSED_STATES",
    "EVENTS_KEPT",
    "JOURNAL_NAME",
    "MIGRATIONS",
    "PATH_FIELDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "WEBHOOK_TRIGGERS",
    "Job",
    "JobState",
    "Journal",
    "JournalVersionError",
    "KnownFile",
    "NewJob",
    "backup_path",
    "db_path",
    "journal_path",
    "printable",
    "py_path",
]

log = logging.getLogger("i2vd.journal")


JOURNAL_NAME = "journal.sqlite3"
CACHE_KIB = 16_384  # the writer's page cache (SQLite's default is 2 MB)
CHECKPOINT_PAGES = 4_000  # WAL pages before a checkpoint (SQLite's default is 1,000)


def journal_path(config: Any) -> Path:
    """The journal of a config (anything with a state_dir): here, so `i2vd status` need not import the daemon."""
    return Path(config.state_dir) / JOURNAL_NAME


class Journal(JobRecording, FileMemory, Claims, Queries, Outbox, WorkersSeen):
    def __init__(self, path: Path, clock: Clock | None = None, *, read_only: bool = False, upgrade: bool = True):
        """Open (and create) the journal; read_only for `status` and `jobs`, which may run as another user.

        An older journal is upgraded unless `upgrade` is False (a daemon of the earlier release still runs
        on it): then, as on a read-only open, JournalVersionError says to run `i2vd run` once.
        """
        self.path = Path(path)
        self.clock = clock or Clock()
        self._lock = threading.RLock()
        self._held: set[int] = set()  # jobs a worker of this process is on: their leases are never swept
        self._failures = FailureTally()  # /metrics' i2vd_failures_total (tally.py)
        if read_only:
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=30,
                isolation_level=None,
                check_same_thread=False,
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._check_version(upgrade=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        # A first start over 100,000 images puts random keys (idem_key, content) into indexes far larger than the
        # default 2 MB cache, and each checkpoint of 1,000 pages copies the same hot index pages again: 16 MB and
        # checkpoints of 4,000 pages took ~20 % off recording a job (benchmarks/RESULTS.md, round 5).
        self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._check_version(upgrade=upgrade)

    def _version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _check_version(self, *, upgrade: bool) -> None:
        """Create a new journal, upgrade an older one (after a backup copy), refuse a newer one."""
        version = self._version()
        if version == SCHEMA_VERSION or (not upgrade and version < SCHEMA_VERSION and self._is_empty()):
            return
        if version > SCHEMA_VERSION or not upgrade:
            self._db.close()
            raise JournalVersionError(self.path, version)
        try:
            backup = None if self._is_empty() else self._backup(version)
            with self._write() as db:  # one transaction: the journal is the old one or the new one, never half
                version = self._version()  # another process may have upgraded it meanwhile
                if version > SCHEMA_VERSION:
                    raise JournalVersionError(self.path, version)
                if version == SCHEMA_VERSION:
                    backup = None
                elif not self._is_empty():
                    for migrate in MIGRATIONS[version:]:
                        migrate(db)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                for statement in WEBHOOK_TRIGGERS:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise
        if backup is not None:
            log.warning(
                "journal %s upgraded from schema version %d to %d; the old one is kept as %s",
                self.path,
                version,
                SCHEMA_VERSION,
                backup,
            )

    def _is_empty(self) -> bool:
        found = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
        return found.fetchone()[0] == 0

    def _backup(self, version: int) -> Path:
        """A consistent copy (the WAL included) as journal.sqlite3.bak-v<version>, written whole or not at all."""
        target = backup_path(self.path, version)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial)
        try:
            with self._lock:
                self._db.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        return target

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._failures.rollback()
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._failures.commit()

    def _read(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    # -- recording jobs ------------------------------------------------------------

    @staticmethod
    def _rows_by_id(db: sqlite3.Connection, job_ids: list[int]) -> list[sqlite3.Row]:
        rows = []
        unique = sorted(set(job_ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows += db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
        return rows

    def unstarted_jobs(
        self, under: str | None = None, *, parked_only: bool = False, after_id: int = 0, limit: int | None = None
    ) -> list[Job]:
        """Queued and parked jobs (optionally those whose source is under a folder): what a sidecar edit may change.

        In id order; with `after_id` and `limit`, one page of them (100,000 queued jobs are not read at once).
        """
        states = (JobState.PARKED,) if parked_only else (JobState.QUEUED, JobState.PARKED)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({_sql(*states)}) AND id > ?"
        parameters: tuple = (after_id,)
        if under is not None:
            sql += " AND substr(source_path, 1, ?) = ?"
            prefix = db_path(under.rstrip("/") + "/")
            parameters += (len(prefix), prefix)
        sql += " ORDER BY id" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [_job(row) for row in self._read(sql, parameters)]

    def reresolve(
        self, job_id: int, new: NewJob, *, from_states: tuple[JobState, ...], fresh_start: bool = False
    ) -> tuple[Job | None, int | None]:
        """Give a job new settings (and state queued, parked or failed from `new`).

        Only a job in one of `from_states` changes: a job the worker took meanwhile
        keeps its settings. Returns (the job, None), or (None, other id) when another
        job already has the new idempotency key, or (None, None) when the job moved on.
        `fresh_start` (a retry) also resets attempts and the output path.
        """
        now = self.clock.now()
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobState(row["state"]) not in from_states:
                return None, None
            other = db.execute("SELECT id FROM jobs WHERE idem_key = ? AND id != ?", (new.idem_key, job_id)).fetchone()
            if other is not None:
                return None, other["id"]
            reset = ", attempts = 0, interruptions = 0, output_path = NULL, finished_at = NULL" if fresh_start else ""
            db.execute(
                "UPDATE jobs SET idem_key = ?, state = ?, profile_name "
                "= ?, prompt = ?, params_json = ?, profile_json = ?,"
                f" output_name = ?, priority = ?, last_error = ?, "
                f"next_attempt_at = ?, updated_at = ?{reset} WHERE id = ?",
                (
                    new.idem_key,
                    new.state.value,
                    new.profile_name,
                    printable(new.prompt),
                    new.params_json,
                    new.profile_json,
                    printable(new.output_name),
                    new.priority,
                    printable(new.error or new.parked),
                    now,
                    now,
                    job_id,
                ),
            )
            if new.state is JobState.FAILED:
                db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (now, job_id))
            message = {
                JobState.QUEUED: f"settings now: profile {new.profile_name}",
                JobState.PARKED: f"parked: {new.parked}",
                JobState.FAILED: f"{FAILED_EVENT}{new.error}",
            }
            level = {JobState.QUEUED: "info", JobState.PARKED: "warning", JobState.FAILED: "error"}[new.state]
            self._event(db, job_id, level, message[new.state])
            return _job(db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()), None

    def downgrade(self, job_id: int, params: dict[str, Any], note: str) -> None:
        """Back to the queue at once with lower settings (after an out-of-memory reply); no attempt used.

        The idempotency key stays: it names the request as the user made it, and the
        job's profile record keeps what was asked for under `downgraded_from`.
        """
        now = self.clock.now()
        with self._write() as db:
            row = db.execute("SELECT params_json, profile_json FROM jobs WHERE id = ?", (job_id,)).fetchone()
            profile = json.loads(row["profile_json"])
            profile.setdefault("downgraded_from", json.loads(row["params_json"]))
            db.execute(
                f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, params_json = ?, profile_json = ?, last_error = ?,"
                " next_attempt_at = ?,"
                " lease_expires_at = NULL, interruptions = 0, updated_at = ? WHERE id = ?",
                (
                    json.dumps(params, sort_keys=True),
                    json.dumps(profile, sort_keys=True, default=str),
                    printable(note),
                    now,
                    now,
                    job_id,
                ),
            )
            self._event(db, job_id, "warning", note)

    def merge_into(self, job_id: int, other_id: int) -> bool:
        """A not-yet-started job turned out to be the same work as another: drop it, its files and its history now
        point there. Its id is free again (the next new job takes max + 1): nothing is left under it, not even an
        outcome of it not yet made a webhook (a parked job merged away once its sidecar was fixed). False when the
        job is no longer unstarted (claimed meanwhile): nothing is merged."""
        with self._write() as db:
            unstarted = _sql(JobState.QUEUED, JobState.PARKED)
            if not db.execute(f"DELETE FROM jobs WHERE id = ? AND state IN ({unstarted})", (job_id,)).rowcount:
                return False
            db.execute("UPDATE files SET job_id = ? WHERE job_id = ?", (other_id, job_id))
            db.execute("UPDATE events SET job_id = ? WHERE job_id = ?", (other_id, job_id))
            db.execute("DELETE FROM webhook_events WHERE job_id = ?", (job_id,))
            self._event(db, other_id, "info", f"job {job_id} had the same content and settings: merged into this one")
        return True

    def add_event(self, level: str, message: str, job_id: int | None = None) -> None:
        with self._write() as db:
            self._event(db, job_id, level, message)

    def _event(self, db: sqlite3.Connection, job_id: int | None, level: str, message: str) -> None:
        self._failures.note(level, message)
        cursor = db.execute(
            "INSERT INTO events (at, job_id, level, message) VALUES (?, ?, ?, ?)",
            (self.clock.now(), job_id, level, printable(message)),
        )
        bound_events(db, cursor.lastrowid - 1, cursor.lastrowid)

    # -- what the daemon says about itself, for `i2vd status` ----------------------

    def publish_status(self, values: dict[str, Any]) -> None:
        with self._write() as db:
            for key, value in values.items():
                db.execute(
                    (
                        "INSERT INTO daemon_status (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                    ),
                    (key, json.dumps(value)),
                )
