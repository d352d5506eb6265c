"""The SQLite journal: jobs, the files already seen, events and the daemon's status.

This is the only module with SQL in it. The database runs in WAL mode with
synchronous=FULL so a power cut after a commit loses nothing, and every write is
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
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from i2vd import __version__
from i2vd.core.clock import Clock

log = logging.getLogger("i2vd.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    idem_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    source_path TEXT NOT NULL,
    root TEXT NOT NULL,
    rel_path TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    source_size INTEGER NOT NULL,
    profile_name TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params_json TEXT NOT NULL,
    profile_json TEXT NOT NULL DEFAULT '{}',
    output_name TEXT,
    output_path TEXT UNIQUE,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    last_error TEXT,
    server_json TEXT,
    server_seconds REAL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_root_turn ON jobs (state, root, priority DESC, next_attempt_at, id);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    job_id INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_content ON files (sha256);
CREATE INDEX IF NOT EXISTS jobs_by_content ON jobs (source_sha256, state);
CREATE TABLE IF NOT EXISTS root_turns (
    root TEXT PRIMARY KEY,
    turn INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    job_id INTEGER,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS daemon_status (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhook_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER,
    event TEXT NOT NULL,
    at REAL NOT NULL,
    server_json TEXT
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    delivery_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at REAL,
    given_up_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
"""
# A job that reaches done, failed or parked leaves a webhook event in the same transaction as the change
# itself, whichever code path made it: i2vd.webhooks turns them into deliveries. (Whole statements: a
# trigger's body has its own semicolons, so these are not in SCHEMA, which is split on them.)
WEBHOOK_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS webhook_on_state AFTER UPDATE OF state ON jobs"
    " WHEN NEW.state IN ('done', 'failed', 'parked') AND NEW.state IS NOT OLD.state"
    " BEGIN INSERT INTO webhook_events (job_id, event, at) VALUES (NEW.id, NEW.state, NEW.updated_at); END",
    "CREATE TRIGGER IF NOT EXISTS webhook_on_insert AFTER INSERT ON jobs"
    " WHEN NEW.state IN ('failed', 'parked')"
    " BEGIN INSERT INTO webhook_events (job_id, event, at) VALUES (NEW.id, NEW.state, NEW.updated_at); END",
)

JOURNAL_NAME = "journal.sqlite3"
EVENTS_KEPT = 10_000
PATH_FIELDS = ("source_path", "root", "rel_path", "output_path")


def journal_path(config: Any) -> Path:
    """The journal of a config (anything with a state_dir): here, so `i2vd status` need not import the daemon."""
    return Path(config.state_dir) / JOURNAL_NAME


# -- schema versions -------------------------------------------------------------------
# The journal outlives every release. `PRAGMA user_version` says which layout a file has;
# MIGRATIONS[n] takes a journal from version n to n + 1 inside the upgrade's one
# transaction. A release that changes the layout (a column, a table, a new job state an
# older release could not read) appends one function here and bumps nothing else: the
# version is len(MIGRATIONS). Each release's journal is kept under tests/fixtures/journals/.


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _to_v1(db: sqlite3.Connection) -> None:
    """Version 0, unversioned: the journals of the first releases, whose `jobs` grew columns over time.

    a89a1cb..e2fdb09 lack profile_json and priority, 62516b9 lacks priority, 30cbdc6 and later
    have both (the layout of version 1, stamped now). Old rows get the defaults those
    releases used: no resolved-profile record, priority 0.
    """
    columns = _columns(db, "jobs")
    if "profile_json" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN profile_json TEXT NOT NULL DEFAULT '{}'")
    if "priority" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE TABLE IF NOT EXISTS root_turns (root TEXT PRIMARY KEY, turn INTEGER NOT NULL) WITHOUT ROWID")


def _to_v2(db: sqlite3.Connection) -> None:
    """Version 2 adds the job states `superseded` and `forgotten` (no column changes).

    The bump is what matters: a release of version 1 cannot read those states, so it must
    refuse this journal rather than fail on the first such row.
    """


