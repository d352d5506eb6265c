"""Read-only queries of the journal: jobs, counts, events, status, the dashboard and /metrics (a mixin of Journal)."""

from __future__ import annotations

import json
from typing import Any

from i2vd.store.records import (
    _JOB_COLUMNS,
    CLOSED_STATES,
    Job,
    JobState,
    _job,
    _sql,
    py_path,
)


class Queries:
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

    def prepared_count(self) -> int:
        """Running jobs claimed beside a call and not yet sent (jobs/prepare.py): no started_at yet."""
        sql = f"SELECT count(*) FROM jobs WHERE state = {_sql(JobState.RUNNING)} AND started_at IS NULL"
        return self._read(sql)[0][0]

    def events(self, job_id: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT id, at, job_id, level, message FROM events"
        parameters: tuple = ()
        if job_id is not None:
            sql += " WHERE job_id = ?"
            parameters = (job_id,)
        rows = self._read(sql + f" ORDER BY id DESC LIMIT {int(limit)}", parameters)
        return [dict(row) for row in reversed(rows)]

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

    def failures_since_start(self) -> dict[str, int]:
        """Jobs this process failed since it opened the journal, by reason: only ever grows (a strict counter)."""
        return self._failures.snapshot()

    def jobs_total(self) -> int:
        return self._read("SELECT count(*) FROM jobs")[0][0]

    def profiles_by_root(self) -> dict[str, dict[str, int]]:
        """root -> profile name -> jobs: which profiles each watch root's folders use."""
        result: dict[str, dict[str, int]] = {}
        rows = self._read("SELECT root, profile_name, count(*) FROM jobs GROUP BY root, profile_name")
        for root, profile, count in rows:
            result.setdefault(py_path(root), {})[profile] = count
        return result
