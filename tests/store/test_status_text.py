"""The text of `i2vd status` (i2vd.store.status.render_status) for what a daemon publishes about its servers."""

from __future__ import annotations

from typing import Any

from i2vd.render.backends.builtin import BuiltinBackend
from i2vd.store.status import render_status


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
