"""The SQLite journal against real database files, with a manual clock."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2vd.core.clock import ManualClock
from i2vd.store import claims, files, outbox, queries, records
from i2vd.store import journal as journal_module
from i2vd.store.journal import Job, JobState, Journal, KnownFile, NewJob

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE = 60.0


def new_job(number: int = 1, **changes) -> NewJob:
    values = dict(
        idem_key=f"key-{number}",
        source_path=f"/in/img{number}.jpg",
        root="/in",
        rel_path=f"img{number}.jpg",
        source_sha256=f"{number:064x}",
        source_size=1000 + number,
        profile_name="default",
        prompt=f"A img{number} scene with smooth motion",
        params={"resolution": "512p", "frames": 16, "fps": 8, "steps": 50, "guidance": 9.0, "seed": None},
    )
    values.update(changes)
    return NewJob(**values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"


@pytest.fixture
def journal(journal_path: Path, clock: ManualClock) -> Iterator[Journal]:
    journal = Journal(journal_path, clock)
    yield journal
    journal.close()


def add(journal: Journal, number: int = 1, **changes) -> Job:
    job, created = journal.add_job(new_job(number, **changes))
    assert created
    return job


# -- the database file ---------------------------------------------------------------


def test_the_database_is_in_wal_mode_with_synchronous_full(journal: Journal, journal_path: Path) -> None:
    assert journal_path.is_file()  # the state folder was made
    other = sqlite3.connect(journal_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
    # synchronous is a per-connection setting: ask the journal's own connection.
    assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_the_writer_s_page_cache_and_checkpoints_are_sized_for_a_big_drop(journal: Journal, journal_path: Path) -> None:
    """A first start records 100,000 jobs into indexes on random keys: SQLite's 2 MB cache and checkpoints of 1,000
    pages copied the same index pages over and over (benchmarks/RESULTS.md, round 5)."""
    assert journal._db.execute("PRAGMA cache_size").fetchone()[0] == -journal_module.CACHE_KIB
    assert journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == journal_module.CHECKPOINT_PAGES
    assert journal_module.CACHE_KIB * 1024 > 2_000 * 1024 and journal_module.CHECKPOINT_PAGES > 1_000
    reader = Journal(journal_path, read_only=True)
    try:  # `i2vd status` reads a few rows: it keeps SQLite's defaults
        assert reader._db.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        reader.close()


def test_reopening_keeps_everything(journal_path: Path, clock: ManualClock) -> None:
    first = Journal(journal_path, clock)
    job = add(first)
    first.close()
    second = Journal(journal_path, clock)
    try:
        assert second.job(job.id) == job
    finally:
        second.close()


# -- recording jobs -------------------------------------------------------------------


def test_add_job_records_a_queued_job_with_everything_given(journal: Journal, clock: ManualClock) -> None:
    job, created = journal.add_job(new_job(1, output_name="sku_img1_rotate.mp4"))
    assert created
    assert job.state is JobState.QUEUED
    assert (job.idem_key, job.source_path, job.rel_path, job.source_size) == ("key-1", "/in/img1.jpg", "img1.jpg", 1001)
    assert job.params == new_job(1).params
    assert job.output_name == "sku_img1_rotate.mp4"
    assert job.output_path is None
    assert (job.attempts, job.interruptions) == (0, 0)
    assert job.queued_at == job.next_attempt_at == job.updated_at == clock.now()
    assert job.finished_at is None and job.last_error is None
    as_dict = job.as_dict()
    assert as_dict["state"] == "queued" and as_dict["params"]["frames"] == 16 and as_dict["server"] == {}
    json.dumps(as_dict)  # serialisable for `i2vd jobs --json`


def test_add_job_is_idempotent_by_key(journal: Journal, clock: ManualClock) -> None:
    first, created = journal.add_job(new_job(1), mtime_ns=111)
    assert created
    clock.advance(10)
    again, created_again = journal.add_job(new_job(1, source_path="/in/copy.jpg", rel_path="copy.jpg"), mtime_ns=222)
    assert created_again is False
    assert again == first
    assert len(journal.jobs()) == 1
    # the copy's file is remembered as belonging to the existing job
    assert journal.known_file("/in/copy.jpg") == KnownFile(1001, 222, f"{1:064x}", first.id)
    assert journal.known_file("/in/img1.jpg") == KnownFile(1001, 111, f"{1:064x}", first.id)


def test_a_job_failed_at_intake_is_created_failed(journal: Journal, clock: ManualClock) -> None:
    job, created = journal.add_job(new_job(1, idem_key="rejected:x", error="img1.jpg is empty (0 bytes)"))
    assert created
    assert job.state is JobState.FAILED
    assert job.last_error == "img1.jpg is empty (0 bytes)"
    assert job.finished_at == clock.now()
    assert journal.claim_next("w", LEASE) is None
    assert journal.events(job.id)[-1]["message"] == "failed at intake: img1.jpg is empty (0 bytes)"
    assert journal.counts() == {"queued": 0, "running": 0, "parked": 0, "done": 0, "failed": 1}


# -- files seen ------------------------------------------------------------------------


def test_remember_file_known_file_and_known_files(journal: Journal) -> None:
    assert journal.known_file("/in/a.jpg") is None
    assert journal.known_files() == {}
    first, second = add(journal, 1), add(journal, 2)
    journal.remember_file("/in/a.jpg", 10, 100, "aa", None)
    journal.remember_file("/in/b.jpg", 20, 200, second.source_sha256, second.id)
    assert journal.known_file("/in/a.jpg") == KnownFile(10, 100, "aa", None)
    assert journal.known_files() == {"/in/a.jpg": (10, 100), "/in/b.jpg": (20, 200)}
    journal.remember_file("/in/a.jpg", 11, 101, first.source_sha256, first.id)  # changed: replaced, not duplicated
    assert journal.known_file("/in/a.jpg") == KnownFile(11, 101, first.source_sha256, first.id)
    assert len(journal.known_files()) == 2


def test_add_job_with_mtime_remembers_the_file_in_the_same_transaction(journal: Journal) -> None:
    job, _ = journal.add_job(new_job(4), mtime_ns=444)
    assert journal.known_file("/in/img4.jpg") == KnownFile(1004, 444, f"{4:064x}", job.id)
    add(journal, 5)  # no mtime: nothing remembered
    assert journal.known_file("/in/img5.jpg") is None


# -- claiming -------------------------------------------------------------------------


def test_claim_next_hands_out_jobs_in_order_with_a_lease(journal: Journal, clock: ManualClock) -> None:
    ids = [add(journal, number).id for number in (1, 2, 3)]
    assert journal.ready_count() == 3
    claimed = journal.claim_next("worker-1", LEASE)
    assert claimed is not None and claimed.id == ids[0]
    assert claimed.state is JobState.RUNNING
    assert journal.events(claimed.id)[-1]["message"] == "started by worker-1"  # who took it
    assert claimed.lease_expires_at == clock.now() + LEASE
    assert claimed.started_at == clock.now()
    assert [journal.claim_next("worker-1", LEASE).id for _ in range(2)] == ids[1:]
    assert journal.claim_next("worker-1", LEASE) is None
    assert journal.counts() == {"queued": 0, "running": 3, "parked": 0, "done": 0, "failed": 0}


def test_claim_next_respects_next_attempt_at(journal: Journal, clock: ManualClock) -> None:
    first = add(journal, 1)
    second = add(journal, 2)
    assert journal.claim_next("w", LEASE).id == first.id
    journal.requeue(first.id, "server said 500", clock.now() + 30, count_attempt=True)
    assert journal.ready_count() == 1
    assert journal.next_attempt_at() == second.next_attempt_at
    assert journal.claim_next("w", LEASE).id == second.id
    assert journal.claim_next("w", LEASE) is None
    assert journal.ready_count() == 0
    assert journal.next_attempt_at() == clock.now() + 30
    clock.advance(29.9)
    assert journal.claim_next("w", LEASE) is None
    clock.advance(0.1)
    assert journal.claim_next("w", LEASE).id == first.id
    assert journal.next_attempt_at() is None


def test_an_earlier_due_job_is_claimed_before_an_older_one(journal: Journal, clock: ManualClock) -> None:
    old = add(journal, 1)
    journal.claim_next("w", LEASE)
    journal.requeue(old.id, "x", clock.now() + 5, count_attempt=True)
    clock.advance(10)
    young = add(journal, 2)  # due now, later than old's due time
    assert journal.claim_next("w", LEASE).id == old.id
    assert journal.claim_next("w", LEASE).id == young.id


def test_two_journals_on_one_file_never_claim_the_same_job(journal_path: Path, clock: ManualClock) -> None:
    first = Journal(journal_path, clock)
    second = Journal(journal_path, clock)
    try:
        for number in range(6):
            add(first, number)
        claimed = []
        for _ in range(4):
            for journal, owner in ((first, "a"), (second, "b")):
                job = journal.claim_next(owner, LEASE)
                if job is not None:
                    claimed.append(job.id)
        assert sorted(claimed) == sorted(job.id for job in first.jobs())
        assert len(set(claimed)) == 6
        assert first.counts()["running"] == second.counts()["running"] == 6
    finally:
        first.close()
        second.close()


def test_claimers_in_threads_never_share_a_job(journal_path: Path, clock: ManualClock) -> None:
    setup = Journal(journal_path, clock)
    for number in range(60):
        add(setup, number)
    journals = [setup] + [Journal(journal_path, clock) for _ in range(3)]
    claims: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(journals) * 2)

    def claimer(journal: Journal, owner: str) -> None:
        mine = claims.setdefault(owner, [])
        try:
            start.wait(timeout=10)
            while (job := journal.claim_next(owner, LEASE)) is not None:
                mine.append(job.id)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    # two threads per Journal object (shared connection) and four objects (separate connections)
    threads = [
        threading.Thread(target=claimer, args=(journal, f"w{index}-{twin}"))
        for index, journal in enumerate(journals)
        for twin in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert errors == []
        every_claim = [job_id for owned in claims.values() for job_id in owned]
        assert len(every_claim) == 60
        assert len(set(every_claim)) == 60
        for owner, owned in claims.items():
            assert all(setup.events(job_id)[-1]["message"] == f"started by {owner}" for job_id in owned)
    finally:
        for journal in journals:
            journal.close()


# -- finishing -------------------------------------------------------------------------


def test_mark_done_clears_the_lease_and_keeps_the_server(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    clock.advance(12)
    journal.mark_done(job.id, {"kind": "predict", "url": "http://gpu:7860"}, 11.5)
    done = journal.job(job.id)
    assert done.state is JobState.DONE
    assert done.server == {"kind": "predict", "url": "http://gpu:7860"}
    assert done.server_seconds == 11.5
    assert done.finished_at == clock.now()
    assert done.lease_expires_at is None


@pytest.mark.parametrize(("count_attempt", "attempts"), [(True, 1), (False, 0)])
def test_requeue_counts_an_attempt_only_when_asked(
    journal: Journal, clock: ManualClock, count_attempt: bool, attempts: int
) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, "HTTP 500", clock.now() + 10, count_attempt=count_attempt)
    again = journal.job(job.id)
    assert again.state is JobState.QUEUED
    assert again.attempts == attempts
    assert again.last_error == "HTTP 500"
    assert again.next_attempt_at == clock.now() + 10
    assert again.lease_expires_at is None
    assert "HTTP 500" in journal.events(job.id)[-1]["message"]


def test_requeue_without_an_error_keeps_the_last_one(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, "HTTP 500", clock.now(), count_attempt=True)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, None, clock.now(), count_attempt=False)
    assert (journal.job(job.id).last_error, journal.job(job.id).attempts) == ("HTTP 500", 1)


def test_mark_failed_records_the_error(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.mark_failed(job.id, "server says: bad image")
    failed = journal.job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.attempts == 1
    assert failed.last_error == "server says: bad image"
    assert failed.finished_at == clock.now()
    assert failed.lease_expires_at is None
    assert journal.events(job.id)[-1] == {
        "id": journal.events(job.id)[-1]["id"],
        "at": clock.now(),
        "job_id": job.id,
        "level": "error",
        "message": "failed: server says: bad image",
    }
    other = add(journal, 2)
    journal.mark_failed(other.id, "not the job's fault", count_attempt=False)
    assert journal.job(other.id).attempts == 0


# -- recovery --------------------------------------------------------------------------


def test_recover_running_returns_running_jobs_to_the_queue(journal: Journal, clock: ManualClock) -> None:
    running = add(journal, 1)
    queued = add(journal, 2)
    journal.claim_next("dead daemon", LEASE)
    clock.advance(5)
    recovered = journal.recover_running(max_interruptions=3)
    assert [job.id for job in recovered] == [running.id]
    job = recovered[0]
    assert job.state is JobState.QUEUED
    assert job.interruptions == 1
    assert job.lease_expires_at is None
    assert job.next_attempt_at == clock.now()  # at once: the lock proves the old daemon is dead
    assert job.attempts == 0  # an interruption is not the job's own failure
    assert journal.job(queued.id) == queued
    assert journal.recover_running(max_interruptions=3) == []


def test_a_prepared_job_a_crash_left_unsent_is_queued_again_without_an_interruption(journal: Journal) -> None:
    """jobs/prepare.py: claimed beside another call and never sent; the daemon did not die of it."""
    poison, innocent = add(journal, 1), add(journal, 2)
    for _ in range(3):  # the same two jobs, each time: one on the server, the next prepared, then a crash
        assert journal.claim_next("w", LEASE).id == poison.id
        assert journal.claim_next("w", LEASE, prepared=True).id == innocent.id
        journal.recover_running(max_interruptions=3)
    assert journal.job(poison.id).state is JobState.FAILED  # interrupted 3 times in a row
    spared = journal.job(innocent.id)
    assert (spared.state, spared.interruptions, spared.attempts) == (JobState.QUEUED, 0, 0)
    assert journal.events(innocent.id)[-1]["message"] == "returned to the queue after prepared, never sent"


def test_a_prepared_job_is_marked_when_sent_and_then_counts_as_interrupted(
    journal: Journal, clock: ManualClock
) -> None:
    job = add(journal)
    clock.advance(3)  # prepared beside another call, sent 3 s later: it started then
    assert journal.claim_next("w", LEASE, prepared=True).started_at is None
    assert journal.mark_sending(job.id, "w")
    assert journal.job(job.id).started_at == clock.now()
    assert [event["message"] for event in journal.events(job.id)][-2:] == ["prepared by w", "started by w"]
    [recovered] = journal.recover_running(max_interruptions=3)
    assert recovered.interruptions == 1


def test_a_prepared_job_given_back_keeps_its_place_and_counts(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.recover_running(max_interruptions=3)  # one interruption before
    before = journal.job(job.id)
    clock.advance(5)
    journal.claim_next("w", LEASE, prepared=True)
    assert journal.give_back(job.id)
    back = journal.job(job.id)
    assert back.state is JobState.QUEUED and back.lease_expires_at is None
    assert (back.next_attempt_at, back.attempts, back.interruptions) == (before.next_attempt_at, 0, 1)
    assert not journal.give_back(job.id)  # only a prepared running job goes back


def test_a_job_interrupted_max_times_in_a_row_fails(journal: Journal) -> None:
    job = add(journal)
    for interruption in (1, 2):
        assert journal.claim_next("w", LEASE).id == job.id
        [recovered] = journal.recover_running(max_interruptions=3)
        assert (recovered.state, recovered.interruptions) == (JobState.QUEUED, interruption)
    journal.claim_next("w", LEASE)
    [failed] = journal.recover_running(max_interruptions=3)
    assert failed.state is JobState.FAILED
    assert failed.interruptions == 3
    assert failed.last_error.startswith("interrupted 3 times")
    assert failed.finished_at is not None
    assert journal.claim_next("w", LEASE) is None


def test_interruptions_count_only_in_a_row(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.recover_running(max_interruptions=2)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, "HTTP 500", clock.now(), count_attempt=True)  # it ran to an end of its own
    assert journal.job(job.id).interruptions == 0
    journal.claim_next("w", LEASE)
    [recovered] = journal.recover_running(max_interruptions=2)
    assert (recovered.state, recovered.interruptions) == (JobState.QUEUED, 1)


def test_max_interruptions_one_fails_at_the_first_interruption(journal: Journal) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    [failed] = journal.recover_running(max_interruptions=1)
    assert failed.state is JobState.FAILED
    assert failed.last_error.startswith("interrupted 1 times")
    assert journal.job(job.id).state is JobState.FAILED


def test_requeue_moves_only_a_running_job(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.mark_done(job.id, {}, 1.0)
    journal.requeue(job.id, "released at shutdown", clock.now(), count_attempt=False)  # the worker finished first
    assert journal.job(job.id).state is JobState.DONE
    assert not any("released at shutdown" in event["message"] for event in journal.events(job.id))


def test_retryable_lists_every_failed_job_or_the_named_finished_ones(journal: Journal, clock: ManualClock) -> None:
    first, second, done, queued = add(journal, 1), add(journal, 2), add(journal, 3), add(journal, 4)
    for _ in (first, second, done):
        journal.claim_next("w", LEASE)
    journal.mark_failed(first.id, "boom")
    journal.mark_failed(second.id, "boom again")
    journal.mark_done(done.id, {}, 1.0)
    assert [job.id for job in journal.retryable(None)] == [first.id, second.id]
    assert [job.id for job in journal.retryable([done.id, queued.id, 999])] == [done.id]
    assert journal.retryable([]) == []


def test_a_fresh_start_requeues_a_failed_job_with_fresh_attempts(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, "HTTP 500", clock.now(), count_attempt=True)
    journal.claim_next("w", LEASE)
    journal.mark_failed(job.id, "boom")
    clock.advance(100)
    again, other = journal.reresolve(
        job.id, new_job(1, prompt="new prompt"), from_states=(JobState.FAILED, JobState.DONE), fresh_start=True
    )
    assert other is None
    assert again.state is JobState.QUEUED
    assert (again.attempts, again.interruptions, again.last_error, again.finished_at) == (0, 0, None, None)
    assert again.next_attempt_at == clock.now()
    assert again.prompt == "new prompt"


def test_a_fresh_start_of_a_done_job_clears_its_output_path(journal: Journal) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    assert journal.set_output_path(job.id, "/out/img1.mp4")
    journal.mark_done(job.id, {}, 1.0)
    again, _ = journal.reresolve(job.id, new_job(1), from_states=(JobState.FAILED, JobState.DONE), fresh_start=True)
    assert again.state is JobState.QUEUED
    assert again.output_path is None
    assert journal.output_owner("/out/img1.mp4") is None


def test_reresolve_leaves_a_job_in_another_state_alone(journal: Journal) -> None:
    running = add(journal, 1)
    assert journal.claim_next("w", LEASE).id == running.id
    assert journal.reresolve(running.id, new_job(1, prompt="x"), from_states=(JobState.QUEUED, JobState.PARKED)) == (
        None,
        None,
    )
    assert journal.job(running.id).prompt != "x"
    assert journal.reresolve(999, new_job(1), from_states=(JobState.QUEUED,)) == (None, None)


def test_reresolve_refuses_a_key_another_job_has_and_merge_into_drops_the_duplicate(journal: Journal) -> None:
    first, second = add(journal, 1), add(journal, 2)
    journal.remember_file("/in/img2.jpg", 1, 2, second.source_sha256, second.id)
    assert journal.reresolve(second.id, new_job(2, idem_key="key-1"), from_states=(JobState.QUEUED,)) == (
        None,
        first.id,
    )
    assert journal.merge_into(second.id, first.id)
    assert journal.job(second.id) is None
    assert journal.known_file("/in/img2.jpg").job_id == first.id


def test_merge_into_a_job_claimed_meanwhile_merges_nothing(journal: Journal) -> None:
    first, second = add(journal, 1), add(journal, 2, priority=5)
    journal.remember_file("/in/img2.jpg", 1, 2, f"{2:064x}", second.id)
    assert journal.claim_next("w", LEASE).id == second.id  # the worker took it between reresolve and the merge
    assert not journal.merge_into(second.id, first.id)
    assert journal.job(second.id).state is JobState.RUNNING
    assert journal.known_file("/in/img2.jpg").job_id == second.id
    assert not any("merged" in event["message"] for event in journal.events(first.id))


def test_parked_jobs_are_never_claimed_and_reresolve_releases_them(journal: Journal) -> None:
    parked = add(journal, 1, idem_key="parked:x", parked="sidecar /in/i2vd.yaml: fps: 40 is above 24")
    assert parked.state is JobState.PARKED
    assert parked.last_error.startswith("sidecar")
    assert journal.claim_next("w", LEASE) is None
    assert [job.id for job in journal.unstarted_jobs("/in")] == [parked.id]
    assert journal.unstarted_jobs("/elsewhere") == []
    released, _ = journal.reresolve(parked.id, new_job(1), from_states=(JobState.QUEUED, JobState.PARKED))
    assert released.state is JobState.QUEUED and released.last_error is None
    assert journal.claim_next("w", LEASE).id == parked.id


# -- output paths ------------------------------------------------------------------------


def test_set_output_path_refuses_a_path_another_job_owns(journal: Journal) -> None:
    first, second = add(journal, 1), add(journal, 2)
    assert journal.set_output_path(first.id, "/out/a.mp4")
    assert journal.set_output_path(first.id, "/out/a.mp4")  # again, same job: fine
    assert not journal.set_output_path(second.id, "/out/a.mp4")
    assert journal.job(second.id).output_path is None
    assert journal.output_owner("/out/a.mp4") == first.id
    assert journal.set_output_path(second.id, "/out/a-1.mp4")
    assert journal.output_owner("/out/a-1.mp4") == second.id
    assert journal.output_owner("/out/none.mp4") is None
    # the refused write rolled back cleanly: the journal still takes writes
    add(journal, 3)


# -- reading -----------------------------------------------------------------------------


def test_counts_states_jobs_and_recently_updated(journal: Journal, clock: ManualClock) -> None:
    assert journal.counts() == {"queued": 0, "running": 0, "parked": 0, "done": 0, "failed": 0}
    jobs = [add(journal, number) for number in range(4)]
    journal.claim_next("w", LEASE)
    journal.claim_next("w", LEASE)
    clock.advance(1)
    journal.mark_done(jobs[0].id, {}, 1.0)
    clock.advance(1)
    journal.mark_failed(jobs[1].id, "x")
    assert journal.counts() == {"queued": 2, "running": 0, "parked": 0, "done": 1, "failed": 1}
    assert journal.states([job.id for job in jobs] + [999]) == {
        jobs[0].id: JobState.DONE,
        jobs[1].id: JobState.FAILED,
        jobs[2].id: JobState.QUEUED,
        jobs[3].id: JobState.QUEUED,
    }
    assert journal.states([]) == {}
    assert [job.id for job in journal.jobs(JobState.QUEUED)] == [jobs[2].id, jobs[3].id]
    assert [job.id for job in journal.jobs(limit=2)] == [jobs[0].id, jobs[1].id]
    assert journal.job(999) is None
    clock.advance(1)
    journal.mark_done(jobs[2].id, {}, 1.0)
    assert [job.id for job in journal.recently_updated(JobState.DONE, 5)] == [jobs[2].id, jobs[0].id]


def test_states_reads_more_ids_than_one_sql_chunk(journal: Journal) -> None:
    ids = [add(journal, number).id for number in range(520)]
    assert journal.states(ids) == {job_id: JobState.QUEUED for job_id in ids}


def test_events_are_kept_in_order_per_job_and_globally(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    clock.advance(1)
    journal.add_event("warning", "server down: pausing the queue")
    journal.claim_next("w1", LEASE)
    events = journal.events(job.id)
    assert [event["message"] for event in events] == ["queued img1.jpg (profile default)", "started by w1"]
    assert all(event["job_id"] == job.id for event in events)
    everything = journal.events(limit=2)
    assert [(event["level"], event["message"]) for event in everything] == [
        ("warning", "server down: pausing the queue"),
        ("info", "started by w1"),
    ]
    assert everything[0]["at"] == clock.now() and everything[0]["job_id"] is None


def test_publish_status_and_daemon_status_round_trip(journal: Journal) -> None:
    assert journal.daemon_status() == {}
    journal.publish_status({"pid": 1234, "server": {"state": "up"}, "current_job": None})
    journal.publish_status({"current_job": 7})
    assert journal.daemon_status() == {"pid": 1234, "server": {"state": "up"}, "current_job": 7}


# -- readers beside a writer ---------------------------------------------------------------


def test_a_second_journal_reads_while_the_first_writes(journal_path: Path, clock: ManualClock) -> None:
    writer = Journal(journal_path, clock)
    reader = Journal(journal_path, clock)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                seen.append(reader.counts()["queued"])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=read_loop, name="journal-reader")
    thread.start()
    try:
        for number in range(200):
            add(writer, number)
    finally:
        stop.set()
        thread.join(timeout=10)
    try:
        assert errors == []
        assert seen and seen == sorted(seen)  # never goes back, never sees a half transaction
        assert reader.counts()["queued"] == 200
    finally:
        writer.close()
        reader.close()


READER_SCRIPT = """
import json, sys
from pathlib import Path
from i2vd.store.journal import Journal
journal = Journal(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"counts": journal.counts(), "status": journal.daemon_status()}), flush=True)
journal.close()
"""


def test_another_process_reads_committed_state_while_a_write_is_open(journal: Journal, journal_path: Path) -> None:
    add(journal, 1)
    journal.publish_status({"pid": 42})
    process = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(journal_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    blocker = sqlite3.connect(journal_path, isolation_level=None)
    try:
        assert process.stdout.readline().strip() == "ready"
        # hold the write lock with an uncommitted job, as a daemon mid-transaction does
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute(
            "INSERT INTO jobs (idem_key, state, source_path, root, rel_path, source_sha256, source_size, profile_name,"
            " prompt, params_json, next_attempt_at, queued_at, updated_at)"
            " VALUES ('uncommitted', 'queued', '/x', '/', 'x', 'x', 1, 'default', 'p', '{}', 0, 0, 0)"
        )
        output, errors = process.communicate("go\n", timeout=20)
        assert process.returncode == 0, errors
        result = json.loads(output)
        assert result["counts"] == {"queued": 1, "running": 0, "parked": 0, "done": 0, "failed": 0}
        assert result["status"] == {"pid": 42}
    finally:
        blocker.execute("ROLLBACK") if blocker.in_transaction else None
        blocker.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert journal.counts()["queued"] == 1


def test_claims_take_watch_roots_in_turn_so_one_huge_drop_does_not_starve_the_others(journal: Journal) -> None:
    flood = [add(journal, number, root="/in/flood", source_path=f"/in/flood/{number}.jpg") for number in range(1, 11)]
    small = [add(journal, number, root="/in/small", source_path=f"/in/small/{number}.jpg") for number in range(11, 13)]
    claimed = [journal.claim_next("w", LEASE).id for _ in range(6)]
    assert claimed == [flood[0].id, small[0].id, flood[1].id, small[1].id, flood[2].id, flood[3].id]


def test_a_sidecar_priority_goes_first(journal: Journal) -> None:
    ordinary = add(journal, 1)
    urgent = add(journal, 2, priority=5)
    later = add(journal, 3, priority=-1)
    assert [journal.claim_next("w", LEASE).id for _ in range(3)] == [urgent.id, ordinary.id, later.id]


def test_a_read_only_journal_reads_and_never_writes(journal: Journal, journal_path: Path) -> None:
    add(journal)
    reader = Journal(journal_path, read_only=True)
    try:
        assert reader.counts()["queued"] == 1
        assert [job.rel_path for job in reader.jobs()] == ["img1.jpg"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.publish_status({"x": 1})
    finally:
        reader.close()


# -- while the daemon runs: leases and clock steps ---------------------------------------


def test_an_expired_lease_no_worker_holds_returns_the_job_to_the_queue(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    assert journal.claim_next("w", LEASE).id == job.id
    clock.advance(LEASE + 1)
    assert journal.tidy(600) == ([], 0)  # the worker is still on it: its lease is not swept
    journal.release(job.id)  # the worker moved on without recording an outcome (the state disk was full)
    assert journal.tidy(600) == ([job.id], 0)
    returned = journal.job(job.id)
    assert (returned.state, returned.attempts, returned.lease_expires_at) == (JobState.QUEUED, 0, None)
    assert journal.claim_next("w", LEASE).id == job.id


def test_a_lease_not_yet_expired_is_left_alone(journal: Journal, clock: ManualClock) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.release(job.id)
    clock.advance(LEASE - 1)
    assert journal.tidy(600) == ([], 0)
    assert journal.job(job.id).state is JobState.RUNNING


def test_a_clock_stepped_back_never_makes_a_wait_longer_than_the_longest_backoff(
    journal: Journal, clock: ManualClock
) -> None:
    job = add(journal)
    journal.claim_next("w", LEASE)
    journal.requeue(job.id, "HTTP 500", clock.now() + 30, count_attempt=True)
    clock.advance(-86_400)  # NTP corrects a clock that was a day ahead
    assert journal.tidy(600) == ([], 1)
    assert journal.next_attempt_at() == clock.now() + 600
    assert journal.tidy(600) == ([], 0)  # nothing more to shorten: no write


def test_the_sql_names_job_states_only_through_job_state() -> None:
    for module in (
        journal_module,
        files,
        claims,
        queries,
        records,
        outbox,
    ):  # every statement past the schema's migrations
        statements = Path(module.__file__).read_text(encoding="utf-8")
        assert re.findall(r"state\s*(?:=|IN)\s*\(?\s*'", statements) == []
    assert journal_module._sql(JobState.QUEUED, JobState.PARKED) == "'queued', 'parked'"
    with pytest.raises(ValueError):
        journal_module._sql("bogus")


SQL = re.compile(
    r"\b(SELECT\b[\s\S]*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|PRAGMA\s+\w+"
    r"|(CREATE|DROP)\s+(TABLE|INDEX|TRIGGER|VIEW)|ALTER\s+TABLE|BEGIN\s+(IMMEDIATE|EXCLUSIVE|DEFERRED)|COMMIT|ROLLBACK)\b"
)


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """Each string constant of a module (f-string parts included) that holds an SQL statement, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]


def test_sql_is_written_only_in_the_store(tmp_path: Path) -> None:
    package = REPO_ROOT / "i2vd"
    store = package / "store"
    outside = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {text[:60]!r}"
        for path in sorted(package.rglob("*.py"))
        if store not in path.parents
        for line, text in sql_strings(path)
    ]
    assert outside == [], "SQL outside i2vd/store/ (give the journal a named method instead):\n" + "\n".join(outside)
    assert sql_strings(store / "outbox.py"), "the scan finds no SQL where there is some"
    sample = tmp_path / "sample.py"
    sample.write_text(
        'rows = db.execute(f"SELECT id FROM {table} WHERE x = ?", (1,))\n'
        'db.execute("UPDATE webhook_outbox SET attempts = ?"\n    " WHERE delivery_id = ?")\n'
        '"""Docs may say select, update or delete from a table in words."""\n',
        encoding="utf-8",
    )
    assert sorted(line for line, _ in sql_strings(sample)) == [1, 2]
