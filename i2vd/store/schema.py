"""The journal's layout and its versions: the tables, the webhook triggers and the migrations between releases."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from i2vd import __version__

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
CREATE INDEX IF NOT EXISTS files_by_job ON files (job_id);
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
CREATE TABLE IF NOT EXISTS workers_seen (
    worker_id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    server TEXT NOT NULL,
    gate TEXT,
    current_job INTEGER,
    current_key TEXT,
    jobs_done INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    reported_at REAL,
    last_seen REAL NOT NULL,
    gone_after REAL NOT NULL
) WITHOUT ROWID;
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

EVENTS_KEPT = 10_000


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


def _to_v5_drop_lease_owner(
    db: sqlite3.Connection, sqlite_version: tuple[int, ...] = sqlite3.sqlite_version_info
) -> None:
    """Version 5 drops `jobs.lease_owner`: every claim wrote it and nothing read it (the claim's event,
    "started by <owner>", says who took a job; the lease is `lease_expires_at`).

    No index or trigger names the column. ALTER TABLE ... DROP COLUMN needs SQLite 3.35 (2021); on an
    older SQLite the column stays, keeps what it held and is never named again (every statement names
    its columns): the same layout as far as this release is concerned.
    """
    if sqlite_version >= (3, 35, 0) and "lease_owner" in _columns(db, "jobs"):
        db.execute("ALTER TABLE jobs DROP COLUMN lease_owner")


def _to_v6_workers_seen(db: sqlite3.Connection) -> None:
    """Version 6 (`executor: celery`, issue 18): `workers_seen`, the GPU hosts' workers as the ingest daemon last saw
    them in the broker, kept after they vanish so `status` shows a dead host with its last-seen time.
    Self-contained: its own copy of the statement, as it was when this version was made."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS workers_seen (worker_id TEXT PRIMARY KEY, queue TEXT NOT NULL, host TEXT NOT NULL,"
        " pid INTEGER NOT NULL, server TEXT NOT NULL, gate TEXT, current_job INTEGER, current_key TEXT,"
        " jobs_done INTEGER NOT NULL DEFAULT 0, started_at REAL, reported_at REAL, last_seen REAL NOT NULL,"
        " gone_after REAL NOT NULL) WITHOUT ROWID"
    )


def _to_v7_files_by_job(db: sqlite3.Connection) -> None:
    """Version 7 indexes `files` by job instead of by content (no column changes).

    A file's content is its job's (every path that writes a file row gives it its job's content, and a
    merge moves files to a job of the same content), so the files of a content are found through
    `jobs_by_content` and this index. Each new file put a random key into `files_by_content`: a third of
    what recording a job cost in a first start over 100,000 images (benchmarks/RESULTS.md). Files with no
    job are not found by content any more; no release wrote one.
    """
    db.execute("DROP INDEX IF EXISTS files_by_content")
    db.execute("CREATE INDEX IF NOT EXISTS files_by_job ON files (job_id)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _to_v1,
    _to_v2,
    _to_v3_webhook_outbox,
    _to_v4_content_indexes,
    _to_v5_drop_lease_owner,
    _to_v6_workers_seen,
    _to_v7_files_by_job,
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
