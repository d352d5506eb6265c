"""Sidecars and captions at the intake: real files, real inotify, a real SQLite journal.

Two styles, each where it is the more precise:
- `IntakeLoop.run` in a thread with real inotify (parked -> released on a fix, a
  sidecar or caption arriving after its images), polling the journal with a deadline;
- `Intake` called directly (re-resolution rules: what may change, what must not, merges),
  and `IntakeLoop.tick` under a ManualClock for the periodic rescan.
No fixed sleeps; every loop thread and watch is stopped and joined.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2vd.config.load import Config, parse_config
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.ingest.loop import IntakeLoop
from i2vd.store.journal import Job, JobState, Journal
from tests.ingest.test_intake_watch import running as running_loop
from tests.support.fakes import wait_for, write_image
from tests.support.fakes import write_text as write

SETTLE_SECONDS = 0.4
TIMEOUT = 10
BEACH = "Waves crashing, camera panning left"
MOUNTAIN = "Sunrise over mountains, time-lapse effect"
PROFILES = f"""
profiles:
  beach: {{prompt: "{BEACH}"}}
  mountain: {{prompt: "{MOUNTAIN}"}}
"""


def make_config(tmp_path: Path, profiles: str = PROFILES, rescan_seconds: float = 3600) -> Config:
    text = f"""
state_dir: state
output_dir: out
server: {{kind: predict, url: "http://127.0.0.1:9", timeout_seconds: 10}}
gpu: {{enabled: false}}
watch:
  - {{path: in, settle_seconds: {SETTLE_SECONDS}, poll: false, rescan_seconds: {rescan_seconds}}}
{profiles}
"""
    (tmp_path / "in").mkdir(exist_ok=True)
    return parse_config(text, base_dir=tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def root(config: Config) -> Path:
    return config.watch[0].path


@pytest.fixture
def journal(config: Config) -> Iterator[Journal]:
    opened = Journal(config.state_dir / "journal.sqlite3")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def intake(config: Config, journal: Journal) -> Intake:
    return Intake(config, journal)


def running(config: Config, journal: Journal):
    return running_loop(IntakeLoop(config, Intake(config, journal)), after_first_scan=True)


def image(path: Path, shade: int) -> Path:
    """A real JPEG whose content differs with `shade`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, color=(shade, 90, 200 - shade))
    return path


def job_at(journal: Journal, rel_path: str) -> Job | None:
    return next((job for job in journal.jobs() if job.rel_path == rel_path), None)


def states(journal: Journal, *rel_paths: str) -> tuple[JobState | None, ...]:
    return tuple(getattr(job_at(journal, rel_path), "state", None) for rel_path in rel_paths)


def events_of(journal: Journal, job_id: int) -> list[str]:
    return [event["message"] for event in journal.events(job_id, limit=100)]


# -- a broken sidecar parks; fixing it releases, with the fixed settings ------------------


