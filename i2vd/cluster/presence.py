"""Who works for the queue: each GPU host's worker announces itself in Redis, the ingest host reads it.

A worker (`i2vd worker`) runs a `PresenceBeacon`: every `interval_seconds` it writes one JSON value under
`i2vd:presence:<queue>:<host>:<pid>` with a time to live of a few intervals, holding what its `describe()`
says (host, server, gate reading, current job, jobs done, started at) and `last_seen`, and lists the key in the
queue's index (`i2vd:presence:<queue>`, a sorted set). A worker that dies stops writing and its key expires by
itself: nothing needs to clean up after a dead host (the reader drops expired keys from the index). A broker that
cannot be reached never ends the beacon: it says so once, keeps trying, and says when it is back.

The ingest host calls `read_presence` (bounded by a short socket timeout, no retries) and gets one
`WorkerSeen` per server slot. The `redis` client comes with the `celery` extra and is imported only here,
only when used: local users never need it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from i2vd.core.clock import Clock

log = logging.getLogger("i2vd.presence")

PRESENCE_PREFIX = "i2vd:presence"
TTL_INTERVALS = 3  # a key outlives its last write by this many intervals: a late beat or two is no death
READ_TIMEOUT_SECONDS = 1.0  # the ingest host's reads: connect and every reply
EXTRA_HINT = "the redis client is not installed: pip install 'i2vd[celery]'"


class BrokerUnreachable(Exception):
    """The broker could not be read; `url` is the broker's address without its password."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"broker unreachable: {url}: {reason}")
        self.url, self.reason = url, reason


def redact_url(url: str) -> str:
    """The URL without its password (in the userinfo or a `password=` query): safe to show and to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<an unreadable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query = urlencode([(key, value) for key, value in parse_qsl(parts.query) if key.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def presence_key(queue: str, host: str, pid: int) -> str:
    return f"{PRESENCE_PREFIX}:{queue}:{host}:{pid}"


def index_key(queue: str) -> str:
    """A sorted set of the queue's presence keys (score: the last beat): the reader looks up only those,
    never scans a broker whose keyspace also holds every Celery result."""
    return f"{PRESENCE_PREFIX}:{queue}"


def _redis_client(url: str, timeout_seconds: float):
    """A client that gives up after one try within `timeout_seconds` (redis-py retries three times by default)."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as error:
        raise BrokerUnreachable(redact_url(url), EXTRA_HINT) from error
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


def _redis_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return (OSError,)
    return (RedisError, OSError)


# -- what a worker says ------------------------------------------------------------------


def worker_description(
    servers: list[dict[str, Any]],
    *,
    started_at: float,
    worker_id: str | None = None,
    job_seconds: float | None = None,
) -> dict:
    """A `describe()` for a worker process from its servers' status (as `i2vd.jobs.worker.Worker.status()` gives
    it: name, kind, url, gate, current_job, jobs_done; `current_key` when the job came from a task): passwords
    in server URLs are removed here, before anything leaves the host. `job_seconds`: the longest job its visibility
    timeout allows (cluster/app.py `timings`), for the ingest host to compare."""
    return {
        "worker_id": worker_id or socket.gethostname(),
        "started_at": started_at,
        "job_seconds": job_seconds,
        "jobs_done": sum(int(server.get("jobs_done") or 0) for server in servers),
        "servers": [
            {
                "name": server.get("name"),
                "server": f"{server.get('kind') or ''} {redact_url(str(server.get('url') or ''))}".strip(),
                "gate": server.get("gate"),
                "current_job": server.get("current_job"),
                "current_key": server.get("current_key"),
                "jobs_done": server.get("jobs_done", 0),
            }
            for server in servers
        ],
    }


