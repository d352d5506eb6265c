"""What the webhook outbox holds, for `i2vd status` and the dashboard (the sender is i2vd.service.webhooks)."""

from __future__ import annotations

from typing import Any

from i2vd.config.load import Config
from i2vd.store.journal import Journal


def outbox_status(journal: Journal, config: Config) -> dict[str, Any] | None:
    """For status and the dashboard: undelivered (still trying), given up, and the last delivery error."""
    if not config.webhooks:
        return None
    counts = journal.query(
        "SELECT sum(delivered_at IS NULL AND given_up_at IS NULL), sum(given_up_at IS NOT NULL) FROM webhook_outbox"
    )
    pending = journal.query("SELECT count(*) FROM webhook_events")
    last = journal.query(
        "SELECT url, event, last_error, attempts FROM webhook_outbox WHERE last_error IS NOT NULL"
        " AND delivered_at IS NULL ORDER BY next_attempt_at DESC LIMIT 1"
    )
    undelivered, given_up = counts[0] if counts else (0, 0)
    return {
        "undelivered": (undelivered or 0) + (pending[0][0] if pending else 0),
        "given_up": given_up or 0,
        "last_error": (
            f"{last[0]['url']} ({last[0]['event']}, {last[0]['attempts']} attempt(s)): {last[0]['last_error']}"
        )
        if last
        else None,
    }