def test_a_broken_sidecar_parks_its_folder_and_fixing_it_releases_the_jobs_with_the_fixed_settings(
    config, root, journal
):
    sidecar = write(root / "shore" / "i2vd.yaml", "profile: beach\nfps: 40\n")
    image(root / "shore" / "a.jpg", 10)
    image(root / "shore" / "deeper" / "b.jpg", 20)
    with running(config, journal):
        image(root / "elsewhere" / "c.jpg", 30)
        wait_for(
            lambda: (
                states(journal, "shore/a.jpg", "shore/deeper/b.jpg", "elsewhere/c.jpg")
                == (JobState.PARKED, JobState.PARKED, JobState.QUEUED)
            ),
            timeout=TIMEOUT,
            message="two parked, one queued",
        )
        for rel_path in ("shore/a.jpg", "shore/deeper/b.jpg"):
            parked = job_at(journal, rel_path)
            assert parked.last_error == (
                f"sidecar {sidecar}: fps: 40 is above 24, the most the predict server at http://127.0.0.1:9 takes "
                "(ComfyUI servers take up to 60)"
            )
            assert parked.attempts == 0 and parked.prompt == ""
            assert any(
                message.startswith("parked ") and "fps: 40 is above 24" in message
                for message in events_of(journal, parked.id)
            )
        assert journal.claim_next("test-worker", 60).rel_path == "elsewhere/c.jpg"  # parked jobs are never claimed
        assert journal.claim_next("test-worker", 60) is None

        write(sidecar, "profile: beach\nfps: 12\n")
        wait_for(
            lambda: states(journal, "shore/a.jpg", "shore/deeper/b.jpg") == (JobState.QUEUED, JobState.QUEUED),
            timeout=TIMEOUT,
            message="the fix did not release the parked jobs",
        )

    for rel_path in ("shore/a.jpg", "shore/deeper/b.jpg"):
        released = job_at(journal, rel_path)
        assert (released.profile_name, released.prompt, released.params["fps"]) == ("beach", BEACH, 12)
        assert released.last_error is None and released.attempts == 0
        assert released.profile["sidecars"] == [str(sidecar)]
        assert released.profile["fields"]["fps"] == 12
    assert job_at(journal, "elsewhere/c.jpg").state is JobState.RUNNING  # a folder's fix touches no other folder
    assert len(journal.jobs()) == 3


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ("profile: [beach\n", "not valid YAML"),
        ("profle: beach\n", "profle: unknown key (did you mean 'profile'?)"),
        ("resolution: 720p\n", "resolution: '720p' is not one of 256p, 512p, 768p, 1024p"),
        ("profile: beech\n", "profile: unknown profile 'beech' (did you mean 'beach'?)"),
        ("server: {url: 'http://elsewhere:7860'}\n", "server: not allowed in a sidecar"),
        ("output_dir: /tmp/stolen\n", "output_dir: not allowed in a sidecar"),
        ("state_dir: /tmp/stolen\n", "state_dir: not allowed in a sidecar"),
        (
            "frames: 81\n",  # a ComfyUI server takes it (test_a_sidecar_with_frames_a_comfyui_server_takes_queues)
            "frames: 81 is above 32, the most the predict server at http://127.0.0.1:9 takes "
            "(ComfyUI servers take up to 1024)",
        ),
    ],
)
def test_every_kind_of_broken_sidecar_parks_with_the_file_and_key_named(intake, journal, root, broken, problem):
    sidecar = write(root / "shore" / "i2vd.yaml", broken)
    result = intake.consider(image(root / "shore" / "a.jpg", 40), intake.config.watch[0])
    assert result.outcome is Outcome.PARKED
    assert result.reason.startswith(f"sidecar {sidecar}: ") and problem in result.reason, result.reason
    assert result.job.state is JobState.PARKED and result.job.last_error == result.reason

    write(sidecar, "profile: mountain\n")
    (released,) = intake.reresolve_under(root / "shore")
    assert released.outcome is Outcome.QUEUED
    assert (released.job.id, released.job.prompt) == (result.job.id, MOUNTAIN)


def test_a_sidecar_with_frames_a_comfyui_server_takes_queues(tmp_path, journal):
    workflow = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "comfyui-model-free.json"
    (tmp_path / "in").mkdir(exist_ok=True)
    config = parse_config(
        "state_dir: state\noutput_dir: out\nwatch: [{path: in, settle_seconds: 0}]\ngpu: {enabled: false}\n"
        f"server: {{kind: comfyui, url: 'http://127.0.0.1:9', workflow: '{workflow}'}}\n",
        base_dir=tmp_path,
    )
    write(tmp_path / "in" / "wan" / "i2vd.yaml", "frames: 81\nfps: 16\n")
    result = Intake(config, journal).consider(image(tmp_path / "in" / "wan" / "a.jpg", 45), config.watch[0])
    assert result.outcome is Outcome.QUEUED, result.reason
    assert (result.job.params["frames"], result.job.params["fps"]) == (81, 16)


def test_a_broken_image_sidecar_parks_only_its_image(intake, journal, root):
    own = write(root / "shore" / "a.jpg.yaml", "profile: beech\n")
    write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    parked = intake.consider(image(root / "shore" / "a.jpg", 50), intake.config.watch[0])
    neighbour = intake.consider(image(root / "shore" / "b.jpg", 60), intake.config.watch[0])
    assert parked.outcome is Outcome.PARKED and str(own) in parked.reason and "did you mean 'beach'" in parked.reason
    assert neighbour.outcome is Outcome.QUEUED and neighbour.job.prompt == BEACH


def test_a_sidecar_named_yml_parks_its_images_until_renamed_instead_of_being_ignored(config, root, journal):
    """`.yml` is a YAML file's other name: `i2vd.yml` beside the beach photos, silently ignored, made default videos
    of them. Their jobs wait, saying which name i2vd reads; renamed, it applies."""
    write(root / "shore" / "i2vd.yml", "profile: beach\n")
    image(root / "shore" / "a.jpg", 75)
    with running(config, journal):
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.PARKED,), timeout=TIMEOUT, message="not parked")
        parked = job_at(journal, "shore/a.jpg")
        assert parked.last_error == (
            f"sidecar {root / 'shore' / 'i2vd.yml'}: i2vd reads sidecars named i2vd.yaml, not i2vd.yml:"
            " rename it (nothing in it applies until then)"
        )
        assert parked.profile_name == "default"  # nothing in it applies, its profile either
        os.rename(root / "shore" / "i2vd.yml", root / "shore" / "i2vd.yaml")
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.QUEUED,), timeout=TIMEOUT, message="not released")
    assert job_at(journal, "shore/a.jpg").prompt == BEACH