def _to_v3_webhook_outbox(db: sqlite3.Connection) -> None:
    """Webhooks (issue 17): `webhook_events` (outcomes and server events waiting to become deliveries,
    filled by triggers on `jobs`) and `webhook_outbox` (one row per delivery, kept across restarts).
    Self-contained: its own copy of the statements, as they were when this version was made."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS webhook_events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER,"
        " event TEXT NOT NULL, at REAL NOT NULL, server_json TEXT)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS webhook_outbox (delivery_id TEXT PRIMARY KEY, url TEXT NOT NULL,"
        " event TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, delivered_at REAL, given_up_at REAL)"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at)"
        " WHERE delivered_at IS NULL AND given_up_at IS NULL"
    )
    for event, when in (("state", "AFTER UPDATE OF state"), ("insert", "AFTER INSERT")):
        states = (
            "('done', 'failed', 'parked') AND NEW.state IS NOT OLD.state"
            if event == "state"
            else "('failed', 'parked')"
        )
        db.execute(
            f"CREATE TRIGGER IF NOT EXISTS webhook_on_{event} {when} ON jobs WHEN NEW.state IN {states}"
            " BEGIN INSERT INTO webhook_events (job_id, event, at) VALUES (NEW.id, NEW.state, NEW.updated_at); END"
        )


def _to_v4_content_indexes(db: sqlite3.Connection) -> None:
    """Version 4 indexes files and jobs by content (no column changes).

    The intake looks up, for every slice of a big drop, the jobs and files with the contents it
    just read (a job follows its moved file); without these indexes each look read every row
    of a 100,000-job journal. Nothing older needs them, but a release of version 3 would not
    keep them in step either way: the bump says this layout is newer.
    """
    db.execute("CREATE INDEX IF NOT EXISTS files_by_content ON files (sha256)")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_by_content ON jobs (source_sha256, state)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_v1,
    _to_v2,
    _to_v3_webhook_outbox,
    _to_v4_content_indexes,
)
SCHEMA_VERSION = len(MIGRATIONS)


class JournalVersionError(Exception):
    """The journal's layout is not this release's: newer (refused), or older on a read-only open."""

    def __init__(self, path: Path, found: int):
        self.path, self.found, self.newer = path, found, found > SCHEMA_VERSION
        if self.newer:
            message = (
                f"the journal {path} is schema version {found}, written by a newer i2vd; i2vd {__version__} reads"
                f" version {SCHEMA_VERSION} at most: install the newer i2vd again (the upgrade left a copy of the"
                f" journal as it was before, {path.name}.bak-v<old>, if you must go back to this release)"
            )
        else:
            message = (
                f"the journal {path} is schema version {found}, from an earlier i2vd; i2vd {__version__} uses"
                f" version {SCHEMA_VERSION}: run `i2vd run` once to upgrade it"
                f" (a copy is kept as {path.name}.bak-v{found})"
            )
        super().__init__(message)


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.bak-v{version}")


def db_path(path: str) -> str | bytes:
    """A path as SQLite can hold it: TEXT when it is UTF-8, else its raw bytes (a BLOB).

    Names from SMB shares and old cameras are not always UTF-8; Python carries such
    bytes as surrogates, which SQLite's TEXT refuses. The choice is deterministic, so
    lookups by path find what was stored.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def py_path(value: str | bytes | None) -> str | None:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def printable(text: str | None) -> str | None:
    """Messages and prompts stay readable text: undecodable bytes in a name become U+FFFD."""
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    PARKED = "parked"  # waits for a broken sidecar to be fixed; never claimed
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # failed, then its file got new content, which is a job of its own (version 2)
    FORGOTTEN = "forgotten"  # failed, and `i2vd forget` dropped it from the counts; kept in history (version 2)


