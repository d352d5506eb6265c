"""The GPU hosts' workers (`executor: celery`) as the ingest daemon last saw them in the broker (a mixin of Journal).

The daemon's presence mirror (i2vd.cluster.mirror) records what each read of the broker showed; `status`, the
dashboard and /metrics read it back with each worker's state: `alive` while it was seen within its `gone_after`
seconds (a few of its beacon's intervals), `gone` after that. A gone worker stays listed with its last-seen
time, so an operator sees a host that died, until it has been gone for FORGET_AFTER_SECONDS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from i2vd.store.records import printable

FORGET_AFTER_SECONDS = 7 * 24 * 3600.0
_COLUMNS = (
    "worker_id",
    "queue",
    "host",
    "pid",
    "server",
    "gate",
    "current_job",
    "current_key",
    "jobs_done",
    "started_at",
    "reported_at",
)


class WorkersSeen:
    def record_workers_seen(self, seen: Iterable[Mapping[str, Any]], seen_at: float, gone_after: float) -> None:
        """Workers present in the broker at `seen_at` (WorkerSeen.as_dict(): `last_seen` is the worker's own
        clock, kept as reported_at; a `gone_after` there overrides the argument); ones gone for
        FORGET_AFTER_SECONDS are dropped."""
        with self._write() as db:
            for worker in seen:
                values = {name: worker.get(name) for name in _COLUMNS}
                values["reported_at"] = worker.get("last_seen")
                for name in ("worker_id", "queue", "host", "server", "gate", "current_key"):
                    values[name] = printable(None if values[name] is None else str(values[name]))
                db.execute(
                    f"INSERT INTO workers_seen ({', '.join(_COLUMNS)}, last_seen, gone_after)"
                    f" VALUES ({', '.join('?' * len(_COLUMNS))}, ?, ?)"
                    " ON CONFLICT (worker_id) DO UPDATE SET "
                    + ", ".join(f"{name} = excluded.{name}" for name in (*_COLUMNS[1:], "last_seen", "gone_after")),
                    (*(values[name] for name in _COLUMNS), seen_at, worker.get("gone_after", gone_after)),
                )
            db.execute("DELETE FROM workers_seen WHERE last_seen < ?", (seen_at - FORGET_AFTER_SECONDS,))

    def workers_seen(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every worker recorded, by id, with `state` (alive or gone, at `now`: the journal's clock by default)."""
        now = self.clock.now() if now is None else now
        rows = self._read(f"SELECT {', '.join(_COLUMNS)}, last_seen, gone_after FROM workers_seen ORDER BY worker_id")
        workers = []
        for row in rows:
            worker = dict(row)
            worker["state"] = "alive" if now - worker["last_seen"] <= worker.pop("gone_after") else "gone"
            workers.append(worker)
        return workers