def test_an_image_sidecar_named_yml_parks_only_its_image(intake, journal, root):
    own = write(root / "shore" / "a.jpg.yml", "profile: mountain\n")
    parked = intake.consider(image(root / "shore" / "a.jpg", 80), intake.config.watch[0])
    neighbour = intake.consider(image(root / "shore" / "b.jpg", 85), intake.config.watch[0])
    assert parked.outcome is Outcome.PARKED
    assert parked.reason == f"sidecar {own}: i2vd reads sidecars named a.jpg.yaml, not a.jpg.yml: rename it" + (
        " (nothing in it applies until then)"
    )
    assert neighbour.outcome is Outcome.QUEUED


def test_a_sidecar_named_yml_written_after_its_images_were_queued_parks_them(config, root, journal):
    with running(config, journal):
        image(root / "shore" / "a.jpg", 90)
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.QUEUED,), timeout=TIMEOUT, message="not queued")
        write(root / "shore" / "i2vd.yml", "profile: beach\n")
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.PARKED,), timeout=TIMEOUT, message="not parked")


def fixed_in_the_loop(config: Config, root: Path, journal: Journal, fix) -> None:
    sidecar = write(root / "shore" / "i2vd.yaml", "profile: beach\nframes: 99\n")
    image(root / "shore" / "a.jpg", 70)
    with running(config, journal):
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.PARKED,), timeout=TIMEOUT, message="not parked")
        fix(sidecar)
        wait_for(
            lambda: states(journal, "shore/a.jpg") == (JobState.QUEUED,),
            timeout=3 * SETTLE_SECONDS + 3,
            message="the parked job was not released",
        )


def test_a_fix_saved_by_rename_like_an_editor_does_releases_the_jobs(config, root, journal):
    def save_by_rename(sidecar: Path) -> None:
        temporary = write(sidecar.with_name(".i2vd.yaml.swp"), "profile: mountain\n")
        os.replace(temporary, sidecar)

    fixed_in_the_loop(config, root, journal, save_by_rename)
    assert job_at(journal, "shore/a.jpg").prompt == MOUNTAIN


def test_deleting_the_broken_sidecar_releases_the_jobs_with_the_defaults(config, root, journal):
    fixed_in_the_loop(config, root, journal, Path.unlink)
    job = job_at(journal, "shore/a.jpg")
    assert (job.profile_name, job.prompt, job.profile["sidecars"]) == ("default", "A a scene with smooth motion", [])


def test_renaming_the_broken_sidecar_out_of_the_way_releases_the_jobs(config, root, journal):
    fixed_in_the_loop(config, root, journal, lambda sidecar: os.rename(sidecar, sidecar.with_name("i2vd.yaml.bak")))


def test_the_periodic_rescan_releases_parked_jobs_whose_fix_no_event_reported(config, root, journal):
    clock = ManualClock()
    loop = IntakeLoop(config, Intake(config, journal), clock)
    sidecar = write(root / "shore" / "i2vd.yaml", "fsp: 12\n")
    image(root / "shore" / "a.jpg", 80)
    try:
        loop.tick()  # the first reconcile suggests the image
        clock.advance(SETTLE_SECONDS)
        loop.tick()
        assert states(journal, "shore/a.jpg") == (JobState.PARKED,)
        loop.stop_watches()  # from here on no event can report the fix
        write(sidecar, "fps: 12\n")
        clock.advance(config.watch[0].rescan_seconds - SETTLE_SECONDS - 1)
        loop.tick()
        assert states(journal, "shore/a.jpg") == (JobState.PARKED,)  # the rescan is not due yet
        clock.advance(1)
        loop.tick()
    finally:
        loop.stop_watches()
    job = job_at(journal, "shore/a.jpg")
    assert (job.state, job.params["fps"]) == (JobState.QUEUED, 12)


