"""The JSON API: what the dashboard shows, and the one thing it does (retry).

`/api/status` is `i2vd status --json` (both come from `i2vd.store.status.gather_status`);
retry is `i2vd retry`'s own `i2vd.ingest.operations.retry`, run on the daemon's journal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from i2vd.config.load import Config
from i2vd.store.journal import Job, JobState, Journal
from i2vd.store.status import daemon_alive, gather_status
from i2vd.web.media import Media

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
EVENTS_PER_JOB = 200


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _number(query: dict[str, list[str]], name: str, default: int, low: int, high: int | None = None) -> int:
    values = query.get(name) or [""]
    text = values[-1].strip()
    if text == "":
        return default
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        bounds = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"{name}: {text!r} is not a whole number {bounds}")
    return int(text)


class Api:
    def __init__(
        self, config: Callable[[], Config], journal: Journal, media: Media, on_queued: Callable[[], None] | None = None
    ):
        self._config = config
        self.journal = journal
        self.media = media
        self._on_queued = on_queued
        self._retry_lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        return gather_status(self._config(), self.journal)

    def job_dict(self, job: Job) -> dict[str, Any]:
        """A job as `i2vd jobs --json` shows it, with the URLs of its video and poster."""
        result = job.as_dict()
        result["video_url"] = self.media.url_for(job.output_path) if job.state is JobState.DONE else None
        result["poster_url"] = self.media.url_for(job.output_path, "posters") if result["video_url"] else None
        return result

    def jobs(self, query: dict[str, list[str]]) -> dict[str, Any]:
        state_text = (query.get("state") or [""])[-1].strip()
        try:
            state = JobState(state_text) if state_text else None
        except ValueError:
            choices = ", ".join(state.value for state in JobState)
            raise ApiError(400, f"state: {state_text!r} is not one of {choices}") from None
        limit = _number(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _number(query, "offset", 0, 0)
        jobs, total = self.journal.job_page(state, limit, offset)
        return {
            "jobs": [self.job_dict(job) for job in jobs],
            "total": total,
            "limit": limit,
            "offset": offset,
            "state": state.value if state else None,
        }

    def job(self, job_id: int) -> dict[str, Any]:
        job = self.journal.job(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id}")
        return {**self.job_dict(job), "events": self.journal.events(job_id, limit=EVENTS_PER_JOB)}

    def roots(self) -> dict[str, Any]:
        """The watch roots with their output folders and the profiles their jobs use, and files settling."""
        config = self._config()
        published = self.journal.daemon_status() if daemon_alive(config) else {}
        watches = {watch["path"]: watch for watch in published.get("watches", [])}
        profiles = self.journal.profiles_by_root()
        roots = []
        for root in config.watch:
            watch = watches.get(str(root.path), {})
            roots.append(
                {
                    "path": str(root.path),
                    "output_dir": str(root.output_dir),
                    "after": root.after,
                    "method": watch.get("method"),
                    "active": watch.get("active"),
                    "why": watch.get("why"),
                    "profiles": profiles.get(str(root.path), {}),
                    "schedule": watch.get("schedule"),
                }
            )
        return {"roots": roots, "settling": published.get("settling", 0)}

    def retry(self, job_ids: list[int] | None) -> dict[str, Any]:
        """`i2vd retry ID` (or `--failed` with None): the same function, on this journal."""
        from i2vd.ingest.operations import retry

        with self._retry_lock:
            if job_ids is not None:
                job = self.journal.job(job_ids[0])
                if job is None:
                    raise ApiError(404, f"no job {job_ids[0]}")
            results = retry(self._config(), self.journal, job_ids)
            if job_ids is not None and not results:
                raise ApiError(409, f"job {job.id} is {job.state.value} (only failed or done jobs are retried)")
        if any(result.ok for result in results) and self._on_queued is not None:
            self._on_queued()
        return {
            "results": [
                {"job": self.job_dict(result.job), "outcome": result.outcome, "reason": result.reason, "ok": result.ok}
                for result in results
            ]
        }
