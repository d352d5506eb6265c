"""Fixtures for the end-to-end tier: the daemon as a subprocess (see harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.end_to_end.harness import DaemonProcess


@pytest.fixture
def daemon_factory(tmp_path: Path):
    """make(config, **environment) -> a DaemonProcess (not started); every one is killed and closed after the test."""
    started: list[DaemonProcess] = []

    def make(config: Path, **environment: str) -> DaemonProcess:
        daemon = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log", environment)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.close()