def test_a_sidecar_edited_while_i2vd_was_stopped_applies_to_queued_jobs_at_the_next_start(
    config, root, journal, intake
):
    queued = intake.consider(image(root / "shore" / "a.jpg", 90), config.watch[0]).job
    assert queued.prompt == "A a scene with smooth motion"
    write(root / "shore" / "i2vd.yaml", "profile: mountain\n")
    loop = IntakeLoop(config, Intake(config, journal), ManualClock())
    try:
        loop.tick()
    finally:
        loop.stop_watches()
    job = journal.job(queued.id)
    assert (job.state, job.profile_name, job.prompt) == (JobState.QUEUED, "mountain", MOUNTAIN)


def test_at_the_next_start_every_queued_job_is_gone_over_a_page_at_a_time(config, root, journal, intake, monkeypatch):
    """A restart with 100,000 queued jobs read them all at once (~150 MB): now a page at a time, all of them."""
    from i2vd.ingest import intake as intake_module

    monkeypatch.setattr(intake_module, "REVIEW_PAGE", 2)
    queued = [intake.consider(image(root / "shore" / f"{n}.jpg", 30 * n), config.watch[0]).job for n in range(5)]
    intake.consider(image(root / "elsewhere.jpg", 200), config.watch[0])
    write(root / "shore" / "i2vd.yaml", "profile: mountain\n")
    pages = []
    real_read = journal.unstarted_jobs
    monkeypatch.setattr(journal, "unstarted_jobs", lambda *a, **k: pages.append(k) or real_read(*a, **k))
    loop = IntakeLoop(config, Intake(config, journal), ManualClock())
    try:
        loop.tick()
    finally:
        loop.stop_watches()
    assert {journal.job(job.id).prompt for job in queued} == {MOUNTAIN}
    assert job_at(journal, "elsewhere.jpg").prompt != MOUNTAIN
    assert [page["limit"] for page in pages] == [2, 2, 2, 2]  # six jobs under the root: three pages, one empty
    assert [page["after_id"] for page in pages] == [0, queued[1].id, queued[3].id, job_at(journal, "elsewhere.jpg").id]


@contextlib.contextmanager
def restarted_over_waiting_jobs(config, root, journal, intake, monkeypatch, count: int):
    """`count` queued jobs, their folder's sidecar edited "while i2vd was stopped", and a new loop that goes over
    one waiting job a tick: (the jobs, the loop, its clock)."""
    queued = [intake.consider(image(root / "shore" / f"{n}.jpg", 30 * n), config.watch[0]).job for n in range(count)]
    write(root / "shore" / "i2vd.yaml", "profile: mountain\n")
    clock = ManualClock()
    loop = IntakeLoop(config, Intake(config, journal), clock)
    monkeypatch.setattr(loop, "REVIEW_SECONDS", 0.0)
    try:
        yield queued, loop, clock
    finally:
        loop.stop_watches()


def test_going_over_the_waiting_jobs_at_a_start_does_not_hold_up_new_files(config, root, journal, intake, monkeypatch):
    """100,000 queued jobs take half a minute to go over: a little each tick, new files between."""
    with restarted_over_waiting_jobs(config, root, journal, intake, monkeypatch, 4) as (queued, loop, clock):
        loop.tick()
        prompts = [journal.job(job.id).prompt for job in queued]
        assert prompts.count(MOUNTAIN) == 1
        image(root / "shore" / "new.jpg", 200)  # dropped while the review goes on
        loop.reconcile(0)
        clock.advance(SETTLE_SECONDS + 0.1)
        loop.tick()
        assert job_at(journal, "shore/new.jpg").prompt == MOUNTAIN
        assert [journal.job(job.id).prompt for job in queued].count(MOUNTAIN) == 2  # the review goes on beside
        for _ in range(3):
            loop.tick()
        assert {journal.job(job.id).prompt for job in queued} == {MOUNTAIN}
        assert not loop._reviews


def test_a_periodic_rescan_does_not_cut_short_the_start_s_look_at_every_waiting_job(
    config, root, journal, intake, monkeypatch
):
    with restarted_over_waiting_jobs(config, root, journal, intake, monkeypatch, 3) as (queued, loop, clock):
        loop.tick()
        clock.advance(config.watch[0].rescan_seconds + 1)
        loop.tick()  # the periodic rescan looks at parked jobs only: the start's look at all of them goes on
        loop.tick()
        assert {journal.job(job.id).prompt for job in queued} == {MOUNTAIN}


# -- a sidecar or caption arriving after its images --------------------------------------


