"""Recording a burst of new jobs (i2vd/store/recording.py): what add_jobs hands back is what the journal holds.

The jobs a burst makes are built from the rows written, not read back: each must equal the job
the journal gives for its id, whatever the job (queued, parked, failed at intake, a name that is
not UTF-8, two files of one content in one burst, a key the journal already had).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from i2vd.core.clock import ManualClock
from i2vd.store.journal import EVENTS_KEPT, JobState, Journal
from tests.store.test_journal import new_job


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "state" / "journal.sqlite3", ManualClock())
    yield journal
    journal.close()


def test_the_jobs_a_burst_hands_back_are_those_the_journal_holds(journal: Journal) -> None:
    before, _ = journal.add_job(new_job(1))
    odd_name = os.fsdecode(b"/in/caf\xe9.jpg")  # Latin-1 from an old camera: stored as a BLOB
    burst = [
        (new_job(1), 10),  # a key the journal has: not created
        (new_job(2, prompt="bad \udce9 byte", output_name="two.mp4", priority=3), 20),
        (new_job(3, parked="i2vd.yaml: steps: must be at most 100"), 30),
        (new_job(4, error="img4.jpg is not an image"), None),
        (new_job(5, source_path=odd_name, rel_path=os.fsdecode(b"caf\xe9.jpg")), 50),
        (new_job(2, source_path="/in/copy-of-img2.jpg"), 60),  # same key as the second, in the same burst
    ]
    recorded = journal.add_jobs(burst)
    assert [created for _, created in recorded] == [False, True, True, True, True, False]
    assert recorded[0][0] == before
    assert recorded[5][0] == recorded[1][0]
    for job, _ in recorded:
        assert job == journal.job(job.id)
    states = [job.state for job, _ in recorded[1:5]]
    assert states == [JobState.QUEUED, JobState.PARKED, JobState.FAILED, JobState.QUEUED]
    assert recorded[4][0].source_path == odd_name
    assert journal.known_file("/in/copy-of-img2.jpg").job_id == recorded[1][0].id


def test_a_burst_says_how_each_new_job_was_recorded(journal: Journal) -> None:
    recorded = journal.add_jobs(
        [(new_job(1), 1), (new_job(2, parked="broken sidecar"), 2), (new_job(3, error="no"), 3)]
    )
    messages = [[event["message"] for event in journal.events(job.id)] for job, _ in recorded]
    assert messages == [
        ["queued img1.jpg (profile default)"],
        ["parked img2.jpg: broken sidecar"],
        ["failed at intake: no"],
    ]


def test_a_new_job_takes_the_next_id_after_the_largest(journal: Journal) -> None:
    first = [journal.add_job(new_job(number))[0].id for number in (1, 2, 3)]
    journal.merge_into(first[2], first[0])  # the newest is dropped: its id is free again, as SQLite would give it
    ((job, created),) = journal.add_jobs([(new_job(4), None)])
    assert created and job.id == first[2] and journal.job(job.id).idem_key == "key-4"


def test_a_job_merged_away_leaves_nothing_under_its_id_for_the_job_that_takes_it_next(journal: Journal) -> None:
    """merge_into drops the newest job; the next new job takes its id (max + 1). Its history is the merged job's
    survivor's now, and an outcome not yet made a webhook goes with it: the new job starts with its own only."""
    first = [journal.add_job(new_job(number))[0].id for number in (1, 2)]
    parked, _ = journal.add_job(new_job(3, parked="sidecar /in/i2vd.yaml: fps: 40 is above 24"))
    journal.merge_into(parked.id, first[0])
    assert "parked img3.jpg: sidecar /in/i2vd.yaml: fps: 40 is above 24" in [
        event["message"] for event in journal.events(first[0])
    ]
    assert [event.job_id for event in journal.webhook_events(10)] == []
    ((job, created),) = journal.add_jobs([(new_job(4), None)])
    assert created and job.id == parked.id
    assert [event["message"] for event in journal.events(job.id)] == ["queued img4.jpg (profile default)"]


