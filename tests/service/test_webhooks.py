"""The webhook sender against a real HTTP receiver on 127.0.0.1 that fails, hangs and comes back.

The sender is driven round by round (`run_once`) with a ManualClock, so the 2 s, 4 s ... backoff and
the 24 h limit cost nothing; the journal is a real SQLite file and the job outcomes come from the
journal's own state changes (the triggers), as in the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from i2vd.config.load import ConfigError, parse_config
from i2vd.core.clock import ManualClock
from i2vd.service.webhooks import Sender, retry_delay
from i2vd.store.journal import Journal, NewJob
from i2vd.store.outbox import outbox_status
from tests.support.webhook_receiver import Receiver

PARAMS = {"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None}


def make_config(
    tmp_path: Path,
    url: str,
    events: str = "[done, failed, parked, server_down, server_up]",
    secret: str | None = "  s3cret\n",
):
    (tmp_path / "in").mkdir(exist_ok=True)
    secret_line = ""
    if secret is not None:
        (tmp_path / "secret").write_text(secret)
        secret_line = ", secret_file: secret"
    return parse_config(
        f"""
state_dir: state
output_dir: out
watch: [{{path: in}}]
webhooks:
  - {{url: "{url}", events: {events}{secret_line}, timeout_seconds: 1}}