def test_a_sidecar_arriving_after_the_jobs_were_queued_re_resolves_them(config, root, journal):
    with running(config, journal):
        image(root / "shore" / "a.jpg", 100)
        image(root / "shore" / "deep" / "b.jpg", 110)
        image(root / "inland" / "c.jpg", 120)
        wait_for(lambda: len(journal.jobs(JobState.QUEUED)) == 3, timeout=TIMEOUT, message="three queued")
        before = {job.rel_path: job for job in journal.jobs()}
        assert before["shore/a.jpg"].prompt == "A a scene with smooth motion"

        write(root / "shore" / "i2vd.yaml", "profile: beach\nvars: {place: Cornwall}\n")
        wait_for(
            lambda: (
                job_at(journal, "shore/a.jpg").prompt == BEACH and job_at(journal, "shore/deep/b.jpg").prompt == BEACH
            ),
            timeout=TIMEOUT,
            message="queued jobs under the folder did not get the sidecar",
        )
        assert job_at(journal, "inland/c.jpg") == before["inland/c.jpg"]  # a sibling folder is untouched

        write(root / "i2vd.yaml", "steps: 30\n")  # the root's sidecar reaches every folder
        wait_for(
            lambda: all(job.params["steps"] == 30 for job in journal.jobs()),
            timeout=TIMEOUT,
            message="root sidecar not applied",
        )

    after = {job.rel_path: job for job in journal.jobs()}
    assert {rel_path: job.id for rel_path, job in after.items()} == {
        rel_path: job.id for rel_path, job in before.items()
    }
    a = after["shore/a.jpg"]
    assert (a.state, a.profile_name, a.params["steps"]) == (JobState.QUEUED, "beach", 30)
    assert a.idem_key != before["shore/a.jpg"].idem_key
    assert a.profile["sidecars"] == [str(root / "i2vd.yaml"), str(root / "shore" / "i2vd.yaml")]
    assert (
        after["inland/c.jpg"].profile_name == "default"
        and after["inland/c.jpg"].prompt == "A c scene with smooth motion"
    )
    assert "settings now: profile beach" in events_of(journal, a.id)


def test_a_sidecar_that_breaks_after_the_jobs_were_queued_parks_them(config, root, journal):
    sidecar = write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    with running(config, journal):
        image(root / "shore" / "a.jpg", 130)
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.QUEUED,), timeout=TIMEOUT, message="not queued")
        write(sidecar, "profile: beach\nsteps: 1000\n")
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.PARKED,), timeout=TIMEOUT, message="not parked")
        assert "steps: 1000 is above 100" in job_at(journal, "shore/a.jpg").last_error
        write(sidecar, "profile: beach\nsteps: 100\n")
        wait_for(lambda: states(journal, "shore/a.jpg") == (JobState.QUEUED,), timeout=TIMEOUT, message="not released")
    assert job_at(journal, "shore/a.jpg").params["steps"] == 100


def test_a_caption_written_after_its_image_within_the_settle_window_applies_at_intake(tmp_path, journal):
    config = make_config(tmp_path, profiles="")  # the default prompt: the caption, else the subject
    root = config.watch[0].path
    with running(config, journal) as loop:
        picture = image(root / "dogs" / "rex.jpg", 140)
        wait_for(lambda: len(loop.tracker) >= 1, timeout=TIMEOUT, message="the image was never seen")
        assert journal.jobs() == []  # still settling
        write(root / "dogs" / "rex.txt", "  Rex leaps into the surf \n\n")
        job = wait_for(lambda: job_at(journal, "dogs/rex.jpg"), timeout=TIMEOUT, message="no job")
    assert job.prompt == "Rex leaps into the surf"
    assert picture.exists()
    assert not any(message.startswith("settings now") for message in events_of(journal, job.id))  # right from the start


def test_a_folder_sidecar_written_while_its_images_settle_applies_at_intake(config, root, journal):
    with running(config, journal) as loop:
        for index, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
            image(root / "drop" / name, 145 + index)
        wait_for(lambda: len(loop.tracker) >= 3, timeout=TIMEOUT, message="the images were never seen")
        assert journal.jobs() == []  # still settling
        write(root / "drop" / "i2vd.yaml", "profile: beach\n")
        wait_for(lambda: len(journal.jobs()) == 3, timeout=TIMEOUT, message="three jobs")
    for job in journal.jobs():
        assert (job.state, job.profile_name, job.prompt) == (JobState.QUEUED, "beach", BEACH)
        assert not any(message.startswith("settings now") for message in events_of(journal, job.id))


