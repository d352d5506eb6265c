"""The ingest daemon's view of its GPU hosts: what the broker says about them, mirrored into the journal.

With `executor: {kind: celery}` the daemon runs one `PresenceMirror` thread: every `interval_seconds` it reads
the workers' presence (i2vd.cluster.presence, bounded by a short timeout) and records it in the journal, with the
broker's state (reachable or not, since when, why). `i2vd status`, `/api/status`, the dashboard and /metrics read
only the journal, so they answer at once even while the broker is down, and a worker that vanished stays listed
as gone with its last-seen time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

from i2vd.cluster.presence import (
    READ_TIMEOUT_SECONDS,
    TTL_INTERVALS,
    BrokerUnreachable,
    WorkerSeen,
    read_presence,
    redact_url,
)
from i2vd.core.clock import Clock
from i2vd.store.journal import Journal

log = logging.getLogger("i2vd.presence")

MIRROR_SECONDS = 2.0
DEFAULT_QUEUE = "i2vd"


def celery_executor(config: Any) -> tuple[str, str] | None:
    """(broker URL, queue) when the config says `executor: {kind: celery}`, else None (no broker, no mirror)."""
    executor = config.executor
    if executor is None or executor.kind != "celery" or not executor.broker:
        return None
    return str(executor.broker), str(executor.queue or DEFAULT_QUEUE)


class PresenceMirror:
    def __init__(
        self,
        journal: Journal,
        broker_url: str,
        queue: str,
        *,
        clock: Clock | None = None,
        interval_seconds: float = MIRROR_SECONDS,
        read_timeout_seconds: float = READ_TIMEOUT_SECONDS,
        job_seconds: float | None = None,
    ):
        self.journal = journal
        self.broker_url = broker_url
        self.shown_url = redact_url(broker_url)
        self.queue = queue
        self.clock = clock or Clock()
        self.interval_seconds = interval_seconds
        self.read_timeout_seconds = read_timeout_seconds
        self.reachable: bool | None = None  # None until the first read
        self._since: float | None = None
        self._journal_refused = False
        self.job_seconds = job_seconds  # this host's longest job (cluster/app.py `timings`)
        self._disagreement: str | None = None  # what status says while the hosts disagree on the longest job
        self._disagreeing: frozenset[float] | None = None  # the values the log last warned about

    def gone_after(self, beacon_interval_seconds: float) -> float:
        """Seconds unseen after which a worker is gone: its key's lifetime, and two of our reads for slack."""
        return TTL_INTERVALS * beacon_interval_seconds + 2 * self.interval_seconds

    def poll_once(self) -> bool:
        """One read of the broker into the journal; False when the broker could not be read."""
        now = self.clock.now()
        try:
            seen = read_presence(self.broker_url, self.queue, timeout_seconds=self.read_timeout_seconds)
        except BrokerUnreachable as error:
            if self.reachable is not False:
                log.warning("broker unreachable: %s: %s; workers are shown as last seen", error.url, error.reason)
                self._since = now
            self.reachable = False
            self._publish(now, error.reason)
            return False
        if self.reachable is False:
            log.info("the broker %s answers again: %d worker(s) present", self.shown_url, len(seen))
        if self.reachable is not True:
            self._since = now
        self.reachable = True
        rows = [{**worker.as_dict(), "gone_after": self.gone_after(worker.interval_seconds)} for worker in seen]
        self.journal.record_workers_seen(rows, now, self.gone_after(5.0))
        self._compare_timings(seen)
        self._publish(now, None)
        return True

    def _compare_timings(self, seen: list[WorkerSeen]) -> None:
        """Hosts that disagree on the longest job: in status while they do; in the log when the values they disagree
        on change (not when a host joins or leaves with one of them), and once when they agree again."""
        hosts = _hosts_by_longest_job(seen)
        values = frozenset(hosts) | ({self.job_seconds} if self.job_seconds is not None else set())
        self._disagreement = _disagreement(self.queue, self.job_seconds, hosts, values) if len(values) > 1 else None
        if self._disagreement is not None and values != self._disagreeing:
            log.warning("%s", self._disagreement)
        elif self._disagreement is None and self._disagreeing is not None and values:
            log.info("hosts on queue %s agree on the longest job again: %g s", self.queue, max(values))
        self._disagreeing = values if self._disagreement is not None else None

    def _publish(self, now: float, error: str | None) -> None:
        self.journal.publish_status(
            {
                "broker": {
                    "url": self.shown_url,
                    "queue": self.queue,
                    "reachable": self.reachable,
                    "since": self._since,
                    "checked_at": now,
                    "error": error,
                    "warning": self._disagreement,
                }
            }
        )

    def run(self, stop: threading.Event) -> None:
        """The mirror's thread: read, record, wait; never ends before `stop` (a full state disk is said once)."""
        while not stop.is_set():
            try:
                self.poll_once()
                if self._journal_refused:
                    log.info("workers seen are recorded again in %s", self.journal.path)
                self._journal_refused = False
            except sqlite3.Error as error:
                if not self._journal_refused:
                    log.warning("cannot record the workers seen in %s: %s", self.journal.path, error)
                self._journal_refused = True
            except Exception:
                log.exception("presence mirror: unexpected error; trying again in %.0f s", self.interval_seconds)
            if self.clock.wait(stop, self.interval_seconds):
                break


def _disagreement(queue: str, own_seconds: float | None, hosts: dict[float, set[str]], values: frozenset[float]) -> str:
    """What to tell the operator when the hosts on `queue` have different longest jobs (`values`).

    A task's visibility timeout is each host's own (its servers' timeout_seconds, unless executor.job_timeout_seconds
    says): Redis hands an unacknowledged task to another consumer after the *restoring* consumer's timeout, so the
    GPU host with the shortest one sends a longer job, still running elsewhere, to a second host.
    """
    said = [f"this host {own_seconds:g} s"] if own_seconds is not None else []
    said += [f"{', '.join(sorted(names))} {seconds:g} s" for seconds, names in sorted(hosts.items(), reverse=True)]
    return (
        f"hosts on queue {queue} disagree on the longest job ({'; '.join(said)}): a job longer than {min(values):g} s"
        f" may go to a second GPU host while the first still runs it; set executor.job_timeout_seconds:"
        f" {max(values):g} in every host's config"
    )


def _hosts_by_longest_job(seen: list[WorkerSeen]) -> dict[float, set[str]]:
    """Each longest job announced, with the hosts announcing it (an older i2vd's worker announces none)."""
    hosts: dict[float, set[str]] = {}
    for worker in seen:
        if worker.job_seconds is not None:
            hosts.setdefault(worker.job_seconds, set()).add(worker.worker_id.split("/")[0])
    return hosts
