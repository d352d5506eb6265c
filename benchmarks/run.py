"""i2vd benchmarks: prints figures and ratios against SPEC's performance targets.

    .venv/bin/python benchmarks/run.py [--jobs N] [--latency S] [--files N]

- overhead: wall time / sum of server processing time over a sequence of jobs
  (target 1.00-1.05; the seed's server sleeps 2 s per job, use --latency 2 for that)
- detection: a completed file becomes a queued job within settle_seconds + 0.5 s
- scale: N images already in the journal: reconcile time, RSS; enqueue rate
- reply memory: peak RSS of a worker process receiving one --reply-mb MB video as a base64
  /predict reply (target < 250 MB for 150 MB); the fake server runs in this process, not in it
- templates: peak RSS of a fresh process rendering hostile sidecar templates (SPEC: memory stays flat)
These are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from i2vd.batch import ENQUEUE_BURST  # noqa: E402
from i2vd.clock import Clock  # noqa: E402
from i2vd.config import parse_config  # noqa: E402
from i2vd.daemon import Daemon  # noqa: E402
from i2vd.intake import IntakeLoop, Intake  # noqa: E402
from i2vd.journal import Job, Journal, NewJob  # noqa: E402
from tests.fakes import FakePredictServer, make_test_mp4, wait_for, write_image  # noqa: E402


def _config(folder: Path, server_url: str | list[str], settle: float = 0.5):
    urls = [server_url] if isinstance(server_url, str) else server_url
    servers = ", ".join(f'{{kind: predict, url: "{url}"}}' for url in urls)
    text = f"""
