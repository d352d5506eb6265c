"""beside.py: a worker's helper thread, kept between jobs; work handed over after an event waits for it."""

from __future__ import annotations

import threading

from i2vd.jobs.beside import BesideThread
from tests.support.fakes import wait_for


def test_work_waits_for_its_event_and_whoever_waits_for_the_work_sets_it():
    beside = BesideThread("test-beside")
    done: list[str] = []
    try:
        left = threading.Event()
        beside.submit(lambda: done.append("first"), after=left)
        wait_for(lambda: beside.holding, timeout=10)
        assert done == [] and beside.busy
        left.set()  # the request has left
        beside.wait()
        assert done == ["first"]
        beside.submit(lambda: done.append("second"), after=threading.Event())  # its request never leaves
        beside.wait()  # no wait for it: waiting for the work sets the event
        assert done == ["first", "second"]
        thread = beside._thread
        beside.submit(lambda: done.append("third"))
        beside.wait()
        assert beside._thread is thread  # one thread for all the work
    finally:
        beside.close()
    assert not thread.is_alive()
