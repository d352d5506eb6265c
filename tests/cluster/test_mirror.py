"""The ingest daemon's mirror of the broker, with a real redis-server and a real beacon: `status` lists each GPU
host's worker alive, then gone with its last-seen time; a broker that is down is said, bounded, and nothing fails."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import redis

from i2vd.cluster.mirror import PresenceMirror, celery_executor
from i2vd.cluster.presence import PresenceBeacon, read_presence, worker_description
from i2vd.config.load import load_config
from i2vd.core.clock import ManualClock
from i2vd.core.lock import StateLock
from i2vd.store.journal import Journal, NewJob, journal_path
from i2vd.store.status import gather_status, render_status
from tests.end_to_end.harness import write_config
from tests.support.fakes import wait_for


def new_job(number: int) -> NewJob:
    return NewJob(
        idem_key=f"{number:064x}:key",
        source_path=f"/srv/in/shoot/img{number}.jpg",
        root="/srv/in",
        rel_path=f"shoot/img{number}.jpg",
        source_sha256=f"{number:064x}",
        source_size=1000,
        profile_name="default",
        prompt="A scene",
        params={"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None},
    )


def describe(job_id: int | None, key: str | None):
    def described() -> dict:
        server = {"name": "gpu0", "kind": "predict", "url": "http://127.0.0.1:7860", "jobs_done": 3}
        server.update(gate="open: 3120 MiB used of 24576", current_job=job_id, current_key=key)
        return worker_description([server], started_at=1_770_000_000.0, worker_id="gpu-a")

    return described


def test_status_lists_a_worker_alive_then_gone_and_keeps_it(tmp_path: Path, redis_server):
    config = load_config(write_config(tmp_path, None))
    clock = ManualClock(1_770_000_000.0)
    with StateLock(config.state_dir):  # as the daemon holds it: status shows what it publishes
        journal = Journal(journal_path(config), clock)
        try:
            job, _ = journal.add_job(new_job(1))
            beacon = PresenceBeacon(redis_server.url, describe(job.id, job.idem_key), 0.1, queue="i2vd", clock=clock)
            mirror = PresenceMirror(journal, redis_server.url, "i2vd", clock=clock, interval_seconds=1.0)
            assert beacon.beat() and mirror.poll_once()

            status = gather_status(config, journal)
            [worker] = status["workers"]
            assert worker["state"] == "alive" and worker["host"] == beacon.host
            assert (worker["current_job"], worker["current_file"]) == (job.id, "shoot/img1.jpg")
            assert status["broker"]["reachable"] is True and status["broker"]["url"] == redis_server.url
            text = render_status(status)
            assert "workers: 1 alive, 0 gone" in text
            assert f"gpu-a on {beacon.host} (predict http://127.0.0.1:7860) — alive, last seen" in text
            assert f"gpu: open: 3120 MiB used of 24576; job {job.id} shoot/img1.jpg; 3 done" in text
            json.dumps(status)  # what status --json and /api/status give

            beacon.stop()  # the host dies: its key expires with its TTL
            wait_for(lambda: read_presence(redis_server.url, "i2vd") == [], timeout=15, message="the key expiring")
            assert mirror.poll_once()
            assert gather_status(config, journal)["workers"][0]["state"] == "alive"  # not yet: a late beat is no death
            clock.advance(mirror.gone_after(0.1) + 0.1)
            mirror.poll_once()
            [worker] = gather_status(config, journal)["workers"]
            assert worker["state"] == "gone" and worker["last_seen"] == 1_770_000_000.0
            text = render_status(gather_status(config, journal))
            assert "workers: 0 alive, 1 gone" in text and "GONE, last seen" in text and f"was on job {job.id}" in text
        finally:
            journal.close()


def host_with_longest_job(worker_id: str, job_seconds: float):
    def described() -> dict:
        server = {"name": "gpu0", "kind": "predict", "url": "http://127.0.0.1:7860", "gate": "open"}
        return worker_description([server], started_at=1.0, worker_id=worker_id, job_seconds=job_seconds)

    return described


def test_hosts_that_disagree_on_the_longest_job_are_said_in_status_and_the_log(tmp_path: Path, redis_server, caplog):
    """Each host's visibility timeout comes from its own servers' timeout_seconds unless every config sets
    executor.job_timeout_seconds: the GPU host with the shortest one hands a longer job still running elsewhere to a
    second host (Redis restores unacked tasks by the consumer's own timeout). Nothing else would show it."""
    caplog.set_level(logging.INFO, logger="i2vd.presence")
    config = load_config(write_config(tmp_path, None))
    clock = ManualClock(1_770_000_000.0)
    with StateLock(config.state_dir):
        journal = Journal(journal_path(config), clock)
        try:
            beacons = [
                PresenceBeacon(redis_server.url, host_with_longest_job(name, seconds), 5.0, clock=clock, host=name)
                for name, seconds in (("gpu-a", 900.0), ("gpu-b", 600.0))
            ]
            mirror = PresenceMirror(journal, redis_server.url, "i2vd", clock=clock, job_seconds=600.0)
            assert all(beacon.beat() for beacon in beacons) and mirror.poll_once()

            warning = (
                "hosts on queue i2vd disagree on the longest job (this host 600 s; gpu-a 900 s; gpu-b 600 s): a job"
                " longer than 600 s may go to a second GPU host while the first still runs it; set"
                " executor.job_timeout_seconds: 900 in every host's config"
            )
            assert f"warning: {warning}" in render_status(gather_status(config, journal)).splitlines()
            assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [warning]
            assert mirror.poll_once()  # said once, not every 2 s
            late = PresenceBeacon(redis_server.url, host_with_longest_job("gpu-c", 600.0), 5.0, clock=clock, host="c")
            assert late.beat() and mirror.poll_once()  # one more host, the same two values: not said again
            assert "gpu-b, gpu-c 600 s" in render_status(gather_status(config, journal))
            assert len([record for record in caplog.records if record.levelname == "WARNING"]) == 1

            # gpu-a's config gets job_timeout_seconds: 600 and it restarts; gpu-b and gpu-c stop: their keys gone
            # as at the end of their lifetime (15 s), without the wait.
            broker = redis.Redis.from_url(redis_server.url)
            for beacon in (*beacons, late):
                beacon.stop()
                broker.delete(beacon.key)
            broker.close()
            assert read_presence(redis_server.url, "i2vd") == []
            agreeing = PresenceBeacon(redis_server.url, host_with_longest_job("gpu-a", 600.0), 5.0, clock=clock)
            assert agreeing.beat() and mirror.poll_once()
            agreeing.stop()
            assert "warning:" not in render_status(gather_status(config, journal))
            assert "hosts on queue i2vd agree on the longest job again: 600 s" in caplog.text
        finally:
            journal.close()


def test_a_broker_that_is_down_is_said_in_status_and_nothing_fails(tmp_path: Path, redis_server):
    config = load_config(write_config(tmp_path, None))
    clock = ManualClock(1_770_000_000.0)
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    with StateLock(config.state_dir):
        journal = Journal(journal_path(config), clock)
        try:
            mirror = PresenceMirror(journal, url, "i2vd", clock=clock, read_timeout_seconds=0.5)
            redis_server.kill()
            assert mirror.poll_once() is False  # returns: bounded by the read timeout
            status = gather_status(config, journal)
            assert status["workers"] == [] and status["broker"]["reachable"] is False
            text = render_status(status)
            assert f"broker unreachable: {redis_server.url} since" in text
            assert "s3cret" not in text and "workers:" not in text
            redis_server.start()
            assert mirror.poll_once() is True
            assert "broker:  " in render_status(gather_status(config, journal))
        finally:
            journal.close()


def test_a_local_daemon_shows_no_broker_and_no_workers(tmp_path: Path):
    config = load_config(write_config(tmp_path, None))
    assert celery_executor(config) is None
    journal = Journal(journal_path(config))
    try:
        status = gather_status(config, journal)
        assert status["workers"] == [] and status["broker"] is None
        assert "worker" not in render_status(status) and "broker" not in render_status(status)
    finally:
        journal.close()


def test_a_celery_executor_gives_the_mirror_its_broker_and_queue(tmp_path: Path):
    executor = {"kind": "celery", "broker": "redis://:s3cret@q:6379/0", "queue": "studio"}
    config = load_config(write_config(tmp_path, None, executor=executor))
    assert celery_executor(config) == ("redis://:s3cret@q:6379/0", "studio")


def test_the_mirror_thread_outlives_a_journal_that_refuses_writes(tmp_path: Path, redis_server, caplog):
    journal = Journal(tmp_path / "journal.sqlite3")
    mirror = PresenceMirror(journal, redis_server.url, "i2vd", interval_seconds=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=mirror.run, args=(stop,), name="test-mirror")
    try:
        with journal._lock:  # the state disk fills: every write is refused, as SQLITE_FULL would be
            journal._db.execute("PRAGMA query_only = 1")
        thread.start()
        wait_for(lambda: any("cannot record the workers" in r.getMessage() for r in caplog.records), timeout=15)
        beacon = PresenceBeacon(redis_server.url, describe(None, None), 5.0, queue="i2vd", host="gpu-z", pid=1)
        assert beacon.beat()
        beacon.stop()
        with journal._lock:
            journal._db.execute("PRAGMA query_only = 0")
        wait_for(lambda: [w["host"] for w in journal.workers_seen()] == ["gpu-z"], timeout=15, message="recorded")
        assert thread.is_alive()
        assert len([r for r in caplog.records if "cannot record the workers" in r.getMessage()]) == 1
    finally:
        stop.set()
        thread.join()
        journal.close()
