"""A worker's helper thread: one piece of work at a time beside the server call, the thread kept between jobs.

The next job is prepared (prepare.py) and the last video finished (overlap.py) beside each call. A thread
started for each would make the worker wait, between two calls, for the new thread to be scheduled and
to let go of the GIL (on a loaded machine a time slice, SPEC "Performance targets"); handing work to a
waiting thread takes a lock. The thread starts with the first piece of work and ends at `close()`
(Worker.run's end).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("i2vd.worker")


class BesideThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._work: Callable[[], None] | None = None
        self._busy = False  # work handed over and not over yet
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    def submit(self, work: Callable[[], None]) -> None:
        """Run `work` on the thread, once the work before it is over."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._work, self._busy = work, True
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()

    def wait(self) -> None:
        """Until the work handed over (if any) is over."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)

    def close(self) -> None:
        """The work handed over done, the thread ended."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._closing = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._work is not None or self._closing)
                work, self._work = self._work, None
            if work is None:
                return
            try:
                work()
            except Exception:  # noqa: BLE001 - the work says what failed; the thread stays for the next
                log.exception("%s: unexpected error", self.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