""",
        base_dir=tmp_path,
    )


def add_job(journal: Journal, number: int, **extra) -> int:
    job, _ = journal.add_job(
        NewJob(
            idem_key=f"{number:064x}",
            source_path=f"/srv/in/img{number}.jpg",
            root="/srv/in",
            rel_path=f"img{number}.jpg",
            source_sha256=f"{number:064x}",
            source_size=10,
            profile_name="default",
            prompt="p",
            params=PARAMS,
            output_name=None,
            **extra,
        )
    )
    return job.id


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def rig(tmp_path: Path, receiver: Receiver):
    config = make_config(tmp_path, receiver.url)
    clock = ManualClock()
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    sender = Sender(config, journal, clock)
    yield config, clock, journal, sender
    sender.close()
    journal.close()


def finish(journal: Journal, job_id: int, outcome: str) -> None:
    job = journal.claim_next("w", 600)
    assert job.id == job_id
    if outcome == "done":
        journal.mark_done(job_id, {"kind": "builtin"}, 1.0)
    else:
        journal.mark_failed(job_id, "HTTP 500 from the server: boom")


def test_each_outcome_is_posted_signed_with_its_body(rig, receiver):
    config, clock, journal, sender = rig
    done_id, failed_id = add_job(journal, 1), add_job(journal, 2)
    parked_id = add_job(journal, 3, parked="in/i2vd.yaml: line 2: bad YAML")
    finish(journal, done_id, "done")
    finish(journal, failed_id, "failed")
    assert sender.run_once() == 3
    got = {item.document["event"]: item for item in receiver.delivered()}
    assert set(got) == {"done", "failed", "parked"}
    assert got["done"].document["job"]["id"] == done_id
    assert got["failed"].document["job"]["error"] == "HTTP 500 from the server: boom"
    assert got["parked"].document["job"]["id"] == parked_id
    for item in got.values():
        expected = "sha256=" + hmac.new(b"s3cret", item.body, hashlib.sha256).hexdigest()  # whitespace stripped
        assert item.headers["X-I2VD-Signature"] == expected
        assert item.headers["X-I2VD-Delivery"] and item.headers["X-I2VD-Event"] == item.document["event"]
        assert "at" in item.document
    assert outbox_status(journal, config) == {"undelivered": 0, "given_up": 0, "last_error": None}


def test_a_failing_receiver_gets_the_same_delivery_again_after_2_s_then_4_s(rig, receiver):
    config, clock, journal, sender = rig
    job_id = add_job(journal, 1)
    finish(journal, job_id, "done")
    receiver.mode = "fail"
    sender.run_once()
    status = outbox_status(journal, config)
    assert status["undelivered"] == 1 and "HTTP 500" in status["last_error"]
    clock.advance(1.9)
    sender.run_once()
    assert len(receiver.attempts()) == 1  # not yet: the first retry is after 2 s
    clock.advance(0.1)
    sender.run_once()
    assert len(receiver.attempts()) == 2
    clock.advance(3.9)
    sender.run_once()
    assert len(receiver.attempts()) == 2
    receiver.mode = "ok"
    clock.advance(0.1)
    sender.run_once()
    attempts = receiver.attempts()
    assert [item.answered for item in attempts] == [500, 500, 200]
    assert len({item.headers["X-I2VD-Delivery"] for item in attempts}) == 1
    assert len({item.body for item in attempts}) == 1
    assert outbox_status(journal, config)["undelivered"] == 0


def test_a_hanging_receiver_times_out_and_is_retried(rig, receiver):
    config, clock, journal, sender = rig
    job_id = add_job(journal, 1)
    finish(journal, job_id, "failed")
    receiver.mode = "hang"
    sender.run_once()  # gives up on this attempt after timeout_seconds (1 s)
    assert "no result within 1 s" in outbox_status(journal, config)["last_error"]
    receiver.mode = "ok"
    clock.advance(2)
    sender.run_once()
    assert [item.document["job"]["id"] for item in receiver.delivered()] == [job_id]


def test_a_receiver_that_drips_its_answer_is_cut_at_timeout_seconds_for_the_whole_call(rig, receiver):
    """Each byte within any per-read timeout, the whole answer far past timeout_seconds (1 s): the attempt ends at
    the deadline and the delivery is retried, so one slow receiver cannot hold the sender (and every other hook)."""
    config, clock, journal, sender = rig
    finish(journal, add_job(journal, 1), "done")
    receiver.mode = "drip"
    sender.run_once()
    status = outbox_status(journal, config)
    assert status["undelivered"] == 1 and "no result within 1 s" in status["last_error"], status
    receiver.mode = "ok"
    clock.advance(2)
    sender.run_once()
    assert outbox_status(journal, config)["undelivered"] == 0


def test_after_24_hours_a_delivery_is_given_up_and_counted(rig, receiver):
    config, clock, journal, sender = rig
    finish(journal, add_job(journal, 1), "done")
    receiver.mode = "fail"
    for _ in range(40):
        sender.run_once()
        clock.advance(3600)  # beyond the 5 min cap: each round is one attempt
        if outbox_status(journal, config)["given_up"]:
            break
    status = outbox_status(journal, config)
    assert (status["undelivered"], status["given_up"]) == (0, 1)
    assert 24 * 3600 <= clock.now() - 1_700_000_000.0 <= 25 * 3600 + 1
    assert [retry_delay(n) for n in (1, 2, 3, 8, 9, 20)] == [2, 4, 8, 256, 300, 300]


def test_server_events_carry_the_server_and_only_wanted_events_go_out(tmp_path, receiver):
    config = make_config(tmp_path, receiver.url, events="[server_down, server_up]", secret=None)
    clock = ManualClock()
    journal = Journal(config.state_dir / "journal.sqlite3", clock)
    sender = Sender(config, journal, clock)
    try:
        finish(journal, add_job(journal, 1), "done")  # not wanted here
        server = {"name": "gpu0", "url": "http://gpu:7860", "down_since": None}
        sender.observe_servers([server])
        sender.observe_servers([{**server, "down_since": 5.0, "error": "connection refused"}])
        sender.observe_servers([{**server, "down_since": 5.0}])
        sender.observe_servers([server])
        sender.run_once()
        got = [item.document for item in receiver.delivered()]
        assert [document["event"] for document in got] == ["server_down", "server_up"]
        assert got[0]["server"]["error"] == "connection refused" and "job" not in got[0]
        assert "X-I2VD-Signature" not in receiver.delivered()[0].headers
        assert json.loads(receiver.delivered()[1].body)["server"]["name"] == "gpu0"
    finally:
        sender.close()
        journal.close()


def test_a_missing_or_empty_secret_file_is_a_config_problem(tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, "http://127.0.0.1:9/hook", secret=" \n")
    assert "webhooks[0].secret_file" in caught.value.report() and "empty" in caught.value.report()
