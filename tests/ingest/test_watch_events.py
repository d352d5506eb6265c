"""The inotify watch asks the kernel only for events i2vd acts on.

Reading a file (the intake hashing 100,000 images, the worker reading a source) made an
"opened" and a "closed, nothing written" event per file, which watchdog's threads parsed and
dispatched in Python only for the handler to drop them: CPU and the GIL taken from the intake.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from i2vd.ingest import watcher
from i2vd.ingest.watcher import FolderWatch
from tests.support.fakes import wait_for


def test_reading_files_under_a_watch_makes_no_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    real = watcher._EventHandler.on_any_event

    def recording(self, event) -> None:
        with lock:
            seen.append((event.event_type, str(event.src_path)))
        real(self, event)

    monkeypatch.setattr(watcher._EventHandler, "on_any_event", recording)
    files: list[Path] = []
    watch = FolderWatch(tmp_path, False, files.append, lambda folder: None)
    assert watch.start()
    try:
        image = tmp_path / "a.png"
        image.write_bytes(b"x" * 100)
        wait_for(lambda: image in files, message="the new file's event")
        for _ in range(5):
            image.read_bytes()
        marker = tmp_path / "b.png"
        marker.write_bytes(b"y")
        wait_for(lambda: marker in files, message="the marker's event")  # every event before it was dispatched
    finally:
        watch.stop()
    with lock:
        kinds = {kind for kind, _ in seen}
    assert not kinds & {"opened", "closed_no_write"}, sorted(seen)