CLOSED_STATES = (JobState.SUPERSEDED, JobState.FORGOTTEN)  # history only: never counted as failed, never retried


def _sql(*states: JobState) -> str:
    """States as SQL literals (`'queued', 'parked'`) for the statements below: the names come from JobState only."""
    return ", ".join(f"'{JobState(state).value}'" for state in states)


@dataclass(frozen=True)
class NewJob:
    """Everything known about a job when it is recorded."""

    idem_key: str
    source_path: str
    root: str
    rel_path: str
    source_sha256: str
    source_size: int
    profile_name: str
    prompt: str
    params: dict[str, Any]
    output_name: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # resolved fields, sidecars, hash, image facts
    priority: int = 0  # from a sidecar: higher goes first
    error: str | None = None  # a job that is failed from the start (an unreadable image)
    parked: str | None = None  # why the job waits (a broken sidecar)

    @property
    def state(self) -> JobState:
        return JobState.FAILED if self.error else JobState.PARKED if self.parked else JobState.QUEUED


@dataclass(frozen=True)
class Job:
    id: int
    idem_key: str
    state: JobState
    source_path: str
    root: str
    rel_path: str
    source_sha256: str
    source_size: int
    profile_name: str
    prompt: str
    params_json: str
    profile_json: str
    output_name: str | None
    output_path: str | None
    priority: int
    attempts: int
    interruptions: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    last_error: str | None
    server_json: str | None
    server_seconds: float | None
    queued_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def profile(self) -> dict[str, Any]:
        return json.loads(self.profile_json)

    @property
    def server(self) -> dict[str, Any]:
        return json.loads(self.server_json) if self.server_json else {}

    @property
    def tries(self) -> int:
        """Calls made, the one that succeeded included: what the video's record calls `attempts`.

        `attempts` counts the job's own failures (the retry budget); a done job made one more.
        """
        return self.attempts + (1 if self.state is JobState.DONE else 0)

    def as_dict(self) -> dict[str, Any]:
        result = {field.name: getattr(self, field.name) for field in fields(self)}
        result["state"] = self.state.value
        result["tries"] = self.tries
        result["params"] = self.params
        del result["params_json"]
        result["profile"] = self.profile
        del result["profile_json"]
        result["server"] = self.server
        del result["server_json"]
        return result


_JOB_COLUMNS = ", ".join(field.name for field in fields(Job))


@dataclass(frozen=True)
class KnownFile:
    size: int
    mtime_ns: int
    sha256: str
    job_id: int | None


