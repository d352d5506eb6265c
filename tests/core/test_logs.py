"""Logging: plain lines on stderr, journald fields (JOB_ID, SOURCE, STATE) when systemd-python is there."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from i2vd.core.logs import job_fields, make_handler, stderr_is_journal

REPO = Path(__file__).resolve().parents[2]


def _have_systemd_python() -> bool:
    # Not find_spec("systemd"): the repository's own systemd/ folder (unit files) is a namespace package on the path.
    try:
        return importlib.util.find_spec("systemd.journal") is not None
    except ModuleNotFoundError:
        return False


HAVE_SYSTEMD = _have_systemd_python()


def journal_stream_of(handle) -> str:
    info = os.fstat(handle.fileno())
    return f"{info.st_dev}:{info.st_ino}"


def test_journal_stream_is_recognised_only_for_the_stream_it_names(tmp_path):
    with open(tmp_path / "a", "w") as first, open(tmp_path / "b", "w") as second:
        assert stderr_is_journal(first, journal_stream_of(first))
        assert not stderr_is_journal(second, journal_stream_of(first))
        assert not stderr_is_journal(first, None)
        assert not stderr_is_journal(first, "not:numbers")
        assert not stderr_is_journal(first, "12")


ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (.*)$")


def log_through(handler: logging.Handler, name: str) -> None:
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("job %d parked", 3, extra=job_fields(3, "/in/a.jpg", "parked"))
    finally:
        logger.removeHandler(handler)


def test_lines_to_a_stream_that_is_not_the_journal_carry_an_iso_8601_time(tmp_path):
    with open(tmp_path / "log", "w") as stream, open(tmp_path / "journal", "w") as journal:
        for journal_stream in ("", journal_stream_of(journal)):  # none, or one naming another stream
            handler = make_handler(stream, journal_stream=journal_stream)
            assert isinstance(handler, logging.StreamHandler)
            log_through(handler, "i2vd.test-plain")
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        stamped = ISO_LINE.match(line)
        assert stamped, line
        assert stamped.group(1) == "WARNING i2vd.test-plain: job 3 parked"


@pytest.mark.skipif(HAVE_SYSTEMD, reason="with systemd-python the journal gets native records instead")
def test_plain_lines_into_the_journal_carry_no_time_journald_stamps_them(tmp_path):
    with open(tmp_path / "stream", "w") as stream:
        log_through(make_handler(stream, journal_stream=journal_stream_of(stream)), "i2vd.test-journal-plain")
    assert (tmp_path / "stream").read_text() == "WARNING i2vd.test-journal-plain: job 3 parked\n"


@pytest.mark.parametrize("under_journald", [False, True])
def test_a_command_stamps_its_log_lines_unless_its_stderr_is_the_journal(tmp_path, under_journald):
    log = tmp_path / "stderr"
    code = (
        "from i2vd.cli.commands import _setup_logging; import logging; "
        "_setup_logging(); logging.getLogger('i2vd.x').warning('hello')"
    )
    with open(log, "w") as stderr:
        environment = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
        if under_journald:
            environment["JOURNAL_STREAM"] = journal_stream_of(stderr)
        subprocess.run([sys.executable, "-c", code], stderr=stderr, env=environment, cwd=REPO, check=True, timeout=60)
    (line,) = log.read_text().splitlines()
    if under_journald and HAVE_SYSTEMD:
        pytest.skip("with systemd-python the record went to the journal's socket")
    assert (ISO_LINE.match(line) is None) == under_journald, line
    assert line.endswith("WARNING i2vd.x: hello")


@pytest.mark.skipif(not HAVE_SYSTEMD, reason="systemd-python (the i2vd[journald] extra) is not installed")
def test_journald_gets_job_fields(tmp_path):
    from systemd.journal import JournalHandler

    sent: list[tuple[str, dict]] = []
    with open(tmp_path / "stream", "w") as stream:
        handler = make_handler(stream, journal_stream=journal_stream_of(stream))
    assert isinstance(handler, JournalHandler)
    handler.send = lambda *message, **fields: sent.append((message[0], fields))  # record attributes include "message"
    logger = logging.getLogger("i2vd.test-journal")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.info("job %d: done", 7, extra=job_fields(7, "/in/beach/a.jpg", "done"))
    finally:
        logger.removeHandler(handler)
    message, fields = sent[0]
    assert message == "job 7: done"
    assert (fields["JOB_ID"], fields["SOURCE"], fields["STATE"]) == (7, "/in/beach/a.jpg", "done")
    assert fields["SYSLOG_IDENTIFIER"] == "i2vd"
