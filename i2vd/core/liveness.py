"""Heartbeats from the threads that do the work, so the systemd watchdog sees a hung worker.

Pinging WATCHDOG=1 from a timer would prove only that the main thread lives. Each
working loop instead says how long its next step may take (`beat(expect)`: a
backend call may take up to the server timeout); the daemon pings only while
every loop is within its promise, so a hung worker stops the pings and systemd
restarts the service.
"""

from __future__ import annotations

import threading

from i2vd.core.clock import Clock

DEFAULT_MARGIN_SECONDS = 60.0


class Heartbeat:
    def __init__(self, name: str, clock: Clock | None = None, margin_seconds: float = DEFAULT_MARGIN_SECONDS):
        self.name = name
        self.clock = clock or Clock()
        self.margin_seconds = margin_seconds
        self._lock = threading.Lock()
        self._deadline = self.clock.monotonic() + margin_seconds
        self.doing = "starting"

    def beat(self, expect_seconds: float = 0.0, doing: str = "idle") -> None:
        """Alive now; the next beat comes within `expect_seconds` (plus the margin)."""
        with self._lock:
            self._deadline = self.clock.monotonic() + expect_seconds + self.margin_seconds
            self.doing = doing

    def overdue_seconds(self) -> float:
        """0 while the promise holds; how far past it otherwise."""
        with self._lock:
            return max(0.0, self.clock.monotonic() - self._deadline)
