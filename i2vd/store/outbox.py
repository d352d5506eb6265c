"""The webhook outbox's SQL (a mixin of Journal), and what it holds for `i2vd status` and the dashboard.

Two tables: `webhook_events` (outcomes written by triggers on `jobs`, server events added here)
waiting to become deliveries, and `webhook_outbox` (one row per delivery, kept across restarts).
The sender that POSTs them is i2vd.service.webhooks; it reads and writes them only through these methods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from i2vd.config.load import Config


@dataclass(frozen=True)
class WebhookEvent:
    """An outcome or server event that no delivery was made of yet."""

    id: int
    job_id: int | None
    event: str
    at: float
    server: dict[str, Any] | None


@dataclass(frozen=True)
class Delivery:
    """One event for one receiver: the same id and body on every attempt."""

    delivery_id: str
    url: str
    event: str
    body: bytes
    created_at: float
    attempts: int


_UNSETTLED = "delivered_at IS NULL AND given_up_at IS NULL"


class Outbox:
    # -- events in -----------------------------------------------------------------------

    def add_webhook_event(self, event: str, at: float, server: dict[str, Any]) -> None:
        """A server event (server_down, server_up) with the server; job outcomes come from the triggers."""
        with self._write() as db:
            db.execute(
                "INSERT INTO webhook_events (job_id, event, at, server_json) VALUES (NULL, ?, ?, ?)",
                (event, at, json.dumps(server, sort_keys=True, default=str)),
            )

    def webhook_events(self, limit: int) -> list[WebhookEvent]:
        """The oldest events not yet made into deliveries."""
        rows = self._read("SELECT id, job_id, event, at, server_json FROM webhook_events ORDER BY id LIMIT ?", (limit,))
        return [
            WebhookEvent(row["id"], row["job_id"], row["event"], row["at"], json.loads(row["server_json"] or "null"))
            for row in rows
        ]

    def queue_deliveries(
        self, events: list[WebhookEvent], deliveries: list[tuple[str, str, str, bytes]], now: float
    ) -> None:
        """One transaction: the deliveries (id, url, event, body) made of `events`, due now; those events gone."""
        with self._write() as db:
            db.executemany(
                "INSERT INTO webhook_outbox (delivery_id, url, event, body, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(*delivery, now, now) for delivery in deliveries],
            )
            db.executemany("DELETE FROM webhook_events WHERE id = ?", [(event.id,) for event in events])

    # -- deliveries out -------------------------------------------------------------------

    def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Deliveries neither delivered nor given up whose next attempt is due, the longest due first."""
        rows = self._read(
            "SELECT delivery_id, url, event, body, created_at, attempts FROM webhook_outbox"
            f" WHERE {_UNSETTLED} AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
            (now, limit),
        )
        return [Delivery(**{**dict(row), "body": bytes(row["body"])}) for row in rows]

    def mark_delivered(self, delivery_id: str, attempts: int, now: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE webhook_outbox SET delivered_at = ?, attempts = ?, last_error = NULL WHERE delivery_id = ?",
                (now, attempts, delivery_id),
            )

    def reschedule_delivery(self, delivery_id: str, attempts: int, error: str, next_attempt_at: float) -> None:
        """A failed attempt: tried again at `next_attempt_at` (the sender's backoff)."""
        with self._write() as db:
            db.execute(
                "UPDATE webhook_outbox SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE delivery_id = ?",
                (attempts, error, next_attempt_at, delivery_id),
            )

    def give_up_delivery(self, delivery_id: str, attempts: int, error: str, now: float) -> None:
        """A failed attempt after which the delivery is not tried again (counted in status as given up)."""
        with self._write() as db:
            db.execute(
                "UPDATE webhook_outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, given_up_at = ?"
                " WHERE delivery_id = ?",
                (attempts, error, now, now, delivery_id),
            )

    def forget_delivered(self, before: float) -> None:
        """Deliveries delivered before `before` are no longer kept."""
        with self._write() as db:
            db.execute("DELETE FROM webhook_outbox WHERE delivered_at < ?", (before,))

    def next_delivery_due(self) -> float | None:
        """When the soonest delivery still to be made is due (None: none is)."""
        return self._read(f"SELECT min(next_attempt_at) FROM webhook_outbox WHERE {_UNSETTLED}")[0][0]

    # -- for status ----------------------------------------------------------------------------

    def outbox_counts(self) -> dict[str, Any]:
        """Events and deliveries still to be delivered, those given up, and the latest failure of one unsettled."""
        undelivered, given_up = self._read(
            f"SELECT sum({_UNSETTLED}), sum(given_up_at IS NOT NULL) FROM webhook_outbox"
        )[0]
        pending = self._read("SELECT count(*) FROM webhook_events")[0][0]
        last = self._read(
            "SELECT url, event, last_error, attempts FROM webhook_outbox WHERE last_error IS NOT NULL"
            " AND delivered_at IS NULL ORDER BY next_attempt_at DESC LIMIT 1"
        )
        return {
            "undelivered": (undelivered or 0) + pending,
            "given_up": given_up or 0,
            "last_failure": dict(last[0]) if last else None,
        }


def outbox_status(journal: Outbox, config: Config) -> dict[str, Any] | None:
    """For status and the dashboard: undelivered (still trying), given up, and the last delivery error."""
    if not config.webhooks:
        return None
    counts = journal.outbox_counts()
    last = counts["last_failure"]
    return {
        "undelivered": counts["undelivered"],
        "given_up": counts["given_up"],
        "last_error": f"{last['url']} ({last['event']}, {last['attempts']} attempt(s)): {last['last_error']}"
        if last
        else None,
    }