def test_a_caption_written_after_the_job_was_queued_changes_its_prompt(tmp_path, journal):
    config = make_config(tmp_path, profiles="")
    root = config.watch[0].path
    with running(config, journal):
        image(root / "cat_nap.jpg", 150)
        job = wait_for(lambda: job_at(journal, "cat_nap.jpg"), timeout=TIMEOUT, message="no job")
        assert job.prompt == "A cat nap scene with smooth motion"
        write(root / "cat_nap.txt", "A cat stretching in the sun\n")
        wait_for(
            lambda: job_at(journal, "cat_nap.jpg").prompt == "A cat stretching in the sun",
            timeout=TIMEOUT,
            message="caption not applied",
        )
        (root / "cat_nap.txt").unlink()
        wait_for(
            lambda: job_at(journal, "cat_nap.jpg").prompt == "A cat nap scene with smooth motion",
            timeout=TIMEOUT,
            message="removing the caption did not bring the subject prompt back",
        )
    assert len(journal.jobs()) == 1


# -- what re-resolution may change and what it must not ------------------------------------


def test_a_sidecar_change_never_touches_running_or_done_jobs(intake, journal, root):
    watch = intake.config.watch[0]
    jobs = [
        intake.consider(image(root / "shore" / f"{name}.jpg", 160 + index), watch).job
        for index, name in enumerate("abc")
    ]
    running_job = journal.claim_next("test-worker", 60)
    done_job = journal.claim_next("test-worker", 60)
    journal.mark_done(done_job.id, {"kind": "predict"}, 1.0)
    assert (running_job.id, done_job.id) == (jobs[0].id, jobs[1].id)
    frozen = {job_id: journal.job(job_id) for job_id in (running_job.id, done_job.id)}

    write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    results = intake.reresolve_under(root / "shore")
    assert [result.job.id for result in results] == [jobs[2].id]
    assert journal.job(jobs[2].id).prompt == BEACH

    write(root / "shore" / "i2vd.yaml", "profile: [broken\n")
    intake.reresolve_under(root / "shore")
    intake.reresolve_under(None)
    assert journal.job(jobs[2].id).state is JobState.PARKED
    assert {job_id: journal.job(job_id) for job_id in frozen} == frozen


def test_a_job_the_worker_took_meanwhile_keeps_its_settings(intake, journal, root):
    stale = intake.consider(image(root / "shore" / "a.jpg", 170), intake.config.watch[0]).job
    taken = journal.claim_next("test-worker", 60)
    assert taken.id == stale.id
    write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    result = intake.reresolve(stale)  # the intake's view is older than the worker's claim
    assert result.outcome is Outcome.KNOWN and "moved on" in result.reason
    assert journal.job(stale.id) == taken


def test_an_unchanged_sidecar_rewrite_changes_nothing(intake, journal, root):
    write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    job = intake.consider(image(root / "shore" / "a.jpg", 180), intake.config.watch[0]).job
    write(root / "shore" / "i2vd.yaml", "profile: beach  # same as before\n")
    (result,) = intake.reresolve_under(root / "shore")
    assert result.outcome is Outcome.KNOWN and result.reason == "settings unchanged"
    assert journal.job(job.id) == job


def test_a_job_that_becomes_the_same_work_as_another_is_merged_into_it(intake, journal, root):
    watch = intake.config.watch[0]
    write(root / "a" / "i2vd.yaml", "profile: beach\n")
    first = intake.consider(image(root / "a" / "x.jpg", 190), watch).job
    copy = root / "b" / "y.jpg"
    copy.parent.mkdir()
    copy.write_bytes((root / "a" / "x.jpg").read_bytes())  # the same image under another name and folder
    second = intake.consider(copy, watch)
    assert second.outcome is Outcome.QUEUED and second.job.id != first.id  # another prompt: other work

    write(root / "b" / "i2vd.yaml", "profile: beach\n")
    (result,) = intake.reresolve_under(root / "b")

    assert result.outcome is Outcome.KNOWN and result.job.id == first.id
    assert f"same content and settings as job {first.id}" in result.reason
    assert [job.id for job in journal.jobs()] == [first.id]
    assert journal.known_file(str(copy)).job_id == first.id
    assert f"job {second.job.id} had the same content and settings: merged into this one" in events_of(
        journal, first.id
    )
    again = intake.consider(copy, watch)  # the file itself is known, and known as that job's
    assert again.outcome is Outcome.KNOWN and again.job.id == first.id


