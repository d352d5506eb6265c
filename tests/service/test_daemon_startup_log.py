"""The daemon's start-up line names its servers as `i2vd status` does: the builtin engine is no server."""

from __future__ import annotations

import logging
from pathlib import Path

from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon
from tests.end_to_end.harness import write_config


def started_line(tmp_path: Path, caplog, **overrides) -> str:
    daemon = Daemon(load_config(write_config(tmp_path, None, **overrides)))
    with caplog.at_level(logging.INFO):
        daemon.start()
    try:
        (line,) = [record.getMessage() for record in caplog.records if " running: " in record.getMessage()]
    finally:
        daemon.request_stop()
        daemon.shutdown()
    return line


def test_the_builtin_engine_is_logged_as_an_engine_not_a_url(tmp_path: Path, caplog) -> None:
    line = started_line(tmp_path, caplog)
    assert line.endswith("running: 1 watch root(s), server(s) builtin (CPU engine, no server)"), line
    assert "builtin:" not in line


def test_several_servers_are_logged_with_their_names_kinds_and_urls(tmp_path: Path, caplog) -> None:
    servers = [
        {"kind": "predict", "url": "http://127.0.0.1:9", "name": "gpu0"},
        {"kind": "builtin", "name": "preview"},
    ]
    line = started_line(tmp_path, caplog, server=None, servers=servers)
    assert line.endswith(
        "server(s) gpu0 (predict http://127.0.0.1:9/api/predict/), preview (builtin CPU engine, no server)"
    ), line
