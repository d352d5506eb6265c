"""`schedule:` with `i2vd run` as a real subprocess and the real clock: a server outside its window
takes no job (the file is journaled and waits), STATUS= and `i2vd status` say until when, and a reload
that opens the window lets the job run at once."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from tests.end_to_end.harness import journal_counts, run_cli, write_config
from tests.support.fakes import wait_for, write_image

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def test_a_closed_window_holds_the_job_and_a_reload_that_opens_it_runs_it(tmp_path: Path, daemon_factory):
    now = datetime.now(UTC)
    # the day after tomorrow (UTC): closed all of today, whatever the time; opens at its midnight
    day = now + timedelta(days=2)
    closed = [f"{DAYS[day.weekday()]} 00:00-23:59"]
    wanted = f"paused by schedule until {day.strftime('%a')} 00:00"
    config = write_config(tmp_path, None, timezone="UTC", server={"kind": "builtin", "schedule": closed})
    daemon = daemon_factory(config).start()
    write_image(tmp_path / "in" / "a.png")
    wait_for(lambda: journal_counts(tmp_path / "state").get("queued") == 1, timeout=30, message=daemon.log())
    wait_for(
        lambda: any(wanted in line for line in daemon.fields() if line.startswith("STATUS=")),
        timeout=10,
        message=str(daemon.fields()),
    )
    status = run_cli(config, "status").stdout
    assert wanted in status
    assert journal_counts(tmp_path / "state").get("done", 0) == 0

    settings = yaml.safe_load(config.read_text())
    settings["server"].pop("schedule")
    config.write_text(yaml.safe_dump(settings))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: journal_counts(tmp_path / "state").get("done") == 1, timeout=60, message=daemon.log())
    assert daemon.stop() == 0
