"""The journal's rows as Python values: job states, jobs, known files, paths as SQLite holds them."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

PATH_FIELDS = ("source_path", "root", "rel_path", "output_path")


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


# An event that says a job failed starts so (the journal tallies them for /metrics as it writes them).
FAILED_EVENT, FAILED_AT_INTAKE_EVENT = "failed: ", "failed at intake: "


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

    # As the journal stores them. Cached, and pickled with the job: the intake's pool processes encode them
    # beside the intake thread, which then only writes them (store/recording.py).
    @functools.cached_property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    @functools.cached_property
    def profile_json(self) -> str:
        return json.dumps(self.profile, sort_keys=True, default=str)


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
_JOB_FIELD_NAMES = frozenset(field.name for field in fields(Job))


@dataclass(frozen=True)
class KnownFile:
    size: int
    mtime_ns: int
    sha256: str
    job_id: int | None


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["state"] = JobState(values["state"])
    for name in PATH_FIELDS:
        values[name] = py_path(values[name])
    if values.keys() != _JOB_FIELD_NAMES:
        return Job(**values)  # says which column is missing or unknown
    # A frozen dataclass sets its 26 fields one object.__setattr__ at a time (~5 us): a first start makes 100,000
    # Jobs and a restart reads them all again. The row has exactly the fields, so they are the instance's dict.
    job = object.__new__(Job)
    job.__dict__.update(values)
    return job
