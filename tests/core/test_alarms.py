"""alarms.py: many alarms on one thread, which ends once none is set; a backend call's deadline uses it."""

from __future__ import annotations

import threading
import time

from i2vd.core.alarms import Alarms
from i2vd.render.backends import http
from tests.support.fakes import wait_for


def test_an_alarm_rings_and_a_cancelled_one_does_not():
    alarms = Alarms("test-alarms", linger=0.05)
    rang: list[str] = []
    cancelled = alarms.set(time.monotonic() + 0.05, lambda: rang.append("cancelled"))
    alarms.set(time.monotonic() + 0.1, lambda: rang.append("later"))
    alarms.cancel(cancelled)
    wait_for(lambda: rang == ["later"], timeout=10)
    wait_for(lambda: alarms.thread is None, timeout=10)  # nothing set any more: the thread ends
    assert rang == ["later"]


def test_an_earlier_alarm_set_while_the_thread_waits_for_a_later_one_rings_first():
    alarms = Alarms("test-alarms", linger=0.05)
    rang: list[str] = []
    far = alarms.set(time.monotonic() + 3600, lambda: rang.append("far"))
    alarms.set(time.monotonic() + 0.05, lambda: rang.append("soon"))
    wait_for(lambda: rang == ["soon"], timeout=10)
    alarms.cancel(far)
    wait_for(lambda: alarms.thread is None, timeout=10)
    assert rang == ["soon"]


def test_cancel_returns_once_a_ringing_callback_is_over():
    alarms = Alarms("test-alarms", linger=0.05)
    ringing, release, over = threading.Event(), threading.Event(), []

    def callback() -> None:
        ringing.set()
        release.wait(10)
        over.append(True)

    alarm = alarms.set(time.monotonic(), callback)
    assert ringing.wait(10)
    releaser = threading.Timer(0.05, release.set)
    releaser.start()
    alarms.cancel(alarm)  # a deadline's expiry shuts the call's sockets: never after the call is over
    assert over == [True]
    releaser.join()
    wait_for(lambda: alarms.thread is None, timeout=10)


def test_back_to_back_calls_start_no_thread_each():
    """Each call's deadline used to start (and join) a threading.Timer between two server calls."""
    watchers = []
    for _ in range(3):
        with http.Deadline(600, "the server"):
            watchers.append([thread for thread in threading.enumerate() if thread.name == "i2vd-deadline"])
    assert all(len(found) == 1 for found in watchers)
    assert watchers[0][0] is watchers[1][0] is watchers[2][0]
    wait_for(lambda: not watchers[0][0].is_alive(), timeout=10)
