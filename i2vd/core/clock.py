"""Time as a dependency: logic asks a clock, tests hand in one they control."""

from __future__ import annotations

import threading
import time


class Clock:
    def now(self) -> float:
        """Wall-clock seconds since the epoch: what the journal stores."""
        return time.time()

    def monotonic(self) -> float:
        """For measuring durations and settle windows: immune to clock changes."""
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early when `stop` is set. True if stopped."""
        return stop.wait(max(0.0, seconds))


class ManualClock(Clock):
    """A clock that moves only when told to; `wait` advances it instead of sleeping."""

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        if stop.is_set():
            return True
        self.advance(max(0.0, seconds))
        return stop.is_set()
