"""Logging: plain lines on stderr, journald fields (JOB_ID, SOURCE, STATE) when systemd-python is there."""

from __future__ import annotations

import importlib.util
import logging
import os

import pytest

from i2vd.logs import PLAIN_FORMAT, job_fields, make_handler, stderr_is_journal

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


def test_plain_lines_without_journald(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        handler = make_handler(stream, journal_stream="")
        assert isinstance(handler, logging.StreamHandler)
        assert handler.formatter._fmt == PLAIN_FORMAT  # journald stamps the time itself
        logger = logging.getLogger("i2vd.test-plain")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("job %d parked", 3, extra=job_fields(3, "/in/a.jpg", "parked"))
        finally:
            logger.removeHandler(handler)
    assert (tmp_path / "log").read_text() == "WARNING i2vd.test-plain: job 3 parked\n"


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
