"""What `i2vd status` and `i2vd jobs` show: gathered from the journal, rendered as text."""

from __future__ import annotations

import fcntl
import os
from datetime import datetime
from typing import Any

from i2vd.config.load import Config
from i2vd.core.lock import LOCK_NAME
from i2vd.store.journal import Job, JobState, Journal
from i2vd.store.outbox import outbox_status


def daemon_alive(config: Config) -> bool:
    """True when some process holds the state_dir lock (the lock is the proof, not a PID file)."""
    path = config.state_dir / LOCK_NAME
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


def gather_status(config: Config, journal: Journal) -> dict[str, Any]:
    published = journal.daemon_status()
    running = daemon_alive(config)
    servers = (
        [{**server, "about": server_about(server)} for server in published.get("servers") or []] if running else []
    )
    current_jobs = [journal.job(server["current_job"]) for server in servers if server.get("current_job")]
    failed = [
        {"id": job.id, "file": job.rel_path, "error": job.last_error}
        for job in journal.recently_updated(JobState.FAILED, 5)
    ]
    parked: dict[str, list[str]] = {}
    for job in journal.recently_updated(JobState.PARKED, 1000):
        parked.setdefault(job.last_error or "", []).append(job.rel_path)
    return {
        "parked": [{"reason": reason, "files": sorted(files)} for reason, files in sorted(parked.items())],
        "daemon": {
            "running": running,
            "pid": published.get("pid") if running else None,
            "version": published.get("version"),
            "heartbeat_at": published.get("heartbeat_at"),
        },
        "journal": str(journal.path),
        "counts": journal.counts(),
        "prepared": journal.prepared_count(),  # of the running ones: claimed beside a call, not yet on a server
        "current_jobs": [job.as_dict() for job in current_jobs if job is not None],
        "servers": servers,
        "watches": published.get("watches", []) if running else [],
        "settling": published.get("settling", 0) if running else 0,
        "recent_failures": failed,
        "recent_events": journal.events(limit=10),
        "webhooks": outbox_status(journal, config),
        "broker": published.get("broker") if running else None,
        "workers": workers_status(journal),
    }


def workers_status(journal: Journal) -> list[dict[str, Any]]:
    """The GPU hosts' workers (`executor: celery`), alive or gone, with the file of the job each is on."""
    workers = journal.workers_seen()
    for worker in workers:
        job = journal.job(worker["current_job"]) if worker["current_job"] is not None else None
        same = job is not None and worker["current_key"] in (None, job.idem_key)
        worker["current_file"] = job.rel_path if same else None
    return workers


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


def server_about(server: dict[str, Any]) -> str:
    """What a server is: its kind and URL (`predict http://gpu:7860`); the builtin engine is no server and has
    no URL to show (`CPU engine, no server`). Status, the dashboard (`about` in /api/status) and the log say it."""
    name, kind = server.get("name"), server.get("kind")
    if kind == "builtin":
        return f"{'' if name == kind else 'builtin '}CPU engine, no server"
    return f"{kind} {server.get('url')}"


def server_label(server: dict[str, Any]) -> str:
    """`gpu0 (predict http://gpu:7860)`, `builtin (CPU engine, no server)`."""
    return f"{server.get('name')} ({server_about(server)})"


def counts_text(counts: dict[str, int], prepared: int = 0) -> str:
    """`3 queued, 1 running, 1 prepared, ...`: a job claimed and read beside the current call is not on a server
    yet, so it is not counted as running (one job at a time on each server)."""
    parts = []
    for state, count in counts.items():
        if state == JobState.RUNNING.value and prepared:
            parts += [f"{count - prepared} running", f"{prepared} prepared"]
        else:
            parts.append(f"{count} {state}")
    return ", ".join(parts)