def test_a_parked_job_whose_fix_makes_it_a_duplicate_is_merged(intake, journal, root):
    watch = intake.config.watch[0]
    write(root / "a" / "i2vd.yaml", "profile: beach\n")
    first = intake.consider(image(root / "a" / "x.jpg", 200), watch).job
    write(root / "b" / "i2vd.yaml", "profile: beech\n")
    copy = root / "b" / "y.jpg"
    copy.write_bytes((root / "a" / "x.jpg").read_bytes())
    assert intake.consider(copy, watch).outcome is Outcome.PARKED
    write(root / "b" / "i2vd.yaml", "profile: beach\n")
    (result,) = intake.reresolve_under(root / "b")
    assert result.outcome is Outcome.KNOWN and result.job.id == first.id
    assert journal.counts() == {"queued": 1, "running": 0, "parked": 0, "done": 0, "failed": 0}


# -- template errors fail the job; retry applies the sidecars as they are now ---------------


def test_an_unknown_variable_in_a_sidecar_prompt_fails_the_job_naming_it(intake, journal, root):
    write(root / "shore" / "i2vd.yaml", "profile: beach\nprompt: 'A {{ moood }} sea'\nvars: {mood: calm}\n")
    result = intake.consider(image(root / "shore" / "a.jpg", 210), intake.config.watch[0])
    assert result.outcome is Outcome.FAILED
    assert "'moood' is undefined" in result.job.last_error and "mood" in result.job.last_error
    assert result.job.prompt == ""

    write(root / "shore" / "i2vd.yaml", "profile: beach\nprompt: 'A {{ mood }} sea'\nvars: {mood: calm}\n")
    assert intake.reresolve_under(root / "shore") == []  # a failed job waits for `i2vd retry`
    (retried,) = intake.retry([result.job.id])
    assert retried.outcome is Outcome.QUEUED and retried.job.prompt == "A calm sea"


def test_an_output_template_with_a_path_fails_the_job(intake, root):
    write(root / "shore" / "i2vd.yaml", "output: '../{{ stem }}.mp4'\n")
    result = intake.consider(image(root / "shore" / "a.jpg", 220), intake.config.watch[0])
    assert result.outcome is Outcome.FAILED
    assert "'../a.mp4' must be a plain file name" in result.reason


def test_retry_of_a_done_job_applies_the_new_sidecar_and_starts_afresh(intake, journal, root):
    write(root / "shore" / "i2vd.yaml", "profile: beach\n")
    job = intake.consider(image(root / "shore" / "a.jpg", 230), intake.config.watch[0]).job
    journal.claim_next("test-worker", 60)
    journal.set_output_path(job.id, str(root.parent / "out" / "shore" / "a.mp4"))
    journal.mark_done(job.id, {"kind": "predict"}, 1.0)
    write(root / "shore" / "i2vd.yaml", "profile: mountain\nfps: 10\n")
    assert intake.reresolve_under(root / "shore") == []  # the edit alone regenerates nothing

    (result,) = intake.retry([job.id])
    retried = journal.job(job.id)
    assert result.outcome is Outcome.QUEUED
    assert (retried.state, retried.profile_name, retried.prompt, retried.params["fps"]) == (
        JobState.QUEUED,
        "mountain",
        MOUNTAIN,
        10,
    )
    assert (retried.attempts, retried.output_path, retried.finished_at) == (0, None, None)


def test_retry_that_would_duplicate_another_job_says_which(intake, journal, root):
    watch = intake.config.watch[0]
    write(root / "a" / "i2vd.yaml", "profile: beach\n")
    first = intake.consider(image(root / "a" / "x.jpg", 240), watch).job
    copy = root / "b" / "y.jpg"
    copy.parent.mkdir()
    copy.write_bytes((root / "a" / "x.jpg").read_bytes())
    second = intake.consider(copy, watch).job
    journal.claim_next("test-worker", 60)
    journal.claim_next("test-worker", 60)
    journal.mark_failed(second.id, "HTTP 500")
    write(root / "b" / "i2vd.yaml", "profile: beach\n")
    (result,) = intake.retry([second.id])
    assert result.outcome is Outcome.FAILED and f"retry {first.id} instead" in result.reason
    assert journal.job(second.id).state is JobState.FAILED


def test_a_sidecar_event_that_changes_nothing_keeps_a_backing_off_job_as_it_is(intake, journal, root):
    job = intake.consider(image(root / "shore" / "a.jpg", 250), intake.config.watch[0]).job
    journal.claim_next("test-worker", 60)
    retry_at = journal.clock.now() + 600
    journal.requeue(job.id, "HTTP 500 from the server: boom", retry_at, count_attempt=True)
    waiting = journal.job(job.id)
    write(root / "shore" / "other.txt", "A caption for another image\n")  # an unrelated caption in the same folder
    (result,) = intake.reresolve_under(root / "shore")
    assert result.outcome is Outcome.KNOWN and result.reason == "settings unchanged"
    assert journal.job(job.id) == waiting


