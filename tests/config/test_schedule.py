"""`schedule:` windows per server and per watch root, with `timezone:`: an injected clock, real journal,
real intake and the fake predict server. The clock is a ManualClock set to local times in Europe/Berlin,
across the spring DST change (2026-03-29, 02:00 -> 03:00) and the autumn one (2026-10-25, 03:00 -> 02:00).
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from i2vd.config.load import ConfigError, parse_config
from i2vd.config.schedule import ScheduleError, compile_schedule, parse_window
from i2vd.core.clock import ManualClock
from i2vd.ingest.intake import Intake, Outcome
from i2vd.jobs.worker import Worker
from i2vd.render.backends.predict import PredictBackend
from i2vd.render.gpu import VramGate
from i2vd.service.daemon import Daemon
from i2vd.store.journal import JobState, Journal
from tests.support.fakes import FakePredictServer, write_image

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    """A Berlin wall-clock time as a Unix time."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def config_text(url: str, server_schedule: str = "", night_schedule: str = "") -> str:
    server_line = f", schedule: {server_schedule}" if server_schedule else ""
    night_line = f", schedule: {night_schedule}" if night_schedule else ""
    return f"""
state_dir: state
output_dir: out
timezone: Europe/Berlin
server: {{kind: predict, url: "{url}", timeout_seconds: 10, connect_timeout_seconds: 2{server_line}}}
gpu: {{enabled: false}}
watch:
  - {{path: day, settle_seconds: 0}}
  - {{path: night, settle_seconds: 0{night_line}}}
"""


class Rig:
    def __init__(self, tmp_path: Path, server: FakePredictServer, start: str, **schedules: str):
        for name in ("day", "night"):
            (tmp_path / name).mkdir(exist_ok=True)
        self.tmp_path, self.server = tmp_path, server
        self.config = parse_config(config_text(server.url, **schedules), base_dir=tmp_path)
        self.clock = ManualClock(at(start))
        self.journal = Journal(self.config.state_dir / "journal.sqlite3", self.clock)
        backend = PredictBackend(server.url, "/api/predict/", timeout_seconds=10, connect_timeout_seconds=2)
        self.worker = Worker(
            self.config,
            self.journal,
            backend,
            VramGate.from_config(self.config.gpu, self.clock),
            clock=self.clock,
            name="host:1:gpu0",
        )
        self.intake = Intake(self.config, self.journal)

    def add(self, relative: str, color=(200, 80, 40)) -> int:
        path = self.tmp_path / relative
        write_image(path, color=color)
        result = self.intake.consider(path, self.config.root_for(path))
        assert result.outcome is Outcome.QUEUED, result
        return result.job.id

    def set_time(self, text: str) -> None:
        self.clock.advance(at(text) - self.clock.now())

    def reload(self, text: str) -> None:
        self.config = parse_config(text, base_dir=self.tmp_path)
        self.worker.reconfigure(self.config, self.config.server)

    def close(self) -> None:
        self.worker.backend.close()
        self.journal.close()


@pytest.fixture
def make_rig(tmp_path: Path, fake_server: FakePredictServer):
    made = []

    def build(start: str, **schedules: str) -> Rig:
        made.append(Rig(tmp_path, fake_server, start, **schedules))
        return made[-1]

    yield build
    for rig in made:
        rig.close()


def test_windows_parse_days_ranges_and_single_days():
    window = parse_window("Mon-Fri 20:00-07:00")
    assert window.days == frozenset(range(5)) and window.end.hour == 7
    assert parse_window("sat-sun").days == frozenset({5, 6}) and parse_window("sat-sun").end is None
    assert parse_window("fri-mon").days == frozenset({4, 5, 6, 0})
    assert parse_window("wed 16:00-17:00").days == frozenset({2})
    assert parse_window("22:00-06:00").days == frozenset(range(7))
    for bad in ("mon-fry", "25:00-07:00", "mon 10:00-10:00", "", "soon"):
        with pytest.raises(ScheduleError):
            parse_window(bad)


def test_a_night_window_crosses_midnight_and_keeps_local_hours_across_the_spring_dst_change():
    schedule = compile_schedule(("mon-fri 20:00-07:00", "sat-sun"), "Europe/Berlin")
    assert not schedule.is_open(at("2026-03-27T19:59"))  # Friday, CET
    assert schedule.is_open(at("2026-03-27T20:00"))
    assert schedule.is_open(at("2026-03-28T06:59"))  # Friday's night runs into Saturday, then the weekend
    assert schedule.is_open(datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("UTC")).timestamp())  # 03:30 CEST
    assert schedule.is_open(at("2026-03-29T23:59"))  # Sunday, now CEST
    assert not schedule.is_open(at("2026-03-30T00:00"))  # no Sunday-night window
    assert schedule.paused(at("2026-03-30T09:00")) == "paused by schedule until Mon 20:00"
    # Monday 20:00 is CEST (UTC+2): 18:00 UTC, not the 19:00 UTC the same hour was the week before.
    utc = ZoneInfo("UTC")
    assert schedule.next_open(at("2026-03-30T09:00")) == datetime(2026, 3, 30, 18, 0, tzinfo=utc).timestamp()
    assert schedule.next_open(at("2026-03-23T09:00")) == datetime(2026, 3, 23, 19, 0, tzinfo=utc).timestamp()


