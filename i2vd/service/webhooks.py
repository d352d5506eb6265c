"""`webhooks:`: events POSTed to receivers, at least once, from a journal outbox.

Job outcomes (done, failed, parked) are written into `webhook_events` by triggers on the jobs
table, in the transaction that changes the job; server_down and server_up are added by the
daemon when it sees a worker's server change. The sender thread turns each event into one
delivery per webhook that wants it (`webhook_outbox`, one transaction: none is lost, none made
twice) and POSTs the deliveries that are due. A delivery keeps its id (header X-I2VD-Delivery)
and its exact body across attempts and restarts, so a receiver can dedupe. A failed attempt is
tried again after 2 s, 4 s, ... at most 5 min apart, for 24 h; then it is given up (and counted).

The sender has a thread of its own: a receiver that hangs holds up other deliveries at most
`timeout_seconds`, and never a worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

from i2vd import __version__
from i2vd.config.load import Config, WebhookSettings
from i2vd.core.clock import Clock
from i2vd.render import output
from i2vd.store.journal import Journal
from i2vd.store.outbox import Delivery

log = logging.getLogger("i2vd.webhooks")

FIRST_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 300.0
GIVE_UP_SECONDS = 24 * 3600.0
DELIVERED_KEPT_SECONDS = 24 * 3600.0
BATCH = 50
IDLE_SECONDS = 0.5


def retry_delay(attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: 2 s, 4 s, 8 s ... capped at 5 min."""
    return min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1))


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _iso(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def job_document(journal: Journal, job_id: int) -> dict[str, Any] | None:
    """The job's audit record (the JSON beside its video) when there is one, else what the journal knows."""
    job = journal.job(job_id)
    if job is None:
        return None
    if job.output_path:
        try:
            record = json.loads(output.record_path(Path(job.output_path)).read_text(encoding="utf-8"))
            if isinstance(record, dict) and record.get("job_id") == job.id:
                return {**record, "state": job.state.value}
        except (OSError, ValueError):
            pass
    document = job.as_dict()
    document["error"] = job.last_error
    return document


class Sender:
    def __init__(self, config: Config, journal: Journal, clock: Clock | None = None):
        self.config = config
        self.journal = journal
        self.clock = clock or Clock()
        self.wake = threading.Event()
        import requests  # here, not at the top: `i2vd status` reads the outbox and must stay quick to start

        from i2vd.render.backends import http

        self._session = http.mount_deadline_adapter(requests.Session())  # each POST bounded as a whole (_post)
        self._servers_down: dict[str, bool] = {}

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.wake.set()

    def close(self) -> None:
        self._session.close()

    # -- events in -----------------------------------------------------------------------

    def server_event(self, event: str, server: dict[str, Any]) -> None:
        """server_down or server_up, with the server (its name, kind, url and error)."""
        self.journal.add_webhook_event(event, self.clock.now(), server)
        self.wake.set()

    def observe_servers(self, servers: list[dict[str, Any]]) -> None:
        """From the daemon's status loop: a server that went down or came back since the last look."""
        for server in servers:
            name = str(server.get("name") or server.get("url"))
            down = server.get("down_since") is not None
            if self._servers_down.get(name, False) != down:
                self.server_event("server_down" if down else "server_up", server)
            self._servers_down[name] = down

    def _fan_out(self) -> int:
        """Events into deliveries, one per webhook that wants the event; returns how many events were taken."""
        events = self.journal.webhook_events(BATCH)
        if not events:
            return 0
        deliveries = []
        for each in events:
            hooks = [hook for hook in self.config.webhooks if each.event in hook.events]
            if not hooks:
                continue
            body: dict[str, Any] = {"event": each.event, "at": _iso(each.at)}
            if each.job_id is not None:
                body["job"] = job_document(self.journal, each.job_id)
            if each.server is not None:
                body["server"] = each.server
            data = json.dumps(body, sort_keys=True, default=str).encode("utf-8")
            deliveries += [(str(uuid.uuid4()), hook.url, each.event, data) for hook in hooks]
        self.journal.queue_deliveries(events, deliveries, self.clock.now())
        return len(events)

    # -- deliveries out -------------------------------------------------------------------

    def _hook(self, url: str) -> WebhookSettings | None:
        return next((hook for hook in self.config.webhooks if hook.url == url), None)

    def _post(self, hook: WebhookSettings, delivery: Delivery) -> str | None:
        """One attempt; None when the receiver took it (2xx), else what went wrong."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"i2vd/{__version__}",
            "X-I2VD-Delivery": delivery.delivery_id,
            "X-I2VD-Event": delivery.event,
        }
        if hook.secret:
            headers["X-I2VD-Signature"] = signature(hook.secret, delivery.body)
        from i2vd.render.backends import http
        from i2vd.render.backends.base import BackendError

        # timeout_seconds bounds the whole attempt, connect to last byte: a receiver that answers one byte a
        # second never holds the sender (and every other hook's deliveries) longer.
        try:
            with http.Deadline(hook.timeout_seconds, f"the webhook receiver {hook.url}") as deadline:
                reply = http.request(
                    self._session,
                    "POST",
                    hook.url,
                    deadline,
                    min(5.0, hook.timeout_seconds),
                    data=delivery.body,
                    headers=headers,
                    allow_redirects=False,
                )
                try:
                    http.read_all(reply, deadline)
                finally:
                    reply.close()
        except (BackendError, OSError) as error:  # refused, dropped, timed out: as for any server (failures.py)
            return f"{type(error).__name__}: {error}"
        if 200 <= reply.status_code < 300:
            return None
        return f"HTTP {reply.status_code} from {hook.url}"

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """POST every due delivery once; returns how many were delivered."""
        delivered = 0
        for delivery in self.journal.due_deliveries(self.clock.now(), BATCH):
            if stop is not None and stop.is_set():
                break
            hook = self._hook(delivery.url)
            error = "this webhook is no longer configured" if hook is None else self._post(hook, delivery)
            now = self.clock.now()
            attempts = delivery.attempts + 1
            if error is None:
                self.journal.mark_delivered(delivery.delivery_id, attempts, now)
                delivered += 1
                continue
            give_up = hook is None or now - delivery.created_at >= GIVE_UP_SECONDS
            if give_up:
                self.journal.give_up_delivery(delivery.delivery_id, attempts, error, now)
            else:
                self.journal.reschedule_delivery(delivery.delivery_id, attempts, error, now + retry_delay(attempts))
            level = logging.ERROR if give_up else logging.WARNING
            log.log(
                level,
                "webhook %s (%s, delivery %s): %s; %s",
                delivery.url,
                delivery.event,
                delivery.delivery_id,
                error,
                "given up" if give_up else f"trying again in {retry_delay(attempts):.0f} s",
            )
        return delivered

    def run_once(self, stop: threading.Event | None = None) -> int:
        while self._fan_out():
            pass
        delivered = self.deliver_due(stop)
        self.journal.forget_delivered(self.clock.now() - DELIVERED_KEPT_SECONDS)
        return delivered

    def next_due(self) -> float | None:
        return self.journal.next_delivery_due()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once(stop)
            except Exception:  # noqa: BLE001 - a busy journal must not end deliveries for good
                log.exception("webhook sender round failed; trying again shortly")
            self.wake.clear()
            due = self.next_due()
            pause = IDLE_SECONDS if due is None else min(IDLE_SECONDS, max(0.05, due - self.clock.now()))
            if stop.is_set():
                break
            self.clock.wait(self.wake, pause)
        self.close()
