"""An `i2vd` command as a real subprocess for the tests: its log in a file, kill -9, SIGTERM with a bound, and
nothing left running after close(). The daemon (tests/end_to_end/harness.py) and the GPU-host worker
(tests/support/gpu_workers.py) are each one of these."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class I2vdProcess:
    what = "i2vd"  # how failure messages name it
    stop_seconds = 60.0  # how long SIGTERM may take before the test fails

    def __init__(self, log_path: Path, environment: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.environment = environment or {}
        self.process: subprocess.Popen | None = None

    def _launch(self, *arguments: str, environment: dict[str, str] | None = None) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the process's log: open until close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2vd", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), **(environment or {}), **self.environment},
            cwd=REPO,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """kill -9: no chance to clean up, as in a crash, an OOM kill or a GPU host that dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; a process that ignores it fails the test (and is killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the {self.what} ignored SIGTERM; log:\n{self.log()}") from None
        return self.process.returncode

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