state_dir: {folder / 'state'}
output_dir: {folder / 'out'}
log_level: warning
servers: [{servers}]
gpu: {{enabled: false}}
watch: [{{path: {folder / 'in'}, settle_seconds: {settle}, rescan_seconds: 3600}}]
profiles: {{default: {{prompt: "A {{{{ subject }}}} scene"}}}}
"""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    return parse_config(text)


def _run_jobs(server_count: int, jobs: int, latency: float) -> list[Job]:
    """The finished jobs of `jobs` images on `server_count` fake servers sharing one journal."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video = make_test_mp4(folder / "v.mp4")
        servers = [FakePredictServer(video=video, latency_seconds=latency).start() for _ in range(server_count)]
        try:
            config = _config(folder, [server.url for server in servers], settle=0.2)
            for index in range(jobs):
                write_image(folder / "in" / f"img_{index}.png", color=(index % 256, index // 256, 9))
            daemon = Daemon(config)
            daemon.start()
            try:
                wait_for(lambda: daemon.journal.counts()["done"] == jobs, timeout=jobs * (latency + 5) + 60)
                return daemon.journal.jobs()
            finally:
                daemon.shutdown()
        finally:
            for server in servers:
                server.stop()


def _wall(done: list[Job]) -> float:
    return max(job.finished_at for job in done) - min(job.started_at for job in done)


def bench_overhead(jobs: int, latency: float) -> None:
    done = _run_jobs(1, jobs, latency)
    wall, server_total = _wall(done), sum(job.server_seconds for job in done)
    print(f"overhead: {jobs} jobs, server {latency:g} s each: wall {wall:.2f} s / server {server_total:.2f} s = {wall / server_total:.3f} (target <= 1.05)")
    print(f"          (server_seconds as i2vd measured them, including upload and download; the fake sleeps {latency * jobs:.2f} s in all)")


def bench_servers(jobs: int, latency: float) -> None:
    one, three = _wall(_run_jobs(1, jobs, latency)), _wall(_run_jobs(3, jobs, latency))
    print(f"servers: {jobs} jobs at {latency:g} s: 1 server {one:.2f} s, 3 servers {three:.2f} s = {one / three:.2f}x throughput (target ~3x)")


def bench_detection(samples: int) -> None:
    settle = 0.5
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = _config(folder, "http://127.0.0.1:9", settle=settle)
        journal = Journal(folder / "state" / "journal.sqlite3")
        loop = IntakeLoop(config, Intake(config, journal))
        stop = threading.Event()
        loop.start_watches()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        delays = []
        try:
            for index in range(samples):
                path = folder / "in" / f"d_{index}.png"
                write_image(path, color=(index, 1, 2))
                written = time.monotonic()
                wait_for(lambda path=path: journal.known_file(str(path)) is not None, timeout=30)
                delays.append(time.monotonic() - written)
        finally:
            stop.set()
            thread.join()
            loop.stop_watches()
            journal.close()
        delays.sort()
        print(f"detection: settle {settle} s; completed file -> queued job median {delays[len(delays) // 2]:.3f} s, worst {delays[-1]:.3f} s (target <= {settle + 0.5:.1f} s)")


def bench_scale(files: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = _config(folder, "http://127.0.0.1:9")
        journal = Journal(folder / "state" / "journal.sqlite3")
        root = folder / "in"
        for index in range(files):
            sub = root / f"d{index // 1000}"
            if index % 1000 == 0:
                sub.mkdir()
            (sub / f"f{index}.jpg").write_bytes(b"x")
        started = time.monotonic()
        burst = []
        for index in range(files):
            path = root / f"d{index // 1000}" / f"f{index}.jpg"
            sha = hashlib.sha256(str(index).encode()).hexdigest()
            burst.append((NewJob(sha, str(path), str(root), path.relative_to(root).as_posix(), sha, 1, "default", "p", {"frames": 16}), path.stat().st_mtime_ns))
            if len(burst) == ENQUEUE_BURST or index == files - 1:
                journal.add_jobs(burst)  # as the intake records a burst of settled files
                burst = []
        enqueue = time.monotonic() - started
        print(f"enqueue: {files} jobs recorded (journal side, bursts of {ENQUEUE_BURST}) in {enqueue:.2f} s = {files / enqueue:,.0f} jobs/s (target >= 5,000/s)")
        loop = IntakeLoop(config, Intake(config, journal), Clock())
        started = time.monotonic()
        suggested = loop.reconcile(0)
        reconcile = time.monotonic() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"reconcile: {files} known files scanned in {reconcile:.2f} s, {suggested} suggested (target <= 10 s); peak RSS {rss_mb:.0f} MB (target <= 200 MB)")
        journal.close()


_REPLY_WORKER = """
import sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from i2vd.config import parse_config
from i2vd.intake import Intake
from i2vd.journal import Journal
from i2vd.worker import build_workers
config = parse_config(Path(sys.argv[2]).read_text())
journal = Journal(config.state_dir / "journal.sqlite3")
image = config.watch[0].path / "big.png"
Intake(config, journal).consider(image, config.watch[0])
def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss carries the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
baseline = peak_mb()
[worker] = build_workers(config, journal, __import__("i2vd.clock", fromlist=["Clock"]).Clock())
worker.run(threading.Event(), burst=True)
[job] = journal.jobs()
print(job.state.value, Path(job.output_path or ".").stat().st_size if job.output_path else 0,
      baseline, peak_mb(), job.last_error or "")
"""


def _padded_mp4(folder: Path, megabytes: int) -> bytes:
    """A real small MP4 followed by a `free` box of random bytes: a valid MP4 of the wanted size."""
    small = make_test_mp4(folder / "small.mp4")
    padding = megabytes * 1024 * 1024 - len(small) - 8
    return small + (padding + 8).to_bytes(4, "big") + b"free" + os.urandom(padding)


def bench_reply_memory(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video = _padded_mp4(folder, megabytes)
        with FakePredictServer(video=video) as server:
            config = _config(folder, server.url)
            config_text = (folder / "config.yaml")
            config_text.write_text(f"""
state_dir: {folder / 'state'}
output_dir: {folder / 'out'}
log_level: warning
server: {{kind: predict, url: "{server.url}", timeout_seconds: 600}}
gpu: {{enabled: false}}
watch: [{{path: {folder / 'in'}, settle_seconds: 0}}]
""")
            del config
            write_image(folder / "in" / "big.png", size=(512, 512))
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-c", _REPLY_WORKER, str(REPO), str(config_text)],
                                    capture_output=True, text=True, timeout=900)
            wall = time.monotonic() - started
        if result.returncode != 0:
            print(f"reply memory: the worker process failed: {result.stderr.strip()[-500:]}")
            return
        state, size, baseline, peak, error = (result.stdout.strip().split(" ", 4) + [""])[:5]
        print(f"reply memory: {megabytes} MB video as a base64 reply ({len(video) * 4 // 3 / 2**20:.0f} MB of JSON): worker process "
              f"peak RSS {peak} MB (before the job {baseline} MB; target < 250 MB), job {state} in {wall:.1f} s {error}")
TEMPLATE_ATTACKS = (
    "{{ 'a' * 3000000000 }}",
    "{{ '%999999999s'|format(1) }}",
    "{{ 'a'|center(10**9) }}",
    "{{ range(60000)|join('x' * 1000) }}",
    "{% set x = 'a' * 60000 %}{{ x ~ x ~ x ~ x }}",
    "{% set ns = namespace(x='a') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}aaaaaaaa{% endif %}{% endmacro %}{{ f(30) }}",
    "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}x",
)
_TEMPLATE_CHILD = """
import resource, sys, time
from i2vd.profiles import ProfileError, render
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
for template in sys.argv[1:]:
    try:
        render(template, {}, "bench")
    except ProfileError:
        pass
else:
    elapsed = time.monotonic() - started
    print(base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, elapsed)
"""


def bench_templates() -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-c", _TEMPLATE_CHILD, *TEMPLATE_ATTACKS], cwd=REPO, capture_output=True, text=True, check=True)
    before, peak, elapsed = (float(word) for word in result.stdout.split())
    print(f"templates: {len(TEMPLATE_ATTACKS)} hostile sidecar templates refused in {elapsed:.2f} s; peak RSS {peak:.0f} MB "
          f"({peak - before:+.0f} MB over the process at start; unbounded, the first one alone took 12.6 GB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--reply-mb", type=int, default=150)
    parser.add_argument("--only", choices=("overhead", "servers", "detection", "scale", "reply-memory"))
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if arguments.only == "reply-memory":
        bench_reply_memory(arguments.reply_mb)
        return 0
    bench_overhead(arguments.jobs, arguments.latency)
    bench_servers(max(arguments.jobs, 12), min(arguments.latency, 1.0))
    bench_detection(arguments.samples)
    bench_scale(arguments.files)
    bench_reply_memory(arguments.reply_mb)
    bench_templates()
    return 0


if __name__ == "__main__":
    sys.exit(main())
