"""Run `i2vd run` as a real subprocess, the way systemd does, and watch what it says.

The daemon is started with NOTIFY_SOCKET pointing at a datagram socket this
harness binds, so "ready" means the daemon said READY=1, not "some time passed".
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import yaml

from i2vd.store.journal import Journal
from tests.support.fakes import wait_for
from tests.support.processes import REPO, I2vdProcess


def write_config(tmp_path: Path, server_url: str | None, **overrides) -> Path:
    """A config for a test: fast settle and retries, the fake server (or the builtin engine)."""
    config = {
        "state_dir": str(tmp_path / "state"),
        "output_dir": str(tmp_path / "out"),
        "log_level": "debug",
        "server": {"kind": "predict", "url": server_url, "timeout_seconds": 30, "connect_timeout_seconds": 2}
        if server_url
        else {"kind": "builtin"},
        "gpu": {"enabled": False},
        "retry": {"attempts": 2, "initial_backoff_seconds": 0.1, "max_backoff_seconds": 0.5},
        "watch": [{"path": str(tmp_path / "in"), "settle_seconds": 0.5, "rescan_seconds": 30}],
        "profiles": {"default": {"prompt": "A {{ subject }} scene with smooth motion"}},
    }
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)  # e.g. server=None with servers=[...]
        else:
            config[key] = value
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class DaemonProcess(I2vdProcess):
    what = "daemon"

    def __init__(self, config: Path, log_path: Path, environment: dict[str, str] | None = None):
        super().__init__(log_path, environment)
        self.config = config
        self.messages: list[str] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._address = f"@i2vd-test-{uuid.uuid4().hex}"
        self._socket.bind("\0" + self._address[1:])
        self._socket.settimeout(0.05)
        # Read all the time, as systemd does: a datagram queue left full (10 on Linux) makes the daemon's
        # non-blocking sd_notify drop what comes next, STOPPING=1 included.
        self._messages_lock = threading.Lock()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_notifications, name="harness-notify-reader", daemon=True)
        self._reader.start()

    def _read_notifications(self) -> None:
        while not self._closing.is_set():
            try:
                message = self._socket.recv(4096).decode()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return  # closed
            with self._messages_lock:
                self.messages.append(message)

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self._launch("run", "-c", str(self.config), environment={"NOTIFY_SOCKET": self._address})
        if wait_ready:
            wait_for(
                lambda: self._said("READY=1") or self._exited(),
                timeout=30,
                message=f"daemon never said READY=1; log:\n{self.log()}",
            )
            assert self.process.poll() is None, f"daemon exited early: {self.log()}"
        return self

    def _exited(self) -> bool:
        return self.process.poll() is not None

    def said(self, field: str) -> bool:
        """The daemon sent a notify message containing this line (e.g. "READY=1")."""
        return self._said(field)

    def fields(self) -> list[str]:
        """Every notify line received so far, in order."""
        with self._messages_lock:
            return [line for message in self.messages for line in message.split("\n")]

    def _said(self, field: str) -> bool:
        return field in self.fields()

    def close(self) -> None:
        super().close()
        self._closing.set()
        self._reader.join(timeout=5)
        self._socket.close()


def run_cli(config: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "i2vd", *arguments, "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, f"i2vd {' '.join(arguments)} exited {result.returncode}: {result.stderr}"
    return result


def journal_counts(state_dir: Path) -> dict[str, int]:
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        return {}
    journal = Journal(path)
    try:
        return journal.counts()
    finally:
        journal.close()


def videos(output_dir: Path) -> list[Path]:
    return sorted(output_dir.rglob("*.mp4")) if output_dir.exists() else []
