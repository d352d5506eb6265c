"""Signals reach the daemon in its main thread, at any bytecode: the handler must never wait on a lock
that the same thread may be holding at that moment."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from i2vd.config.load import load_config
from i2vd.service.daemon import Daemon
from tests.end_to_end.harness import write_config
from tests.support.fakes import wait_for


@pytest.mark.parametrize(("signal_number", "wanted"), [(signal.SIGTERM, "stop"), (signal.SIGHUP, "reload")])
def test_a_signal_while_serve_holds_the_attention_lock_does_not_deadlock(tmp_path: Path, signal_number, wanted):
    daemon = Daemon(load_config(write_config(tmp_path, None)))
    handled = threading.Event()

    def main_thread_in_the_middle_of_clearing_attention() -> None:
        with daemon._attention._cond:  # where serve() is while it runs `_attention.clear()`
            daemon.on_signal(signal_number)
        handled.set()

    thread = threading.Thread(target=main_thread_in_the_middle_of_clearing_attention, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert handled.is_set(), "the signal handler deadlocked on a lock its own thread holds"
    wait_for(daemon._attention.is_set, message="the signal was never acted on")
    if wanted == "stop":
        assert daemon.stop_event.is_set()
    else:
        assert daemon._reload_requested and not daemon.stop_event.is_set()