def render_status(status: dict[str, Any]) -> str:
    daemon = status["daemon"]
    lines = [f"daemon:  {'running, PID ' + str(daemon['pid']) if daemon['running'] else 'not running'}"]
    lines.append("jobs:    " + counts_text(status["counts"], status.get("prepared", 0)))
    if status["settling"]:
        lines.append(f"         {status['settling']} file(s) still being written, settling or waiting to be read")
    for current in status["current_jobs"]:
        lines.append(f"current: job {current['id']} {current['rel_path']} (started {_when(current['started_at'])})")
    for server in status["servers"]:
        health = (
            f"DOWN since {_when(server['down_since'])}: {server.get('error')}" if server.get("down_since") else "up"
        )
        doing = f"job {server['current_job']} {server['current_file']}" if server.get("current_job") else "idle"
        if server.get("current_job") and server.get("progress"):
            doing += f" ({server['progress']})"
        lines.append(f"server:  {server_label(server)} — {health}; {doing}; {server.get('jobs_done', 0)} done")
        lines.append(f"gpu:     {server.get('gate')}")
        if server.get("schedule"):
            lines.append(f"         schedule: {server['schedule']}")
    for watch in status["watches"]:
        why = f": {watch['why']}" if watch.get("why") else ""
        lines.append(f"watch:   {watch['path']} ({watch['method']}{why}{'' if watch['active'] else ', NOT ACTIVE'})")
        if watch.get("schedule"):
            lines.append(f"         schedule: {watch['schedule']}")
    for group in status.get("parked", []):
        shown = ", ".join(group["files"][:3]) + (
            f" and {len(group['files']) - 3} more" if len(group["files"]) > 3 else ""
        )
        lines.append(f"parked:  {len(group['files'])} job(s) ({shown}) until this is fixed: {group['reason']}")
    lines += _broker_and_workers(status)
    hooks = status.get("webhooks")
    if hooks:
        line = f"webhooks: {hooks['undelivered']} undelivered"
        line += f", {hooks['given_up']} given up after 24 h" if hooks["given_up"] else ""
        line += f"; last error: {hooks['last_error']}" if hooks.get("last_error") else ""
        lines.append(line)
    if status["recent_failures"]:
        lines.append("last errors:")
        lines += [
            f"  job {failure['id']} {failure['file']}: {failure['error']}" for failure in status["recent_failures"]
        ]
    return "\n".join(lines)


def _broker_and_workers(status: dict[str, Any]) -> list[str]:
    """The `executor: celery` lines: nothing at all for a local daemon that never saw a worker."""
    lines = []
    broker = status.get("broker")
    if broker and broker.get("reachable") is False:
        lines.append(
            f"broker unreachable: {broker['url']} since {_when(broker.get('since'))}: {broker.get('error')}"
            " (dispatch waits; nothing is lost)"
        )
    elif broker:
        lines.append(f"broker:  {broker['url']}, queue {broker.get('queue')}: reachable")
    if broker and broker.get("warning"):
        lines.append(f"warning: {broker['warning']}")
    workers = status.get("workers") or []
    if not workers:
        return lines
    alive = sum(worker["state"] == "alive" for worker in workers)
    lines.append(f"workers: {alive} alive, {len(workers) - alive} gone")
    for worker in workers:
        if worker["state"] == "alive":
            health = f"alive, last seen {_when(worker['last_seen'])}"
            what = worker.get("current_file") or worker.get("current_key") or ""
            doing = f"job {worker['current_job']} {what}".rstrip() if worker["current_job"] is not None else "idle"
        else:
            health = f"GONE, last seen {_when(worker['last_seen'])}"
            doing = f"was on job {worker['current_job']}" if worker["current_job"] is not None else "was idle"
        name = worker["worker_id"]
        name += "" if name.split("/")[0] == worker["host"] else f" on {worker['host']}"
        lines.append(
            f"  {name} ({worker['server']}) — {health}; gpu: {worker.get('gate') or '-'};"
            f" {doing}; {worker.get('jobs_done') or 0} done"
        )
    return lines


def render_jobs(jobs: list[Job]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "TRIES", "PROFILE", "FILE", "RESULT")]
    for job in jobs:
        result = (
            job.last_error
            if job.state.value in ("failed", "queued", "parked", "superseded", "forgotten") and job.last_error
            else (job.output_path or "")
        )
        rows.append((str(job.id), job.state.value, str(job.tries), job.profile_name, job.rel_path, result))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows
    )
