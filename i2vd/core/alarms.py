"""One thread for many alarms: `ALARMS.set(when, callback)` instead of a threading.Timer (a thread) per call.

Each server call bounds itself with a deadline (render/backends/http.py). With a Timer, every call
started a thread before its request and joined it after its reply, on the path between two server
calls that SPEC "Performance targets" keeps short: a thread start waits for the scheduler, on a
loaded machine for a whole time slice. Here one thread waits for the earliest alarm; setting and
cancelling one take a lock. The thread starts with the first alarm and ends once none has been set
for `linger` seconds (no thread outlives the calls it watched by much more).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("i2vd.alarms")

LINGER_SECONDS = 0.5


class Alarm:
    __slots__ = ("callback", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback = when, callback


class Alarms:
    """Callbacks run at monotonic times, one at a time, on one thread."""

    def __init__(self, name: str, linger: float = LINGER_SECONDS) -> None:
        self.name = name
        self.linger = linger
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")  # when the thread looks next
        self._last_set = float("-inf")
        self._running: Alarm | None = None  # the alarm whose callback runs now

    def set(self, when: float, callback: Callable[[], None]) -> Alarm:
        """Run `callback` on the alarms' thread at time.monotonic() `when` (at once if it has passed)."""
        alarm = Alarm(when, callback)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), alarm))
            self._last_set = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif when < self._wake_at:
                self._cond.notify()
        return alarm

    def cancel(self, alarm: Alarm) -> None:
        """The alarm will not ring; if its callback is running now, cancel returns once it is over."""
        with self._cond:
            for index, entry in enumerate(self._heap):
                if entry[2] is alarm:
                    self._heap[index] = self._heap[-1]
                    self._heap.pop()
                    heapq.heapify(self._heap)
                    return
            self._cond.wait_for(lambda: self._running is not alarm)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    self._running = heapq.heappop(self._heap)[2]
                    self._ring(self._running)
                    self._running = None
                    self._cond.notify_all()  # a cancel waiting for this callback
                    continue
                if self._heap:
                    self._wake_at = min(self._heap[0][0], now + self.linger)
                elif now - self._last_set >= self.linger:
                    self._thread = None
                    self._wake_at = float("inf")
                    return
                else:
                    self._wake_at = self._last_set + self.linger
                self._cond.wait(self._wake_at - now)

    def _ring(self, alarm: Alarm) -> None:
        self._cond.release()
        try:
            alarm.callback()
        except Exception:  # noqa: BLE001 - one callback's trouble must not stop the others' alarms
            log.exception("an alarm's callback failed")
        finally:
            self._cond.acquire()


ALARMS = Alarms("i2vd-deadline")
