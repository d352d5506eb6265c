"""The text of `i2vd status` (i2vd.store.status.render_status) for what a daemon publishes about its servers."""

from __future__ import annotations

from typing import Any

from i2vd.render.backends.builtin import BuiltinBackend
from i2vd.store.journal import Journal
from i2vd.store.status import counts_text, render_status
from tests.store.test_journal import add


def status_with(server: dict[str, Any]) -> dict[str, Any]:
    return {
        "daemon": {"running": True, "pid": 4242},
        "counts": {"queued": 0, "running": 0, "parked": 0, "done": 2, "failed": 0},
        "settling": 0,
        "current_jobs": [],
        "servers": [server],
        "watches": [],
        "recent_failures": [],
        "recent_events": [],
    }


def server_line(name: str, describe: dict[str, str]) -> str:
    server = {"name": name, **describe, "down_since": None, "error": None, "gate": "open", "jobs_done": 2}
    (line,) = [line for line in render_status(status_with(server)).splitlines() if line.startswith("server:")]
    return line


def test_the_builtin_engine_reads_as_an_engine_not_a_server() -> None:
    assert server_line("builtin", BuiltinBackend().describe()) == (
        "server:  builtin (CPU engine, no server) — up; idle; 2 done"
    )
    assert server_line("preview", BuiltinBackend().describe()) == (
        "server:  preview (builtin CPU engine, no server) — up; idle; 2 done"
    )


def test_a_server_shows_its_kind_and_url() -> None:
    describe = {"kind": "predict", "url": "http://gpu:7860", "version": "unknown"}
    assert server_line("gpu0", describe) == "server:  gpu0 (predict http://gpu:7860) — up; idle; 2 done"


def test_a_job_prepared_beside_the_current_call_is_not_counted_as_running(tmp_path):
    """jobs/prepare.py claims the next job while the server works on the current one: one job at a time on each
    server stays the rule, so status says 1 running and 1 prepared, not 2 running."""
    journal = Journal(tmp_path / "journal.sqlite3")
    try:
        add(journal, 1), add(journal, 2), add(journal, 3)
        journal.claim_next("w", 600)
        journal.claim_next("w", 600, prepared=True)
        assert journal.prepared_count() == 1
        text = counts_text(journal.counts(), journal.prepared_count())
        assert "1 queued, 1 running, 1 prepared" in text
    finally:
        journal.close()
