"""Presence with a real redis-server: a worker's beacon is seen by the ingest host's read, expires when it stops,
outlives a broker outage, and a broker that cannot be read is said (bounded, password never shown)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import pytest
import redis

from i2vd.cluster.presence import (
    BrokerUnreachable,
    PresenceBeacon,
    index_key,
    parse_record,
    presence_key,
    read_presence,
    redact_url,
    worker_description,
)
from i2vd.core.clock import ManualClock
from tests.support.fakes import wait_for

DEADLINE_SECONDS = 15.0


def eventually(condition: Callable[[], object], what: str) -> object:
    return wait_for(condition, timeout=DEADLINE_SECONDS, message=what)


def gpu_host(job: int | None = 42) -> dict:
    return worker_description(
        [
            {
                "name": "gpu0",
                "kind": "predict",
                "url": "http://admin:hunter2@127.0.0.1:7860",
                "gate": "open: 3120 MiB used of 24576",
                "current_job": job,
                "current_key": "abc:def" if job else None,
                "jobs_done": 7,
            }
        ],
        started_at=1_770_000_000.0,
        worker_id="gpu-a",
    )


def test_a_beat_is_what_the_ingest_host_reads(redis_server):
    clock = ManualClock(1_770_000_100.0)
    beacon = PresenceBeacon(redis_server.url, gpu_host, 5.0, queue="studio", clock=clock, host="gpu-a", pid=4242)
    assert beacon.beat()
    beacon.stop()  # closes its client; no thread was started

    [seen] = read_presence(redis_server.url, "studio")
    assert seen.worker_id == "gpu-a" and seen.host == "gpu-a" and seen.pid == 4242 and seen.queue == "studio"
    assert seen.server == "predict http://admin@127.0.0.1:7860"  # the password never leaves the host
    assert seen.gate == "open: 3120 MiB used of 24576"
    assert (seen.current_job, seen.current_key, seen.jobs_done) == (42, "abc:def", 7)
    assert (seen.started_at, seen.last_seen, seen.interval_seconds) == (1_770_000_000.0, 1_770_000_100.0, 5.0)
    assert read_presence(redis_server.url, "other-queue") == []


def test_the_key_expires_after_stop_as_for_a_dead_host(redis_server):
    with PresenceBeacon(redis_server.url, gpu_host, 0.1, queue="studio") as beacon:
        eventually(lambda: read_presence(redis_server.url, "studio"), "the beacon's first write")
        assert beacon.ttl_ms == 300
    eventually(lambda: read_presence(redis_server.url, "studio") == [], "the key expiring after stop()")


def test_the_beacon_outlives_a_broker_outage_says_it_once_and_comes_back(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="i2vd.presence")
    with PresenceBeacon(redis_server.url, gpu_host, 0.05, queue="studio") as beacon:
        eventually(lambda: read_presence(redis_server.url, "studio"), "the first write")
        redis_server.kill()
        failed_at = time.time()
        # it goes on trying, beat after beat, saying so only once
        eventually(lambda: beacon.failed_beats >= 3, "the beacon failing several beats in a row")
        redis_server.start()

        def fresh():
            return [seen for seen in read_presence(redis_server.url, "studio") if seen.last_seen > failed_at]

        eventually(fresh, "a write after the broker came back")
    warnings = [record for record in caplog.records if "cannot write to the broker" in record.getMessage()]
    assert len(warnings) == 1
    assert any("takes this worker's presence again" in record.getMessage() for record in caplog.records)


def test_an_unreachable_broker_is_said_without_its_password(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(BrokerUnreachable) as raised:
        read_presence(f"redis://:s3cret@127.0.0.1:{port}/0", "studio", timeout_seconds=0.5)
    assert raised.value.url == f"redis://127.0.0.1:{port}/0"
    assert "s3cret" not in str(raised.value)


def test_a_broker_that_never_answers_costs_one_timeout():
    with socket.socket() as silent:  # accepts connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        with pytest.raises(BrokerUnreachable, match="broker unreachable: redis://127.0.0.1"):
            read_presence(url, "studio", timeout_seconds=0.2)


def test_foreign_or_damaged_values_are_no_workers_and_several_servers_are_several_slots(redis_server):
    record = gpu_host()
    record["servers"].append({**record["servers"][0], "name": "gpu1", "current_job": None})
    two = json.dumps({**record, "host": "gpu-b", "pid": 7, "last_seen": 1.0})
    assert [seen.worker_id for seen in parse_record(two, "q")] == ["gpu-a/gpu0", "gpu-a/gpu1"]
    for junk in (b"\xff", "[1, 2]", "{}", '{"host": "x", "servers": ["not a slot"]}', "null"):
        assert parse_record(junk, "q") == []
    assert [seen.pid for seen in parse_record('{"host": "x", "pid": "seven"}', "q")] == [0]


def test_a_restarted_worker_is_one_worker_its_newer_process_and_expired_keys_leave_the_index(redis_server):
    clock = ManualClock(1_770_000_000.0)
    old = PresenceBeacon(redis_server.url, gpu_host, 0.1, queue="q", clock=clock, host="gpu-a", pid=1)
    assert old.beat()
    old.stop()  # killed: its key lives on until its TTL
    clock.advance(1)
    new = PresenceBeacon(redis_server.url, lambda: gpu_host(job=None), 5.0, queue="q", clock=clock, host="gpu-a", pid=2)
    assert new.beat()
    new.stop()
    [seen] = read_presence(redis_server.url, "q")
    assert (seen.pid, seen.current_job) == (2, None)
    wait_for(lambda: len(read_presence(redis_server.url, "q")) == 1 and _indexed(redis_server.url, "q") == 1,
             timeout=DEADLINE_SECONDS, message="the old key expired and left the index")  # fmt: skip


def _indexed(url: str, queue: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.zcard(index_key(queue))
    finally:
        client.close()


def test_a_queue_name_with_glob_characters_matches_only_itself(redis_server):
    for queue in ("a*", "ab"):
        beacon = PresenceBeacon(redis_server.url, gpu_host, 5.0, queue=queue, host=f"host-{queue}", pid=1)
        assert beacon.beat()
        beacon.stop()
    assert [seen.host for seen in read_presence(redis_server.url, "a*")] == ["host-a*"]
    assert presence_key("a*", "h", 1) == "i2vd:presence:a*:h:1"


def test_a_describe_that_raises_still_announces_the_host(redis_server, caplog):
    def broken() -> dict:
        raise RuntimeError("gate not ready")

    beacon = PresenceBeacon(redis_server.url, broken, 5.0, queue="q", host="gpu-c", pid=3)
    assert beacon.beat() and beacon.beat()
    beacon.stop()
    [seen] = read_presence(redis_server.url, "q")
    assert seen.host == "gpu-c" and "gate not ready" in seen.gate
    assert len([record for record in caplog.records if "cannot describe" in record.getMessage()]) == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@queue-host:6379/0", "redis://queue-host:6379/0"),
        ("redis://i2vd:pw@queue-host:6379/0", "redis://i2vd@queue-host:6379/0"),
        ("rediss://queue-host/1?password=pw&ssl_cert_reqs=none", "rediss://queue-host/1?ssl_cert_reqs=none"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("http://user:pw@gpu:7860/api", "http://user@gpu:7860/api"),
    ],
)
def test_redact_url_removes_every_password(url, shown):
    assert redact_url(url) == shown
