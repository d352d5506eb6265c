"""Jobs failed by this process, by reason: what /metrics' `i2vd_failures_total` counts.

A Prometheus counter only grows, so it cannot be read off the journal's current states (a retry or `forget`
takes a failure away). The journal notes each failure event as it writes it and counts it once its
transaction commits; the count starts at zero with the process, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import threading
from collections import Counter

from i2vd.core.failure_reasons import failure_reason
from i2vd.store.records import FAILED_AT_INTAKE_EVENT, FAILED_EVENT


class FailureTally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []  # errors of the jobs the open transaction fails
        self._counts: Counter[str] = Counter()

    def note(self, level: str, message: str) -> None:
        """An event being written; every way a job fails writes one that starts with a FAILED_* prefix."""
        for prefix in (FAILED_EVENT, FAILED_AT_INTAKE_EVENT):
            if level == "error" and message.startswith(prefix):
                self._pending.append(message.removeprefix(prefix))
                return

    def commit(self) -> None:
        with self._lock:
            for error in self._pending:
                self._counts[failure_reason(error)] += 1
        self._pending.clear()

    def rollback(self) -> None:
        self._pending.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
