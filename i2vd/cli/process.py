"""What a command does to its own process: the cyclic collector settled once a daemon has started, stdout pointed
away once its reader is gone."""

from __future__ import annotations

import gc
import io
import os
import sys

GC_THRESHOLDS = (10_000, 20, 20)  # allocations before a young collection, and how often the older ones follow


def settle_collector() -> None:
    """The daemon's start-up is done: what it made lives as long as the process (modules, the config, the journal),
    so the cyclic collector stops walking it (gc.freeze), and collects less often. A first start over 100,000
    images spent ~1.5 s of CPU in the collector, 18 full collections walking everything the process held
    (benchmarks/RESULTS.md, round 5)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def silence_stdout() -> None:
    """The reader went away (`i2vd status | head`): point stdout at /dev/null so nothing left to flush
    at exit raises again (the recipe in Python's documentation of SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (tests capture it): nothing is left to flush into a pipe