# -- untrusted templates: a breach parks its folder, every other folder goes on --------------

TEMPLATE_ATTACKS = {
    "repetition": ("{{ 'a' * 3000000000 }}", "a * repetition would be 3,000,000,000 characters"),
    "printf width": ("{{ '%999999999s'|format(1) }}", "the format filter would be 1,000,000,000 characters"),
    "center": ("{{ 'a'|center(10**9) }}", "would be 1,000,000,000 characters"),
    "range join": ("{{ range(10**9)|join }}", "range of 1,000,000,000 numbers"),
    "str.format width": ("{{ '{:>999999999}'.format(1) }}", "a str.format would be 1,000,000,000 characters"),
    "nested loops": (
        "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}x",
        "too much template work",
    ),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "calls nest deeper than"),
    "concatenation": ("{% set x = 'a' * 60000 %}{{ x ~ x ~ x ~ x }}", "a ~ concatenation would be"),
}


@pytest.mark.parametrize(("template", "problem"), TEMPLATE_ATTACKS.values(), ids=TEMPLATE_ATTACKS.keys())
def test_a_sidecar_template_that_breaks_a_bound_parks_its_folder_while_other_folders_go_on(
    config, root, journal, template, problem
):
    sidecar = write(root / "evil" / "i2vd.yaml", f"prompt: {json.dumps(template)}\n")
    image(root / "evil" / "a.jpg", 230)
    with running(config, journal):
        image(root / "good" / "b.jpg", 240)
        wait_for(
            lambda: states(journal, "evil/a.jpg", "good/b.jpg") == (JobState.PARKED, JobState.QUEUED),
            timeout=TIMEOUT,
            message="the attack was not parked, or the other folder got no job",
        )
        parked = job_at(journal, "evil/a.jpg")
        assert (
            parked.last_error.startswith(f"sidecar {sidecar}: prompt: profile default prompt: ")
            and problem in parked.last_error
        )
        assert job_at(journal, "good/b.jpg").prompt == "A b scene with smooth motion"

        write(sidecar, "prompt: 'A calm {{ subject }}'\n")  # fixing the sidecar releases its folder
        wait_for(
            lambda: states(journal, "evil/a.jpg") == (JobState.QUEUED,),
            timeout=TIMEOUT,
            message="the fix did not release the job",
        )
    assert job_at(journal, "evil/a.jpg").prompt == "A calm a"


def test_a_caption_that_makes_the_prompt_too_long_fails_only_its_image(intake, journal, root):
    image(root / "shore" / "a.jpg", 250)
    write(root / "shore" / "a.txt", "word " * 1000)
    failed = intake.consider(root / "shore" / "a.jpg", intake.config.watch[0])
    neighbour = intake.consider(image(root / "shore" / "b.jpg", 251), intake.config.watch[0])
    assert (
        failed.outcome is Outcome.FAILED
        and "profile default prompt: renders 4,999 bytes; at most 4,096" in failed.reason
    )
    assert neighbour.outcome is Outcome.QUEUED


def test_a_sidecar_event_and_a_new_config_make_the_intake_work_pooled_jobs_out_again(config, root, journal):
    """The pool works a burst's jobs out a little ahead (examine_pool.py): the watch's sidecar events and a
    reloaded config move the intake's settings generation on, so what the pool read before is not used."""
    loop = IntakeLoop(config, Intake(config, journal))
    with running_loop(loop, after_first_scan=True):
        before = loop.intake.settings_generation
        write(root / "i2vd.yaml", "profile: beach\n")
        wait_for(lambda: loop.intake.settings_generation > before, timeout=TIMEOUT, message="no sidecar event")
        image(root / "shore.jpg", 10)
        wait_for(lambda: job_at(journal, "shore.jpg"), timeout=TIMEOUT, message="the image was not queued")
        assert job_at(journal, "shore.jpg").prompt == BEACH
        after_sidecar = loop.intake.settings_generation  # the sidecar's events (created, written, closed) are in
        image(root / "dunes.jpg", 20)
        wait_for(lambda: job_at(journal, "dunes.jpg"), timeout=TIMEOUT, message="the image was not queued")
        assert loop.intake.settings_generation == after_sidecar  # an image is no reason to work jobs out again
        loop.reconfigure(make_config(root.parent))
        wait_for(lambda: loop.intake.settings_generation > after_sidecar, timeout=TIMEOUT, message="no new config")
