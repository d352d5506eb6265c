"""Logging set-up: plain lines on stderr, or native journald fields when systemd asks for them.

Under systemd, stderr already goes to the journal (which stamps the time), so the
plain format has no time there; anywhere else (a terminal, a file, a pipe, docker
logs) each line starts with an ISO-8601 time. With the optional extra `i2vd[journald]` installed and
stderr connected to the journal ($JOURNAL_STREAM), records go through
systemd-python's JournalHandler instead, and the job's JOB_ID, SOURCE and STATE
become journal fields: `journalctl -u i2vd JOB_ID=42`.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from typing import Any, TextIO

PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"


class IsoTimeFormatter(logging.Formatter):
    """`2026-05-09T07:35:25.123+00:00 INFO i2vd...`: local time with its offset, to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def job_fields(job_id: int | None, source: str | None, state: str) -> dict[str, Any]:
    """`extra=` for a log call about a job; journald keeps them as fields, the plain format ignores them."""
    return {"JOB_ID": job_id, "SOURCE": source, "STATE": state}


def stderr_is_journal(stream: TextIO, journal_stream: str | None) -> bool:
    """True when $JOURNAL_STREAM (device:inode) names this stream, as systemd documents."""
    if not journal_stream:
        return False
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def make_handler(stream: TextIO | None = None, journal_stream: str | None = None) -> logging.Handler:
    stream = stream or sys.stderr
    journal_stream = journal_stream if journal_stream is not None else os.environ.get("JOURNAL_STREAM")
    if stderr_is_journal(stream, journal_stream):
        try:
            from systemd.journal import JournalHandler  # the optional extra i2vd[journald]
        except ImportError:
            pass
        else:
            handler = JournalHandler(SYSLOG_IDENTIFIER="i2vd")
            handler.setFormatter(logging.Formatter("%(message)s"))
            return handler
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))  # journald stamps each line itself
        return handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(IsoTimeFormatter("%(asctime)s " + PLAIN_FORMAT))
    return handler


def configure(level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    handler = make_handler(stream)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    return handler