class Journal:
    def __init__(self, path: Path, clock: Clock | None = None, *, read_only: bool = False, upgrade: bool = True):
        """Open (and create) the journal; read_only for `status` and `jobs`, which may run as another user.

        An older journal is upgraded unless `upgrade` is False (a daemon of the earlier release still runs
        on it): then, as on a read-only open, JournalVersionError says to run `i2vd run` once.
        """
        self.path = Path(path)
        self.clock = clock or Clock()
        self._lock = threading.RLock()
        self._held: set[int] = set()  # jobs a worker of this process is on: their leases are never swept
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
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def transaction(self):
        """One write transaction, for modules that keep their own tables here (i2vd.webhooks)."""
        return self._write()

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        return self._read(sql, parameters)

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
        with self._write() as db:
            self._remember_file(db, path, size, mtime_ns, sha256, job_id)

    def forget_files(self, paths: list[str]) -> None:
        """The next look at these files reads them afresh (asked for with other settings than their job's)."""
        with self._write() as db:
            db.executemany("DELETE FROM files WHERE path = ?", [(db_path(path),) for path in paths])

    @staticmethod
    def _remember_file(
        db: sqlite3.Connection, path: str, size: int, mtime_ns: int, sha256: str, job_id: int | None
    ) -> None:
        db.execute(
            "INSERT INTO files (path, size, mtime_ns, sha256, job_id) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
            " sha256 = excluded.sha256, job_id = excluded.job_id",
            (db_path(path), size, mtime_ns, sha256, job_id),
        )

    def files_with_content(self, sha256: str) -> list[tuple[str, int | None]]:
        """(path, job id) of every file seen with this content: where a job whose file went away may find it."""
        rows = self._read("SELECT path, job_id FROM files WHERE sha256 = ?", (sha256,))
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

    # -- recording jobs ------------------------------------------------------------

    def add_job(self, new: NewJob, mtime_ns: int | None = None) -> tuple[Job, bool]:
        """Record a job unless one with the same idempotency key exists.

        Returns the job and whether it was created. The file is remembered in the
        same transaction, so a crash cannot leave a job whose file looks unseen.
        """
        return self.add_jobs([(new, mtime_ns)])[0]

    def add_jobs(self, items: list[tuple[NewJob, int | None]]) -> list[tuple[Job, bool]]:
        """add_job for many files in one transaction: one fsync for a whole burst of new files."""
        now = self.clock.now()
        results = []
        with self._write() as db:
            for new, mtime_ns in items:
                existing = db.execute("SELECT id FROM jobs WHERE idem_key = ?", (new.idem_key,)).fetchone()
                created = existing is None
                job_id = self._insert_job(db, new, now) if created else existing["id"]
                if mtime_ns is not None:
                    self._remember_file(db, new.source_path, new.source_size, mtime_ns, new.source_sha256, job_id)
                results.append((job_id, created))
            rows = {row["id"]: row for row in self._rows_by_id(db, [job_id for job_id, _ in results])}
        return [(_job(rows[job_id]), created) for job_id, created in results]

    def _insert_job(self, db: sqlite3.Connection, new: NewJob, now: float) -> int:
        cursor = db.execute(
            "INSERT INTO jobs (idem_key, state, source_path, root, rel_path, source_sha256, source_size,"
            " profile_name, prompt, params_json, profile_json, output_name, priority, next_attempt_at, last_error,"
            " queued_at, finished_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.idem_key,
                new.state.value,
                db_path(new.source_path),
                db_path(new.root),
                db_path(new.rel_path),
                new.source_sha256,
                new.source_size,
                new.profile_name,
                printable(new.prompt),
                json.dumps(new.params, sort_keys=True),
                json.dumps(new.profile, sort_keys=True, default=str),
                printable(new.output_name),
                new.priority,
                now,
                printable(new.error or new.parked),
                now,
                now if new.error else None,
                now,
            ),
        )
        job_id = cursor.lastrowid
        if new.error:
            self._event(db, job_id, "error", f"failed at intake: {new.error}")
        elif new.parked:
            self._event(db, job_id, "warning", f"parked {new.rel_path}: {new.parked}")
        else:
            self._event(db, job_id, "info", f"queued {new.rel_path} (profile {new.profile_name})")
        return job_id

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

    def unstarted_jobs(self, under: str | None = None) -> list[Job]:
        """Queued and parked jobs (optionally those whose source is under a folder): what a sidecar edit may change."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({_sql(JobState.QUEUED, JobState.PARKED)})"
        parameters: tuple = ()
        if under is not None:
            sql += " AND substr(source_path, 1, ?) = ?"
            prefix = db_path(under.rstrip("/") + "/")
            parameters = (len(prefix), prefix)
        return [_job(row) for row in self._read(sql + " ORDER BY id", parameters)]

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
                    json.dumps(new.params, sort_keys=True),
                    json.dumps(new.profile, sort_keys=True, default=str),
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
                JobState.FAILED: f"failed: {new.error}",
            }
            self._event(db, job_id, "warning" if new.state is not JobState.QUEUED else "info", message[new.state])
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
                " lease_owner = NULL, lease_expires_at = NULL, interruptions = 0, updated_at = ? WHERE id = ?",
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

    def merge_into(self, job_id: int, other_id: int) -> None:
        """A not-yet-started job turned out to be the same work as another: drop it, its files now point there."""
        with self._write() as db:
            db.execute("UPDATE files SET job_id = ? WHERE job_id = ?", (other_id, job_id))
            unstarted = _sql(JobState.QUEUED, JobState.PARKED)
            db.execute(f"DELETE FROM jobs WHERE id = ? AND state IN ({unstarted})", (job_id,))
            self._event(db, other_id, "info", f"job {job_id} had the same content and settings: merged into this one")

    # -- the worker's side ---------------------------------------------------------

    def ready_count(self) -> int:
        now = self.clock.now()
        sql = f"SELECT count(*) FROM jobs WHERE state = {_sql(JobState.QUEUED)} AND next_attempt_at <= ?"
        return self._read(sql, (now,))[0][0]

    def next_attempt_at(self) -> float | None:
        """When the earliest queued job becomes due, or None when nothing is queued."""
        return self._read(f"SELECT min(next_attempt_at) FROM jobs WHERE state = {_sql(JobState.QUEUED)}")[0][0]

    def claim_next(self, owner: str, lease_seconds: float, skip_roots: Collection[str] = ()) -> Job | None:
        """The next due job: highest priority first, then the watch root whose turn is longest ago, then oldest.

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
                f"UPDATE jobs SET state = {_sql(JobState.RUNNING)}, lease_owner = ?, lease_expires_at = ?, started_at"
                " = ?,"
                " updated_at = ? WHERE id = ?",
                (owner, now + lease_seconds, now, now, row["id"]),
            )
            self._event(db, row["id"], "info", f"started by {owner}")
            self._held.add(row["id"])
            return _job(db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (row["id"],)).fetchone())

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
                        f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, next_attempt_at = ?, lease_owner = NULL,"
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
                f"UPDATE jobs SET state = {_sql(JobState.DONE)}, lease_owner = NULL, lease_expires_at = NULL,"
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
            " lease_owner = NULL,"
            " lease_expires_at = NULL, interruptions = 0, finished_at = ?, updated_at = ? WHERE id = ?",
            (1 if count_attempt else 0, printable(error), now, now, job_id),
        )
        self._event(db, job_id, "error", f"failed: {error}")

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
                    f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, next_attempt_at = ?, lease_owner = NULL,"
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
                " next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL, interruptions = 0,"
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
                interruptions = row["interruptions"] + 1
                if interruptions >= max_interruptions:
                    error = f"interrupted {interruptions} times (the daemon died while running it)"
                    db.execute(
                        f"UPDATE jobs SET state = {_sql(JobState.FAILED)}, interruptions = ?, last_error = ?,"
                        " lease_owner = NULL,"
                        " lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                        (interruptions, error, now, now, row["id"]),
                    )
                    self._event(db, row["id"], "error", f"failed: {error}")
                else:
                    db.execute(
                        f"UPDATE jobs SET state = {_sql(JobState.QUEUED)}, interruptions = ?, next_attempt_at = ?,"
                        " lease_owner = NULL,"
                        " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                        (interruptions, now, now, row["id"]),
                    )
                    self._event(db, row["id"], "warning", f"returned to the queue after interruption {interruptions}")
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

    # -- reading -------------------------------------------------------------------

    def job(self, job_id: int) -> Job | None:
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
        parameters: tuple = ()
        if state is not None:
            sql += " WHERE state = ?"
            parameters = (state.value,)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_job(row) for row in self._read(sql, parameters)]

    def recently_updated(self, state: JobState, limit: int) -> list[Job]:
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = ? ORDER BY updated_at DESC, id DESC LIMIT ?",
            (state.value, limit),
        )
        return [_job(row) for row in rows]

    def states(self, job_ids: list[int]) -> dict[int, JobState]:
        result: dict[int, JobState] = {}
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for job_id, state in self._read(f"SELECT id, state FROM jobs WHERE id IN ({marks})", tuple(chunk)):
                result[job_id] = JobState(state)
        return result

    def counts(self) -> dict[str, int]:
        """Jobs per state; the history-only states (superseded, forgotten) appear once there are such jobs."""
        result = {state.value: 0 for state in JobState if state not in CLOSED_STATES}
        for state, count in self._read("SELECT state, count(*) FROM jobs GROUP BY state"):
            result[state] = count
        return result

    def events(self, job_id: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT id, at, job_id, level, message FROM events"
        parameters: tuple = ()
        if job_id is not None:
            sql += " WHERE job_id = ?"
            parameters = (job_id,)
        rows = self._read(sql + f" ORDER BY id DESC LIMIT {int(limit)}", parameters)
        return [dict(row) for row in reversed(rows)]

    def add_event(self, level: str, message: str, job_id: int | None = None) -> None:
        with self._write() as db:
            self._event(db, job_id, level, message)

    def _event(self, db: sqlite3.Connection, job_id: int | None, level: str, message: str) -> None:
        cursor = db.execute(
            "INSERT INTO events (at, job_id, level, message) VALUES (?, ?, ?, ?)",
            (self.clock.now(), job_id, level, printable(message)),
        )
        if cursor.lastrowid % 1000 == 0:  # keep the table bounded without a sweep on every insert
            db.execute("DELETE FROM events WHERE id <= ?", (cursor.lastrowid - EVENTS_KEPT,))

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

    def daemon_status(self) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._read("SELECT key, value FROM daemon_status")}

    # -- read-only queries for the web dashboard and /metrics (i2vd.web) --------------

    def job_page(self, state: JobState | None, limit: int, offset: int) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and how many there are in all."""
        where, parameters = (" WHERE state = ?", (state.value,)) if state is not None else ("", ())
        total = self._read(f"SELECT count(*) FROM jobs{where}", parameters)[0][0]
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?"
        return [_job(row) for row in self._read(sql, (*parameters, int(limit), int(offset)))], total

    def done_histograms(self, bounds: tuple[float, ...]) -> dict[str, tuple[list[int], int, float]]:
        """Done jobs' durations, server time and queue waits: per name, (count <= each bound, count, sum)."""
        measures = {
            "job_duration": "finished_at - started_at",
            "server": "server_seconds",
            "queue_wait": "started_at - queued_at",
        }
        result = {}
        for name, expression in measures.items():
            buckets = ", ".join(f"coalesce(sum(v <= {float(bound)!r}), 0)" for bound in bounds)
            sql = (
                f"SELECT {buckets}, count(v), coalesce(sum(v), 0.0) FROM (SELECT {expression} AS v FROM jobs "
                f"WHERE state = {_sql(JobState.DONE)} AND {expression} IS NOT NULL)"
            )
            row = list(self._read(sql)[0])
            result[name] = ([int(value) for value in row[:-2]], int(row[-2]), float(row[-1]))
        return result

    def failure_errors(self) -> list[tuple[str, int]]:
        """Errors of the jobs that ended failed (superseded and forgotten ones included), with their counts."""
        rows = self._read(
            f"SELECT coalesce(last_error, ''), count(*) FROM jobs WHERE state IN "
            f"({_sql(JobState.FAILED, *CLOSED_STATES)}) GROUP BY last_error"
        )
        return [(error, count) for error, count in rows]

    def jobs_total(self) -> int:
        return self._read("SELECT count(*) FROM jobs")[0][0]

    def profiles_by_root(self) -> dict[str, dict[str, int]]:
        """root -> profile name -> jobs: which profiles each watch root's folders use."""
        result: dict[str, dict[str, int]] = {}
        rows = self._read("SELECT root, profile_name, count(*) FROM jobs GROUP BY root, profile_name")
        for root, profile, count in rows:
            result.setdefault(py_path(root), {})[profile] = count
        return result


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["state"] = JobState(values["state"])
    for name in PATH_FIELDS:
        values[name] = py_path(values[name])
    return Job(**values)
