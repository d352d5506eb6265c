"""Time windows (`schedule:` per server and per watch root): when work may be dispatched there.

A window is days and an optional time range: "mon-fri 20:00-07:00", "sat-sun", "wed 16:00-17:00",
"22:00-06:00" (every day). A range whose end is not after its start crosses midnight: it starts on
the named day and ends the next morning. Times are wall-clock times in `timezone:` (an IANA name;
default the host's), so a window keeps its local hours across a DST change. Every instant is
compared as a Unix time, which makes the spring gap and the autumn repeat come out right.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(?P<days>[a-z,\- ]+?)?\s*(?:(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2}))?\s*$")
PAUSED = "paused by schedule until"


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday: the days a window starts on
    start: time
    end: time | None  # None: to the end of the day (a whole day, or "20:00-24:00")

    def spans(self, day: date, zone: tzinfo) -> tuple[float, float]:
        """This window's open and close instants when it starts on `day`."""
        opens = datetime.combine(day, self.start, zone).timestamp()
        if self.end is None or self.end <= self.start:
            closes = datetime.combine(day + timedelta(days=1), self.end or time(0), zone).timestamp()
        else:
            closes = datetime.combine(day, self.end, zone).timestamp()
        return opens, closes


def _clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours == 24 and minutes == 0:
        return time(0)
    if hours > 23 or minutes > 59:
        raise ScheduleError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return time(hours, minutes)


def _days(text: str | None) -> frozenset[int]:
    if not text or not text.strip():
        return frozenset(range(7))
    found: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleError(f"{part!r} is not a day or a range of days (mon, tue, ... sun; e.g. mon-fri)")
        start, stop = DAYS.index(first), DAYS.index(last or first)
        found.update((start + offset) % 7 for offset in range((stop - start) % 7 + 1))
    return frozenset(found)


def parse_window(text: str) -> Window:
    match = _WINDOW.match(text.lower())
    if not match or not (match["days"] or match["start"]):
        raise ScheduleError(
            f'{text!r} is not a window: days and/or a time range, e.g. "mon-fri 20:00-07:00", '
            '"sat-sun", "wed 16:00-17:00"'
        )
    days = _days(match["days"])
    if match["start"] is None:
        return Window(days, time(0), None)
    start, end_text = _clock(match["start"]), match["end"]
    end = None if end_text in ("24:00", "00:00") else _clock(end_text)
    if end == start:
        raise ScheduleError(f"{text!r} starts and ends at the same time")
    return Window(days, start, end)


def zone(name: str | None) -> tzinfo:
    """The IANA zone named, or the host's (TZ, /etc/localtime), UTC when neither is known."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin, America/New_York)") from None
    host = os.environ.get("TZ", "").lstrip(":")
    if host:
        try:
            return ZoneInfo(host)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with Path("/etc/localtime").open("rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...]
    zone: tzinfo
    texts: tuple[str, ...] = ()

    def _spans(self, now: float, days_ahead: int):
        today = datetime.fromtimestamp(now, self.zone).date()
        for offset in range(-1, days_ahead + 1):
            day = today + timedelta(days=offset)
            for window in self.windows:
                if day.weekday() in window.days:
                    yield window.spans(day, self.zone)

    def is_open(self, now: float) -> bool:
        return any(opens <= now < closes for opens, closes in self._spans(now, 0))

    def next_open(self, now: float) -> float | None:
        """When the next window opens after `now` (None when open now)."""
        if self.is_open(now):
            return None
        return min((opens for opens, _ in self._spans(now, 8) if opens > now), default=None)

    def paused(self, now: float) -> str | None:
        """'paused by schedule until Mon 20:00', or None while a window is open."""
        opens = self.next_open(now)
        if opens is None:
            return None
        return f"{PAUSED} {datetime.fromtimestamp(opens, self.zone).strftime('%a %H:%M')}"

    def describe(self, now: float) -> str:
        return self.paused(now) or f"open ({', '.join(self.texts)})"


@functools.lru_cache(maxsize=64)
def compile_schedule(texts: tuple[str, ...] | None, timezone: str | None) -> Schedule | None:
    """The schedule for a config's window strings (None: always open)."""
    if not texts:
        return None
    return Schedule(tuple(parse_window(text) for text in texts), zone(timezone), texts)


def validate_windows(value: list[str] | None) -> list[str] | None:
    """For the config model: each window parses, or a clear message."""
    if value is None:
        return None
    if not value:
        raise ScheduleError("is empty: give at least one window, or leave schedule out (always open)")
    for text in value:
        parse_window(text)
    return value


def _of(config, texts) -> Schedule | None:
    return compile_schedule(tuple(texts) if texts else None, getattr(config, "timezone", None))


def server_paused(config, server, now: float) -> str | None:
    """Why a server takes no job now (outside its windows), or None."""
    schedule = _of(config, getattr(server, "schedule", None))
    return schedule.paused(now) if schedule is not None else None


def root_paused(config, root, now: float) -> str | None:
    schedule = _of(config, getattr(root, "schedule", None))
    return schedule.paused(now) if schedule is not None else None


def closed_roots(config, now: float) -> frozenset[str]:
    """The watch roots (as the journal stores them) whose jobs are not to be claimed now."""
    return frozenset(str(root.path) for root in config.watch if root_paused(config, root, now) is not None)


def describe(config, texts, now: float) -> str | None:
    """For status: None (no schedule), 'open (...)' or 'paused by schedule until ...'."""
    schedule = _of(config, texts)
    return schedule.describe(now) if schedule is not None else None


def root_status(config, root_path, now: float) -> str | None:
    root = config.root_for(Path(root_path))
    return describe(config, root.schedule, now) if root is not None else None


def status_words(config, workers, now: float) -> str:
    """For STATUS= and the status line: '; gpu0 paused by schedule until Mon 20:00', per server and root."""
    words = []
    for worker in workers:
        paused = worker.paused_by_schedule()
        if paused:
            words.append(f"{worker.name.rsplit(':', 1)[-1]} {paused}")
    for root in config.watch:
        paused = root_paused(config, root, now)
        if paused:
            words.append(f"{root.path} {paused}")
    return "".join(f"; {word}" for word in words)


def without_schedule(server):
    """A server's settings less its schedule: what a backend is built from."""
    import dataclasses

    return dataclasses.replace(server, schedule=None) if getattr(server, "schedule", None) else server
