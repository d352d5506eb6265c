"""`/metrics`: Prometheus metrics read from the journal at each scrape.

The journal is the one source of truth, so the numbers survive restarts and agree with
`i2vd status`: counts by state, histograms of the done jobs' durations, server time and
queue waits, each server's health and gate (as the daemon last published them), the
GPU hosts' workers alive and gone, the files taken in, the jobs failed now by reason, and (the one figure kept in
memory, a strict counter) the failures recorded since the daemon started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from i2vd.config.load import Config
from i2vd.core.failure_reasons import failure_reason
from i2vd.store.journal import Journal
from i2vd.store.status import daemon_alive

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
HISTOGRAMS = {
    "job_duration": ("i2vd_job_duration_seconds", "Done jobs: from claim to the video written"),
    "server": ("i2vd_server_seconds", "Done jobs: time the server took for the video"),
    "queue_wait": ("i2vd_queue_wait_seconds", "Done jobs: from queued to started"),
}


class JournalCollector:
    def __init__(self, config: Callable[[], Config], journal: Journal):
        self._config = config
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("i2vd_jobs", "Jobs in the journal by state", labels=["state"])
        for state, count in self.journal.counts().items():
            jobs.add_metric([state], count)
        yield jobs
        for key, (counts, total, seconds) in self.journal.done_histograms(BUCKETS).items():
            name, documentation = HISTOGRAMS[key]
            buckets = [(repr(bound), count) for bound, count in zip(BUCKETS, counts)] + [("+Inf", total)]
            yield HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=seconds)
        servers = self.journal.daemon_status().get("servers") or [] if daemon_alive(self._config()) else []
        up = GaugeMetricFamily(
            "i2vd_server_up", "1 while the server answers (as the daemon last saw it)", labels=["server"]
        )
        gate = GaugeMetricFamily(
            "i2vd_gate_open", "1 while the server's VRAM gate lets a job start (or is off)", labels=["server"]
        )
        for server in servers:
            name = str(server.get("name") or server.get("url") or "")
            up.add_metric([name], 0 if server.get("down_since") else 1)
            gate.add_metric([name], 1 if server.get("gate_state") in ("open", "off") else 0)
        yield up
        yield gate
        workers = GaugeMetricFamily(
            "i2vd_workers", "GPU-host workers (executor: celery) by state: seen lately, or gone", labels=["state"]
        )
        states = [worker["state"] for worker in self.journal.workers_seen()]
        for state in ("alive", "gone"):
            workers.add_metric([state], states.count(state))
        yield workers
        yield CounterMetricFamily("i2vd_intake_files", "Files taken in as jobs", value=self.journal.jobs_total())
        # A counter only grows: failures recorded since the daemon started (a retry or `forget` takes nothing off;
        # Prometheus reads a restart as a reset). What is failed now, and why, is the gauge beside it.
        failures = CounterMetricFamily(
            "i2vd_failures", "Jobs failed since the daemon started, by reason", labels=["reason"]
        )
        for reason, count in sorted(self.journal.failures_since_start().items()):
            failures.add_metric([reason], count)
        yield failures
        failed_now = GaugeMetricFamily("i2vd_jobs_failed", "Jobs failed now, by reason", labels=["reason"])
        by_reason: dict[str, int] = {}
        for error, count in self.journal.failure_errors():
            reason = failure_reason(error)
            by_reason[reason] = by_reason.get(reason, 0) + count
        for reason, count in sorted(by_reason.items()):
            failed_now.add_metric([reason], count)
        yield failed_now


def make_registry(config: Callable[[], Config], journal: Journal) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(config, journal))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
