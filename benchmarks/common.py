"""Shared pieces of the benchmarks: configs, a daemon in its own process, figures printed beside targets.

Benchmarks measure; they assert nothing. Each `benchmarks/<figure>.py` is one command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The i2vd measured: this checkout, or another release's source tree (for before/after figures).
SOURCE = Path(os.environ.get("I2VD_BENCH_SOURCE", REPO))
MACHINE = f"{os.cpu_count()} CPU(s), {os.uname().machine}, Python {sys.version.split()[0]}"


def figure(name: str, value: str, target: str, met: bool | None) -> None:
    """One line per figure: the value beside its target, and whether it met it."""
    verdict = "" if met is None else ("  [met]" if met else "  [MISSED]")
    print(f"{name:<34} {value:<44} target {target}{verdict}", flush=True)


def config_text(
    folder: Path, urls: list[str], settle: float = 0.5, *, log_level: str = "warning", extra: str = ""
) -> str:
    servers = ", ".join(f'{{kind: predict, url: "{url}", timeout_seconds: 600}}' for url in urls)
    (folder / "in").mkdir(parents=True, exist_ok=True)
    return f"""
state_dir: {folder / "state"}
output_dir: {folder / "out"}
log_level: {log_level}
servers: [{servers}]
gpu: {{enabled: false}}
watch: [{{path: {folder / "in"}, settle_seconds: {settle}, rescan_seconds: 3600}}]
profiles: {{default: {{prompt: "A {{{{ subject }}}} scene"}}}}
{extra}"""


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (its threads, not its children)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 300.0, busy_share: float = 0.05) -> float:
    """Wait until the process has used under `busy_share` of a core for two seconds running (a restart's first
    round over every root and every waiting job is done); the seconds waited."""
    started = time.monotonic()
    quiet, last = 0, cpu_seconds(pid)
    while quiet < 4 and time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < busy_share * 0.5 else 0
        last = now
    return time.monotonic() - started


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB: now and its own high-water mark."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def children_peak_rss_mb(pid: int) -> tuple[int, float]:
    """How many child processes `pid` has (the intake's pool, say) and the sum of their VmHWM in MB."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children.update(int(child) for child in task.read_text().split())
        except OSError:
            continue
    total = 0.0
    for child in children:
        try:
            total += peak_rss_mb(child)[1]
        except OSError:
            continue
    return len(children), total


class DaemonProcess:
    """`i2vd run` in a process of its own, with a notify socket: READY and WATCHDOG pings are timed here."""

    def __init__(self, config_path: Path, watchdog_seconds: float = 2.0):
        self.config_path = config_path
        self._folder = tempfile.TemporaryDirectory()
        self.socket_path = Path(self._folder.name) / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.sock.settimeout(0.2)
        self.watchdog_seconds = watchdog_seconds
        self.ready_at: float | None = None
        self.ready_wall: float | None = None  # time.time() at READY, to compare with the journal's timestamps
        self.pings: list[float] = []
        self.messages: list[str] = []
        self.started_at = 0.0
        self.process: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> DaemonProcess:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.socket_path), WATCHDOG_USEC=str(int(self.watchdog_seconds * 1e6)))
        env.pop("WATCHDOG_PID", None)
        self.started_at = time.monotonic()
        command = [sys.executable, "-m", "i2vd", "run", "-c", str(self.config_path)]
        self.process = subprocess.Popen(
            command, cwd=SOURCE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._listener.start()
        return self

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536).decode("utf-8", "replace")
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            if "READY=1" in data.split("\n") and self.ready_at is None:
                self.ready_at, self.ready_wall = now, time.time()
            if "WATCHDOG=1" in data.split("\n"):
                self.pings.append(now)
            self.messages.append(data)

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while self.ready_at is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"i2vd exited with {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("no READY=1")
            time.sleep(0.01)
        return self.ready_at - self.started_at

    def longest_ping_gap(self, since: float) -> float:
        pings = [at for at in self.pings if at >= since]
        return max((b - a for a, b in zip(pings, pings[1:])), default=float("nan"))

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stop.set()
        if self._listener.is_alive():
            self._listener.join()
        self.sock.close()
        self._folder.cleanup()
        return self.process.stderr.read() if self.process is not None else ""

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def compiled_like_an_install() -> None:
    """Byte-compile i2vd's modules, as `pip install` does for an installed package.

    A source checkout run with PYTHONDONTWRITEBYTECODE=1 (as on the benchmark machine) has no .pyc, so
    every `i2vd status` would compile ~30 modules first (~40 ms): not what an installed i2vd does.
    """
    import compileall

    compileall.compile_dir(str(SOURCE / "i2vd"), quiet=1)


def timed_status(config_path: Path) -> float:
    """Seconds `i2vd status` takes, process start included (i2vd's modules byte-compiled, as installed)."""
    compiled_like_an_install()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "i2vd", "status", "-c", str(config_path)],
        cwd=SOURCE,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return time.monotonic() - started
