"""The sd_notify conversation systemd has with i2vd: start, reload, watchdog, stop.

A datagram socket bound by the test stands in for systemd's NOTIFY_SOCKET; the
daemon runs as a subprocess (start, reload, stop) or in-process with a backend
that hangs (the watchdog must stop being pinged).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import yaml

from i2vd.config.load import load_config
from i2vd.core.notify import Notifier
from i2vd.render.backends.base import VideoReply, VideoRequest
from i2vd.service.daemon import Daemon
from i2vd.store.journal import Journal
from tests.end_to_end.harness import journal_counts, write_config
from tests.support.fakes import wait_for, write_image


def edit_config(path: Path, **changes) -> None:
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))


def test_start_pings_reload_bad_reload_and_stop(tmp_path, daemon_factory):
    config_path = write_config(tmp_path, None)
    daemon = daemon_factory(config_path, WATCHDOG_USEC="400000").start()
    first = daemon.fields()
    assert "READY=1" in first
    assert any(line.startswith("STATUS=0 queued") for line in first)
    wait_for(
        lambda: daemon.fields().count("WATCHDOG=1") >= 3, timeout=10, message="watchdog pings at half of WATCHDOG_USEC"
    )

    edit_config(config_path, profiles={"default": {"prompt": "Reloaded {{ subject }}"}})
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any(line.startswith("STATUS=reloaded") for line in daemon.fields()), timeout=10, message="reloaded"
    )
    lines = daemon.fields()
    reloading = lines.index("RELOADING=1")
    assert any(line.startswith("MONOTONIC_USEC=") for line in lines[reloading:])
    assert "READY=1" in lines[reloading:]
    write_image(tmp_path / "in" / "after_reload.png", color=(1, 2, 3))
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 1,
        timeout=30,
        message=f"job done; log:\n{daemon.log()}",
    )
    assert "reloaded" in daemon.log()

    edit_config(config_path, profiles={"default": {"fps": 99, "resolution": "9000p"}}, servr={})
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any("reload refused" in line for line in daemon.fields()), timeout=10, message="bad reload refused"
    )
    log = daemon.log()
    assert "profiles.default.fps: 99 is above 24" in log
    assert "profiles.default.resolution: '9000p' is not one of" in log
    assert "servr: unknown key (did you mean 'server'?)" in log
    assert daemon.process.poll() is None, "a bad reload must not stop the daemon"
    write_image(tmp_path / "in" / "after_bad_reload.png", color=(4, 5, 6))
    wait_for(
        lambda: journal_counts(tmp_path / "state").get("done") == 2,
        timeout=30,
        message="still working on the old config",
    )

    assert daemon.stop() == 0
    lines = daemon.fields()
    assert "STOPPING=1" in lines
    assert lines.index("STOPPING=1") > max(index for index, line in enumerate(lines) if line == "READY=1")


class HangingBackend:
    """A server call that never returns until released: what a hung worker looks like."""

    kind = "hanging"
    url = "hanging:"

    def __init__(self, video: bytes):
        self.video = video
        self.started = threading.Event()
        self.release = threading.Event()

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "url": self.url, "version": "test"}

    def generate(self, request: VideoRequest) -> VideoReply:
        self.started.set()
        self.release.wait(timeout=60)
        return VideoReply(data=self.video, server_seconds=0.0)

    def close(self) -> None:
        self.release.set()


class NotifyListener:
    def __init__(self):
        self.address = f"@i2vd-test-{uuid.uuid4().hex}"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + self.address[1:])
        self.socket.settimeout(0.05)
        self.received: list[tuple[float, str]] = []

    def drain(self) -> list[tuple[float, str]]:
        try:
            while True:
                message = self.socket.recv(4096).decode()
                self.received.extend((time.monotonic(), line) for line in message.split("\n"))
        except (TimeoutError, BlockingIOError):
            pass
        return self.received

    def pings(self) -> list[float]:
        return [at for at, line in self.drain() if line == "WATCHDOG=1"]

    def close(self) -> None:
        self.socket.close()


def test_a_hung_worker_stops_the_watchdog_pings_and_they_resume_when_it_moves(tmp_path, mp4_bytes, caplog):
    config_path = write_config(tmp_path, None, server={"kind": "builtin", "timeout_seconds": 1})
    backend = HangingBackend(mp4_bytes)
    listener = NotifyListener()
    daemon = Daemon(
        load_config(config_path),
        backend=backend,
        notifier=Notifier(listener.address, watchdog_usec="200000"),
        liveness_margin_seconds=0.5,
    )
    try:
        daemon.start()
        threading.Thread(target=daemon.serve, name="test-serve").start()
        wait_for(lambda: len(listener.pings()) >= 3, timeout=10, message="pings while idle")
        write_image(tmp_path / "in" / "hangs.png", color=(9, 9, 9))
        assert backend.started.wait(timeout=30)
        # The worker promised to be back within timeout_seconds (1) + margin (0.5): after that, silence.
        wait_for(
            lambda: listener.pings() and time.monotonic() - listener.pings()[-1] > 1.5,
            timeout=15,
            message="pings stop while the worker hangs",
        )
        silent_since = listener.pings()[-1]
        assert "the worker is stuck (job 1 on the server" in caplog.text
        backend.release.set()
        wait_for(
            lambda: listener.pings()[-1] > silent_since, timeout=10, message="pings resume once the worker moves again"
        )
        wait_for(lambda: journal_counts(tmp_path / "state").get("done") == 1, timeout=10)
    finally:
        backend.release.set()
        daemon.shutdown(grace_seconds=10)
        for thread in threading.enumerate():
            if thread.name == "test-serve":
                thread.join(timeout=10)
        lines = [line for _, line in listener.drain()]
        listener.close()
    assert lines.index("READY=1") < lines.index("STOPPING=1")


def test_sigterm_lets_the_running_job_finish_within_the_grace(tmp_path, fake_server, daemon_factory):
    fake_server.latency_seconds = 1.0
    config_path = write_config(tmp_path, fake_server.url, stop_grace_seconds=20)
    daemon = daemon_factory(config_path).start()
    write_image(tmp_path / "in" / "finishing.png", color=(7, 7, 7))
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message="job on the server")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert journal_counts(tmp_path / "state")["done"] == 1
    assert (tmp_path / "out" / "finishing.mp4").exists()


def test_sigterm_releases_a_job_that_outlasts_the_grace_without_using_an_attempt(tmp_path, fake_server, daemon_factory):
    fake_server.hang()
    config_path = write_config(tmp_path, fake_server.url, stop_grace_seconds=0.5)
    daemon = daemon_factory(config_path).start()
    write_image(tmp_path / "in" / "slow.png", color=(8, 8, 8))
    wait_for(lambda: fake_server.in_flight == 1, timeout=30, message="job on the server")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert "released to the queue" in daemon.log()
    assert journal_counts(tmp_path / "state")["queued"] == 1
    journal = Journal(tmp_path / "state" / "journal.sqlite3")
    assert [(job.state.value, job.attempts) for job in journal.jobs()] == [("queued", 0)]
    journal.close()

    fake_server.clear_faults()
    restarted = daemon_factory(config_path).start()
    wait_for(lambda: journal_counts(tmp_path / "state").get("done") == 1, timeout=30, message="done after restart")
    assert restarted.stop() == 0
    assert (tmp_path / "out" / "slow.mp4").exists()
    assert "was running when i2vd stopped" not in restarted.log()  # released cleanly, not recovered from a crash
