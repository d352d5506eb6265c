"""The state disk full for a moment (the journal refuses writes): the daemon says so and goes on.

Seen in the field: with state_dir full, the status the main loop publishes every second could not be
committed, the exception ended `i2vd run` with a traceback, and the shutdown's own write raised again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon
from tests.end_to_end.harness import write_config
from tests.support.fakes import wait_for


def _heartbeat(state_dir: Path) -> float | None:
    with sqlite3.connect(state_dir / "journal.sqlite3", timeout=30) as db:
        row = db.execute("SELECT value FROM daemon_status WHERE key = 'heartbeat_at'").fetchone()
    return None if row is None else float(row[0]) if row[0] != "null" else None


def test_a_journal_that_refuses_writes_for_a_while_does_not_end_the_daemon(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="i2vd")
    daemon = Daemon(load_config(write_config(tmp_path, None)))
    daemon.start()
    serving = threading.Thread(target=daemon.serve, name="serve", daemon=True)
    serving.start()
    try:
        wait_for(lambda: _heartbeat(tmp_path / "state") is not None, message="no status published")
        with daemon.journal._lock:  # the state disk fills: every write is refused, as SQLITE_FULL would be
            daemon.journal._db.execute("PRAGMA query_only = 1")
        wait_for(
            lambda: any("cannot record the daemon's status" in r.getMessage() for r in caplog.records),
            message=f"the failed write was not reported: {[r.getMessage() for r in caplog.records]}",
        )
        refused_at = _heartbeat(tmp_path / "state")
        with daemon.journal._lock:  # room again
            daemon.journal._db.execute("PRAGMA query_only = 0")
        wait_for(
            lambda: (_heartbeat(tmp_path / "state") or 0) > refused_at,
            timeout=15,
            message="the daemon stopped publishing its status after the journal refused a write",
        )
        assert serving.is_alive()
    finally:
        daemon.request_stop()
        serving.join(timeout=15)
        daemon.shutdown()
    assert not serving.is_alive()


def test_a_shutdown_while_the_journal_refuses_writes_still_releases_the_lock(tmp_path: Path, caplog):
    daemon = Daemon(load_config(write_config(tmp_path, None)))
    daemon.start()
    with daemon.journal._lock:
        daemon.journal._db.execute("PRAGMA query_only = 1")
    daemon.shutdown()  # raised "attempt to write a readonly database" and kept the lock
    second = Daemon(load_config(tmp_path / "config.yaml"))
    second.start()
    second.shutdown()
