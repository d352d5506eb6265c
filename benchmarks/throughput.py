"""Overhead and N servers: jobs against fake /predict servers that sleep a fixed time per job.

    .venv/bin/python benchmarks/throughput.py overhead [--jobs 20] [--latency 0.5]
    .venv/bin/python benchmarks/throughput.py servers [--jobs 48] [--latency 0.5] [--counts 1,2,4]

overhead: wall time (first job started to last job finished) / the time the server worked
(the fake's sleeps, and i2vd's own server_seconds beside it). Target (SPEC) <= 1.02 at 0.5 s.
servers: throughput with N servers over throughput with one. Target >= 0.95 * N.
The daemon runs in this process (threads), the fake servers too: they only sleep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MACHINE, config_text, figure  # noqa: E402

from i2vd.config.load import parse_config  # noqa: E402
from i2vd.service.daemon import Daemon  # noqa: E402
from i2vd.store.journal import Job  # noqa: E402
from tests.support.fakes import FakePredictServer, make_test_mp4, wait_for, write_image  # noqa: E402


def run_jobs(server_count: int, jobs: int, latency: float, received: list[float] | None = None) -> list[Job]:
    """The finished jobs of `jobs` images on `server_count` fake servers sharing one journal (and, in `received`,
    when each server call arrived, by the fake's clock)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video = make_test_mp4(folder / "v.mp4")
        servers = [FakePredictServer(video=video, latency_seconds=latency).start() for _ in range(server_count)]
        try:
            config = parse_config(config_text(folder, [server.url for server in servers], settle=0.2))
            for index in range(jobs):
                write_image(folder / "in" / f"img_{index}.png", color=(index % 256, index // 256, 9))
            daemon = Daemon(config)
            daemon.start()
            try:
                wait_for(
                    lambda: daemon.journal.counts()["done"] == jobs, timeout=jobs * (latency + 5) + 60, interval=0.05
                )
                return daemon.journal.jobs()
            finally:
                daemon.shutdown()
                if received is not None:
                    received += sorted(request.received_at for server in servers for request in server.requests)
        finally:
            for server in servers:
                server.stop()


def wall(done: list[Job]) -> float:
    return max(job.finished_at for job in done) - min(job.started_at for job in done)


def bench_overhead(jobs: int, latency: float) -> float:
    received: list[float] = []
    done = run_jobs(1, jobs, latency, received)
    elapsed, measured = wall(done), sum(job.server_seconds for job in done)
    ratio = elapsed / (latency * jobs)
    figure(
        "overhead: wall / server time",
        f"{ratio:.3f} ({jobs} jobs of {latency:g} s: wall {elapsed:.2f} s)",
        "<= 1.02",
        ratio <= 1.02,
    )
    print(f"{'':<34} (i2vd's own server_seconds sum to {measured:.2f} s: wall / those = {elapsed / measured:.3f})")
    # Where the rest of the wall goes, per job: the call beyond the sleep, between two calls, the last video.
    gaps = sorted(later - earlier - latency for earlier, later in zip(received, received[1:]))
    if gaps:
        first = received[0] - min(job.started_at for job in done)
        last = max(job.finished_at for job in done) - received[-1] - latency
        print(
            f"{'':<34} (per call beyond the sleep {(measured / jobs - latency) * 1000:.1f} ms; call k to call k+1"
            f" beyond the sleep: median {gaps[len(gaps) // 2] * 1000:.1f} ms; first call {first * 1000:.0f} ms"
            f" after its claim; the last video written {last * 1000:.0f} ms after its reply)"
        )
    return ratio


def bench_servers(jobs: int, latency: float, counts: list[int]) -> dict[int, float]:
    walls = {count: wall(run_jobs(count, jobs, latency)) for count in counts}
    base = walls[counts[0]] * counts[0]  # the wall one server would take
    speedups = {}
    for count in counts:
        speedups[count] = base / walls[count]
        value = f"{speedups[count]:.2f}x throughput ({jobs} jobs of {latency:g} s in {walls[count]:.2f} s)"
        figure(f"servers: N = {count}", value, f">= {0.95 * count:.2f}x", speedups[count] >= 0.95 * count)
    return speedups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("overhead", "servers"))
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--counts", default="1,2,4")
    arguments = parser.parse_args(argv)
    print(f"# {arguments.which} on {MACHINE}")
    if arguments.which == "overhead":
        bench_overhead(arguments.jobs or 20, arguments.latency)
    else:
        counts = [int(count) for count in arguments.counts.split(",")]
        bench_servers(arguments.jobs or 48, arguments.latency, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
