"""A worker's helper thread: one piece of work at a time beside the server call, the thread kept between jobs.

The next job is prepared (prepare.py) and the last video finished (overlap.py) beside each call. A thread
started for each would make the worker wait, between two calls, for the new thread to be scheduled and
to let go of the GIL (on a loaded machine a time slice, SPEC "Performance targets"); handing work to a
waiting thread takes a lock. The thread starts with the first piece of work and ends at `close()`
(Worker.run's end).

Work handed over `after` an event waits for it, at most HOLD_SECONDS: the worker hands over the next job's
preparing and the last video's finishing as a request is about to leave, and they start once it has left
(the backend says so), not while the worker is still sending it. Whoever waits for the work (`wait`,
`close`, the next `submit`) sets the event first: no work waits for a request that is not coming.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("i2vd.worker")

HOLD_SECONDS = 0.5  # the longest work waits for its request to leave (a connect that takes long, a gate read)


class BesideThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._work: Callable[[], None] | None = None
        self._after: threading.Event | None = None  # what the work handed over waits for
        self._busy = False  # work handed over and not over yet
        self._holding = False
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def holding(self) -> bool:
        """The work handed over waits for its request to leave."""
        return self._holding

    def submit(self, work: Callable[[], None], after: threading.Event | None = None) -> None:
        """Run `work` on the thread, once the work before it is over (and `after` is set, or HOLD_SECONDS)."""
        self._release()
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._work, self._after, self._busy = work, after, True
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()

    def _release(self) -> None:
        after = self._after
        if after is not None:
            after.set()

    def wait(self) -> None:
        """Until the work handed over (if any) is over: it waits for nothing more."""
        self._release()
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)

    def close(self) -> None:
        """The work handed over done, the thread ended."""
        self._release()
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
                work, self._work, after = self._work, None, self._after
            if work is None:
                return
            try:
                if after is not None and not after.is_set():
                    self._holding = True
                    after.wait(HOLD_SECONDS)
                    self._holding = False
                work()
            except Exception:  # noqa: BLE001 - the work says what failed; the thread stays for the next
                log.exception("%s: unexpected error", self.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