def test_a_file_is_not_remembered_under_a_job_merged_away_since_it_was_looked_up(journal: Journal) -> None:
    """`i2vd retry` (its own process) can merge a job away between the intake's look-up of a file and its write:
    the file is then left unremembered (read again next time, it finds the surviving job), never tied to an id
    the next new job takes."""
    first = [journal.add_job(new_job(number))[0].id for number in (1, 2, 3)]
    assert journal.merge_into(first[2], first[0])
    journal.remember_file("/in/copy-of-img3.jpg", 1003, 5, f"{3:064x}", first[2])
    assert journal.known_file("/in/copy-of-img3.jpg") is None
    ((job, _),) = journal.add_jobs([(new_job(4), None)])
    assert job.id == first[2] and journal.known_file("/in/copy-of-img3.jpg") is None
    journal.remember_file("/in/copy-of-img3.jpg", 1003, 5, f"{3:064x}", first[2])  # looked up before job 4 came
    assert journal.known_file("/in/copy-of-img3.jpg") is None  # never tied to job 4, another content's
    journal.remember_file("/in/copy-of-img3.jpg", 1003, 5, f"{1:064x}", first[0])  # a job of this content
    journal.remember_file("/in/unreadable.jpg", 0, 5, "", None)  # a file that made no job
    assert journal.known_file("/in/copy-of-img3.jpg").job_id == first[0]
    assert journal.known_file("/in/unreadable.jpg").job_id is None


def test_bursts_keep_the_events_table_bounded(journal: Journal) -> None:
    for start in range(0, EVENTS_KEPT + 2000, 500):
        journal.add_jobs([(new_job(number), None) for number in range(start, start + 500)])
    kept = journal.events(limit=10 * EVENTS_KEPT)
    assert EVENTS_KEPT <= len(kept) <= EVENTS_KEPT + 1000
    assert kept[-1]["message"] == f"queued img{EVENTS_KEPT + 1999}.jpg (profile default)"  # the newest are kept


def test_a_job_encoded_in_a_pool_process_travels_with_its_encoding_and_is_written_as_encoded(journal: Journal) -> None:
    """The intake's pool encodes params and profile beside the intake thread (examine_pool.with_settings)."""
    import json
    import pickle

    new = new_job(7, profile={"facts": {"width": 64}, "hash": "abc"})
    assert (new.params_json, new.profile_json) == (
        json.dumps(new.params, sort_keys=True),
        json.dumps(new.profile, sort_keys=True),
    )
    arrived = pickle.loads(pickle.dumps(new))
    assert {"params_json", "profile_json"} <= set(vars(arrived))  # not encoded again on this side
    ((job, created),) = journal.add_jobs([(arrived, None)])
    assert created and (job.params_json, job.profile_json) == (new.params_json, new.profile_json)
    assert journal.job(job.id).params == new.params


def test_a_job_made_from_a_row_is_the_job_its_fields_make_and_a_wrong_row_is_refused(journal: Journal) -> None:
    """Jobs are made from rows without the frozen dataclass's per-field setattr (a first start and a restart make
    100,000 of them); a job so made equals, hashes and reads as one made by its constructor."""
    import dataclasses
    import sqlite3

    from i2vd.store.records import Job, _job

    job, _ = journal.add_job(new_job(7, output_name="seven.mp4"))
    row = journal._db.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone()
    made = _job(row)
    built = Job(**{field.name: getattr(made, field.name) for field in dataclasses.fields(Job)})
    assert made == built and hash(made) == hash(built) and made == journal.job(job.id)
    assert made.params == built.params and made.tries == built.tries and repr(made) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.state = JobState.DONE  # type: ignore[misc]
    short = sqlite3.connect(":memory:")
    short.row_factory = sqlite3.Row
    row = short.execute(
        "SELECT 1 AS id, 'queued' AS state, '' AS source_path, '' AS root, '' AS rel_path, NULL AS output_path"
    ).fetchone()
    with pytest.raises(TypeError):
        _job(row)  # the columns of another layout: said, not a half-made job
