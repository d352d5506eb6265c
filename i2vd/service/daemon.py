"""The composition root: lock, journal, backend, gate, watchers and worker, wired and run.

Threads: one intake loop (events, rescans, settling, hashing), one worker per
server, the webhook sender, the presence mirror (`executor: celery` only), and
the main thread, which publishes status, pings systemd and waits for a stop.
Every thread stops on one Event.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

from i2vd import __version__
from i2vd.cluster.app import config_timings
from i2vd.cluster.mirror import PresenceMirror, celery_executor
from i2vd.config import schedule as schedules
from i2vd.config.load import Config, ConfigError, load_config
from i2vd.core.clock import Clock
from i2vd.core.liveness import DEFAULT_MARGIN_SECONDS, Heartbeat
from i2vd.core.lock import StateLock
from i2vd.core.notify import Notifier
from i2vd.ingest import failed_folder
from i2vd.ingest.intake import Intake
from i2vd.ingest.loop import IntakeLoop
from i2vd.jobs.worker import Worker, build_workers
from i2vd.render.backends import make_backend
from i2vd.render.backends.base import Backend
from i2vd.render.gpu import GpuReadError, Reader, VramGate
from i2vd.service.webhooks import Sender
from i2vd.store.journal import JOURNAL_NAME, JobState, Journal, journal_path  # noqa: F401 - re-exported: where the journal is
from i2vd.store.status import server_label

log = logging.getLogger("i2vd.daemon")

STATUS_EVERY_SECONDS = 1.0


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        backend: Backend | None = None,
        gpu_reader: Reader | None = None,
        notifier: Notifier | None = None,
        liveness_margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ):
        self.config = config
        self.config_path = config_path
        self.liveness_margin_seconds = liveness_margin_seconds
        self._attention = threading.Event()  # set by signals: stop or reload wanted
        self._reload_requested = False
        self._stuck_reported = False
        self._status_refused = False  # the last status could not be written (state disk full?)
        self.clock = clock or Clock()
        self._backend = backend
        self._gpu_reader = gpu_reader
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.lock = StateLock(config.state_dir)
        self._threads: list[threading.Thread] = []
        self.journal: Journal | None = None
        self.workers: list[Worker] = []
        self.intake_loop: IntakeLoop | None = None
        self.web = None  # i2vd.web.WebServer while `http:` is set
        self.webhooks: Sender | None = None
        self.presence: PresenceMirror | None = None  # the GPU hosts' workers, with `executor: celery`
        self.started_at = self.clock.now()

    def start(self) -> None:
        """Everything up: raises AlreadyRunning (lock) or GpuReadError (gate misconfigured)."""
        self.lock.acquire()
        try:
            self.journal = Journal(journal_path(self.config), self.clock)  # upgrades an older journal before READY
        except Exception:
            self.lock.release()  # a newer journal (JournalVersionError) or an unreadable one: nothing started
            raise
        try:
            self.web = self._start_web(self.config)  # before any thread: a taken port leaves nothing running
        except OSError:
            self.journal.close()
            self.lock.release()
            raise
        for job in self.journal.recover_running(self.config.retry.max_interruptions):
            log.warning("job %d (%s) was running when i2vd stopped: %s", job.id, job.rel_path, job.state.value)
            if job.state is JobState.FAILED:  # a crash loop: failed like any other failure, so moved like one
                failed_folder.move_failed_source(self.config, job, job.last_error or "", self.clock.now())
        if self.config.executor.kind == "celery":  # the jobs go to GPU hosts through a queue (i2vd/cluster)
            from i2vd.cluster.backend import build_cluster_workers

            self.workers = build_cluster_workers(self.config, self.journal, self.clock, self.stop_event)
        else:
            self.workers = build_workers(
                self.config, self.journal, self.clock, backend=self._backend, gpu_reader=self._gpu_reader
            )
        intake = Intake(self.config, self.journal, on_queued=lambda job: self._wake_workers())
        self.intake_loop = IntakeLoop(self.config, intake, self.clock)
        self.webhooks = Sender(self.config, self.journal, self.clock)
        for heartbeat in self._heartbeats():
            heartbeat.margin_seconds = self.liveness_margin_seconds
            heartbeat.beat()
        self.intake_loop.start_watches()
        self._spawn("i2vd-intake", self.intake_loop.run, self.stop_event)
        for index, worker in enumerate(self.workers):
            self._spawn(f"i2vd-worker-{index}", worker.run, self.stop_event)
        self._spawn("i2vd-webhooks", self.webhooks.run, self.stop_event)
        self.journal.publish_status(
            {"pid": os.getpid(), "version": __version__, "started_at": self.started_at, "broker": None}
        )
        self._start_presence()  # after the line above: it publishes the broker's state from now on
        self.publish_status()
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")
        servers = ", ".join(server_label(worker.status()) for worker in self.workers)  # as `i2vd status` says
        log.info("i2vd %s running: %d watch root(s), server(s) %s", __version__, len(self.config.watch), servers)

    def _start_presence(self) -> None:
        """With `executor: {kind: celery}`, mirror the workers the broker knows into the journal, for status."""
        celery = celery_executor(self.config)
        if celery is None:
            return
        broker, queue = celery
        longest = config_timings(self.config).job_seconds
        self.presence = PresenceMirror(self.journal, broker, queue, clock=self.clock, job_seconds=longest)
        self._spawn("i2vd-presence", self.presence.run, self.stop_event)

    def _wake_workers(self) -> None:
        for worker in self.workers:
            worker.interrupt()

    def _spawn(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def status_line(self) -> str:
        counts, prepared = self.journal.counts(), self.journal.prepared_count()
        line = f"{counts['queued']} queued, {counts['running'] - prepared} running, "
        line += f"{prepared} prepared, " if prepared else ""
        line += f"{counts['done']} done, {counts['failed']} failed"
        if counts["parked"]:
            line += f", {counts['parked']} parked"
        down = sum(worker.state.server_down_since is not None for worker in self.workers)
        if down:
            line += f"; {down} server(s) down"
        if self.presence is not None and self.presence.reachable is False:
            line += f"; broker unreachable: {self.presence.shown_url}"
        line += schedules.status_words(self.config, self.workers, self.clock.now())
        working = [worker.state.current_file for worker in self.workers if worker.state.current_file]
        if working:
            line += f"; working on {', '.join(working)}"
        return line

    def publish_status(self) -> None:
        servers = [worker.status() for worker in self.workers]
        if self.webhooks is not None:
            self.webhooks.observe_servers(servers)  # server_down / server_up
        self.journal.publish_status(
            {
                "heartbeat_at": self.clock.now(),
                "servers": servers,
                "watches": [
                    {
                        "path": str(watch.root),
                        "method": watch.method,
                        "why": watch.reason,
                        "active": watch.active,
                        "schedule": schedules.root_status(self.config, watch.root, self.clock.now()),
                    }
                    for watch in self.intake_loop.watches
                ],
                "settling": self.intake_loop.settling,
            }
        )

    def _publish_or_say_why(self) -> None:
        """A journal that refuses a write for a while (state disk full) is said once, and the daemon goes on."""
        try:
            self.publish_status()
        except sqlite3.Error as error:
            if not self._status_refused:
                log.warning(
                    "cannot record the daemon's status in %s: %s (is %s full?); trying again every %.0f s",
                    self.journal.path,
                    error,
                    self.config.state_dir,
                    STATUS_EVERY_SECONDS,
                )
            self._status_refused = True
            return
        if self._status_refused:
            log.info("the daemon's status is recorded again in %s", self.journal.path)
        self._status_refused = False

    def _heartbeats(self) -> list[Heartbeat]:
        return [worker.heartbeat for worker in self.workers] + [self.intake_loop.heartbeat]

    def _working(self) -> bool:
        """Every working loop keeps its promise; a hung one is reported once and stops the watchdog pings."""
        overdue = [(heartbeat, heartbeat.overdue_seconds()) for heartbeat in self._heartbeats()]
        stuck = [(heartbeat, seconds) for heartbeat, seconds in overdue if seconds > 0]
        if stuck and not self._stuck_reported:
            for heartbeat, seconds in stuck:
                log.error(
                    "the %s is stuck (%s, %.0f s overdue): no more watchdog pings, systemd will restart i2vd",
                    heartbeat.name,
                    heartbeat.doing,
                    seconds,
                )
            self._stuck_reported = True
        elif not stuck:
            self._stuck_reported = False
        return not stuck

    def on_signal(self, signal_number: int, frame: object = None) -> None:
        """The handler for SIGTERM, SIGINT (stop) and SIGHUP (reload): it acts off the main thread.

        Python runs a handler in the main thread between two bytecodes, possibly while that thread holds
        `_attention`'s lock (serve() clearing it): setting that Event right there deadlocks, and the daemon
        then ignores SIGTERM until systemd kills it. A short thread waits for the lock instead.
        """
        action = self.request_reload if signal_number == signal.SIGHUP else self.request_stop
        threading.Thread(target=action, name=f"i2vd-signal-{signal_number}", daemon=True).start()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._attention.set()

    def reload(self) -> bool:
        """SIGHUP: take the config file anew; a bad one is reported in full and the running config stays."""
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            if self.config_path is None:
                raise ConfigError("<no config file>", ["this daemon was started without a config file to reload"])
            new = load_config(self.config_path)
            if new.state_dir != self.config.state_dir:
                raise ConfigError(
                    new.source,
                    [
                        (
                            f"state_dir: cannot change while running "
                            f"({self.config.state_dir} -> {new.state_dir}); restart instead"
                        )
                    ],
                )
            if new.executor != self.config.executor:
                raise ConfigError(new.source, ["executor: a change needs a restart"])
            if new.executor.kind == "celery":  # the servers are the GPU hosts': here the rest of the config changes
                changes = [(worker.server, None, None) for worker in self.workers]
            else:
                changes = self._server_changes(new)
        except (ConfigError, GpuReadError) as error:
            problems = error.problems if isinstance(error, ConfigError) else [f"gpu: {error}"]
            for problem in problems:
                log.error("reload refused: %s", problem)
            self.notifier.send(
                "READY=1",
                f"STATUS=reload refused ({len(problems)} problem(s), see the log); still running the previous config",
            )
            return False
        self.config = new
        for worker, (server, backend, gate) in zip(self.workers, changes, strict=True):
            worker.reconfigure(new, server, backend, gate)
        self.intake_loop.reconfigure(new)
        self.webhooks.reconfigure(new)
        self._reload_web(new)
        log.info("reloaded %s: %d watch root(s), %d profile(s)", new.source, len(new.watch), len(new.profiles))
        self.notifier.send("READY=1", f"STATUS=reloaded; {self.status_line()}")
        return True

    def _server_changes(self, new: Config) -> list[tuple]:
        """Each worker's new server, and its new backend and gate where they changed."""
        if len(new.servers) != len(self.config.servers):
            raise ConfigError(
                new.source, [f"servers: {len(self.config.servers)} -> {len(new.servers)} servers needs a restart"]
            )
        changes = []
        for old, entry in zip(self.config.servers, new.servers, strict=True):
            # a new schedule alone is taken by the worker as it is: no new backend for it
            changed = schedules.without_schedule(entry.server) != schedules.without_schedule(old.server)
            changed = changed and self._backend is None
            backend = make_backend(entry.server, self.config.state_dir) if changed else None
            gate = (
                VramGate.from_config(entry.gpu, self.clock, self._gpu_reader, server_url=entry.server.url)
                if entry.gpu != old.gpu
                else None
            )
            changes.append((entry.server, backend, gate))
        return changes

    def serve(self) -> None:
        """The main thread's loop until stop is requested."""
        ping_every = self.notifier.watchdog_interval()
        last_status = float("-inf")
        while not self.stop_event.is_set():
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            now = self.clock.monotonic()
            if now - last_status >= STATUS_EVERY_SECONDS:
                self._publish_or_say_why()
                self.notifier.send(f"STATUS={self.status_line()}")
                last_status = now
            if ping_every is not None and self._working() and all(thread.is_alive() for thread in self._threads):
                self.notifier.send("WATCHDOG=1")
            self._attention.clear()
            self.clock.wait(self._attention, min(STATUS_EVERY_SECONDS, ping_every or STATUS_EVERY_SECONDS))

    def request_stop(self) -> None:
        self.stop_event.set()
        if self.webhooks is not None:
            self.webhooks.wake.set()
        self._attention.set()
        self._wake_workers()

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Stop taking work, let running jobs finish within the grace, release them otherwise."""
        grace_seconds = self.config.stop_grace_seconds if grace_seconds is None else grace_seconds
        self.request_stop()
        self.notifier.send("STOPPING=1")
        self._stop_web()  # first: it reads the journal, which closes below
        deadline = self.clock.monotonic() + grace_seconds
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - self.clock.monotonic()))
        if self.intake_loop is not None:
            self.intake_loop.stop_watches()  # after its thread ended: it can no longer start them again
        for worker in self.workers:
            job_id = worker.state.current_job
            if job_id is not None:
                log.warning("job %d did not finish within %.0f s: released to the queue", job_id, grace_seconds)
                try:
                    self.journal.requeue(job_id, None, self.clock.now(), count_attempt=False)
                except sqlite3.Error as error:  # its lease runs out: the next start queues it again
                    log.warning("job %d could not be released in the journal: %s", job_id, error)
        if self.journal is not None:
            try:
                self.journal.publish_status({"heartbeat_at": None, "servers": []})
            except sqlite3.Error as error:
                log.warning("cannot record the daemon's stop in %s: %s", self.journal.path, error)
            if all(not thread.is_alive() for thread in self._threads):
                for worker in self.workers:
                    worker.backend.close()
                self.journal.close()
        self.lock.release()
        log.info("i2vd stopped")

    # -- the web dashboard (`http:`) ------------------------------------------------

    def _start_web(self, config: Config):
        """The dashboard on config.http (None when absent); raises WebListenError when it cannot listen."""
        if config.http is None:
            return None
        from i2vd.web import WebServer

        web = WebServer(config.http, lambda: self.config, self.journal, on_queued=self._wake_workers)
        try:
            web.start()
        except OSError as error:
            reason = error.strerror or error
            raise WebListenError(f"http.listen: cannot listen on {config.http.listen}: {reason}") from error
        return web

    def _stop_web(self) -> None:
        if self.web is not None:
            self.web.stop()
            self.web = None

    def _reload_web(self, new: Config) -> None:
        """A changed `http:` section applies now; if the new address cannot be had, the old one comes back."""
        old_settings = self.web.settings if self.web is not None else None
        if new.http == old_settings:
            return
        self._stop_web()
        try:
            self.web = self._start_web(new)
        except WebListenError as error:
            log.error("reload: %s; the dashboard stays as it was", error)
            try:
                self.web = self._start_web(dataclasses.replace(new, http=old_settings))
            except WebListenError as again:
                log.error("the dashboard is off: %s", again)


class WebListenError(OSError):
    """The dashboard's address cannot be listened on (in use, or not this host's)."""