@dataclass(frozen=True)
class WorkerSeen:
    """One server slot of a worker process, as its last beacon described it."""

    worker_id: str  # stable across restarts: the host name, with `/<server name>` when the process has several
    host: str
    pid: int
    queue: str
    server: str  # kind and URL, password removed
    gate: str | None  # the VRAM gate's reading, e.g. "open: 3120 MiB used of 24576"
    current_job: int | None  # the ingest journal's job id
    current_key: str | None  # the job's idempotency key, when the task carried it
    jobs_done: int
    started_at: float | None
    last_seen: float  # the worker's own clock at its last beat
    interval_seconds: float
    job_seconds: float | None = None  # the longest job its visibility timeout allows (None: an older i2vd's worker)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any, kind: type, default: Any = None) -> Any:
    try:
        return kind(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def _text(value: Any, limit: int = 300) -> str | None:
    return None if value is None else str(value)[:limit]


def parse_record(raw: bytes | str, queue: str) -> list[WorkerSeen]:
    """The slots of one beacon's value; a value that is no beacon's (foreign or damaged) gives none."""
    try:
        record = json.loads(raw)
    except (TypeError, ValueError):
        return []
    if not isinstance(record, dict) or not record.get("host"):
        return []
    host = str(record["host"])[:200]
    base = _text(record.get("worker_id"), 200) or host
    slots = record.get("servers") if isinstance(record.get("servers"), list) else [record]
    seen = []
    for slot in (slot for slot in slots if isinstance(slot, dict)):
        name = _text(slot.get("name"), 100)
        worker_id = f"{base}/{name}" if len(slots) > 1 and name else base
        seen.append(
            WorkerSeen(
                worker_id=worker_id,
                host=host,
                pid=_number(record.get("pid"), int, 0),
                queue=queue,
                server=_text(slot.get("server")) or "",
                gate=_text(slot.get("gate")),
                current_job=_number(slot.get("current_job"), int),
                current_key=_text(slot.get("current_key"), 200),
                jobs_done=_number(slot.get("jobs_done", record.get("jobs_done")), int, 0),
                started_at=_number(record.get("started_at"), float),
                last_seen=_number(record.get("last_seen"), float, 0.0),
                interval_seconds=_number(record.get("interval_seconds"), float, 5.0),
                job_seconds=_number(record.get("job_seconds"), float),
            )
        )
    return seen


def read_presence(redis_url: str, queue: str, *, timeout_seconds: float = READ_TIMEOUT_SECONDS) -> list[WorkerSeen]:
    """Every worker slot announced for `queue` now, sorted by id; BrokerUnreachable when Redis cannot be read.

    Each round trip is bounded by `timeout_seconds` and nothing is retried: a dead broker costs one timeout.
    """
    client = _redis_client(redis_url, timeout_seconds)
    try:
        keys = client.zrange(index_key(queue), 0, -1)
        values = client.mget(keys) if keys else []
        expired = [key for key, value in zip(keys, values, strict=True) if value is None]
        if expired:  # their workers stopped beating: the journal keeps them as gone, the index forgets them
            client.zrem(index_key(queue), *expired)
    except _redis_errors() as error:
        raise BrokerUnreachable(redact_url(redis_url), str(error) or type(error).__name__) from error
    finally:
        client.close()
    latest: dict[str, WorkerSeen] = {}  # a restarted worker's old key lives on until its TTL: the newer one wins
    for slot in (slot for value in values if value is not None for slot in parse_record(value, queue)):
        if slot.worker_id not in latest or slot.last_seen > latest[slot.worker_id].last_seen:
            latest[slot.worker_id] = slot
    return sorted(latest.values(), key=lambda slot: slot.worker_id)


# -- the worker's side -------------------------------------------------------------------


class PresenceBeacon:
    """Writes this process's presence every `interval_seconds` on a thread of its own until stop().

    `beat()` is one write (tests call it without the thread); the thread waits on the injected clock.
    """

    def __init__(
        self,
        redis_url: str,
        describe: Callable[[], dict],
        interval_seconds: float = 5.0,
        *,
        queue: str = "i2vd",
        clock: Clock | None = None,
        host: str | None = None,
        pid: int | None = None,
    ):
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, not {interval_seconds}")
        self.redis_url = redis_url
        self.describe = describe
        self.interval_seconds = interval_seconds
        self.queue = queue
        self.clock = clock or Clock()
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.key = presence_key(queue, self.host, self.pid)
        self.ttl_ms = max(1, int(interval_seconds * TTL_INTERVALS * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.failed_beats = 0  # in a row: the broker's outage as this beacon sees it
        self._describe_failing = False

    def record(self) -> dict[str, Any]:
        """What this beat says: describe()'s dict, and who, where and when (never from describe)."""
        try:
            described = dict(self.describe())
            self._describe_failing = False
        except Exception as error:  # a broken describe must not silence the host: it still says it is alive
            if not self._describe_failing:
                log.exception("presence: cannot describe this worker (%s); announcing it without details", error)
            self._describe_failing = True
            described = {"servers": [{"server": "", "gate": f"cannot describe this worker: {error}"}]}
        return {
            **described,
            "host": self.host,
            "pid": self.pid,
            "queue": self.queue,
            "last_seen": self.clock.now(),
            "interval_seconds": self.interval_seconds,
        }

    def beat(self) -> bool:
        """One write; False (said once per outage) when the broker cannot take it."""
        payload = json.dumps(self.record(), default=str)
        try:
            if self._client is None:
                self._client = _redis_client(self.redis_url, min(self.interval_seconds, READ_TIMEOUT_SECONDS * 2))
            with self._client.pipeline(transaction=True) as pipeline:
                pipeline.set(self.key, payload, px=self.ttl_ms)
                pipeline.zadd(index_key(self.queue), {self.key: self.clock.now()})
                pipeline.execute()
        except (BrokerUnreachable, *_redis_errors()) as error:
            if not self.failed_beats:
                log.warning(
                    "presence: cannot write to the broker %s (%s); trying again every %.0f s",
                    redact_url(self.redis_url),
                    getattr(error, "reason", None) or error,
                    self.interval_seconds,
                )
            self.failed_beats += 1
            return False
        if self.failed_beats:
            log.info("presence: the broker %s takes this worker's presence again", redact_url(self.redis_url))
        self.failed_beats = 0
        return True

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the presence beacon is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="i2vd-presence-beacon", daemon=False)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception:  # one bad beat never ends the beacon
                log.exception("presence: unexpected error in a beat")
            if self.clock.wait(self._stop, self.interval_seconds):
                break

    def stop(self) -> None:
        """Stop writing (the key then expires by its TTL, as if the host had died) and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> PresenceBeacon:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