def test_a_window_over_the_autumn_change_lasts_the_extra_hour():
    schedule = compile_schedule(("sun 01:00-04:00",), "Europe/Berlin")
    opens, closes = schedule.windows[0].spans(datetime(2026, 10, 25).date(), schedule.zone)
    assert closes - opens == 4 * 3600  # 01:00 CEST to 04:00 CET: 02:00-03:00 happens twice
    assert schedule.is_open(opens + 3.5 * 3600)
    assert not schedule.is_open(closes)
    assert schedule.paused(closes) == "paused by schedule until Sun 01:00"


def test_config_reports_bad_windows_and_time_zones(tmp_path: Path):
    (tmp_path / "day").mkdir()
    (tmp_path / "night").mkdir()
    text = config_text("http://127.0.0.1:9", server_schedule='["mon-fri 20:00-07:00", "tuesday"]')
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("Europe/Berlin", "Mars/Olympus"), base_dir=tmp_path)
    report = caught.value.report()
    assert "timezone" in report and "Mars/Olympus" in report
    assert "server.schedule" in report and "tuesday" in report


def test_outside_its_window_a_server_claims_nothing_and_says_until_when(make_rig, fake_server):
    rig = make_rig("2026-03-30T12:00", server_schedule='["mon-fri 20:00-07:00"]')
    job_id = rig.add("day/a.png")  # still journaled
    assert not rig.worker.run_once(threading.Event())
    assert rig.journal.job(job_id).state is JobState.QUEUED
    assert fake_server.requests == []
    assert rig.worker.status()["schedule"] == "paused by schedule until Mon 20:00"
    daemon = Daemon(rig.config, clock=rig.clock)
    daemon.journal, daemon.workers = rig.journal, [rig.worker]
    daemon.intake_loop = None
    assert "gpu0 paused by schedule until Mon 20:00" in daemon.status_line()
    rig.set_time("2026-03-30T20:00")
    assert rig.worker.run_once(threading.Event())
    assert rig.journal.job(job_id).state is JobState.DONE
    assert rig.worker.status()["schedule"] == "open (mon-fri 20:00-07:00)"


def test_a_closed_root_waits_while_the_other_roots_go_on(make_rig, fake_server):
    rig = make_rig("2026-03-31T10:00", night_schedule='["22:00-06:00"]')
    night = [rig.add(f"night/n{index}.png", color=(index, 9, 9)) for index in range(3)]
    day = [rig.add(f"day/d{index}.png", color=(9, index, 9)) for index in range(2)]
    while rig.worker.run_once(threading.Event()):
        pass
    assert [rig.journal.job(job_id).state for job_id in day] == [JobState.DONE] * 2
    assert [rig.journal.job(job_id).state for job_id in night] == [JobState.QUEUED] * 3
    assert rig.worker._held_back  # due work it may not take: the idle loop polls instead of spinning
    rig.set_time("2026-03-31T22:00")
    while rig.worker.run_once(threading.Event()):
        pass
    assert [rig.journal.job(job_id).state for job_id in night] == [JobState.DONE] * 3


def test_a_reload_applies_a_new_schedule_at_once(make_rig, fake_server):
    rig = make_rig("2026-03-31T10:00", server_schedule='["sat-sun"]')
    job_id = rig.add("day/a.png")
    assert not rig.worker.run_once(threading.Event())
    rig.reload(config_text(fake_server.url))  # schedule removed
    rig.worker._apply_setup()
    assert rig.worker.run_once(threading.Event())
    assert rig.journal.job(job_id).state is JobState.DONE
    second = rig.add("day/b.png", color=(1, 2, 3))
    rig.reload(config_text(fake_server.url, night_schedule='["sat-sun"]', server_schedule='["sat-sun"]'))
    rig.worker._apply_setup()
    assert rig.worker.status()["schedule"] == "paused by schedule until Sat 00:00"
    assert not rig.worker.run_once(threading.Event())
    assert rig.journal.job(second).state is JobState.QUEUED


def test_a_running_job_finishes_when_its_window_closes(make_rig, fake_server):
    rig = make_rig("2026-03-31T06:59", server_schedule='["mon-fri 20:00-07:00"]')
    job_id = rig.add("day/a.png")
    # the window closes while the server works (a fault that never applies, looked at once per request)
    fake_server.fail_with(500, when=lambda request: rig.clock.advance(120) or False)
    assert rig.worker.run_once(threading.Event())
    assert rig.journal.job(job_id).state is JobState.DONE
    assert rig.worker.paused_by_schedule() == "paused by schedule until Tue 20:00"
