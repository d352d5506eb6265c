"""Memory: one big reply and one big image; and RSS across many jobs.

    .venv/bin/python benchmarks/memory.py reply [--reply-mb 150] [--image-mb 40]
    .venv/bin/python benchmarks/memory.py flat [--jobs 1000]

reply: peak RSS (VmHWM) of `i2vd run` in its own process sending one --image-mb MB image and
receiving a --reply-mb MB video as a base64 /predict reply. Target (SPEC) < 250 MB for 150 MB.
flat: `i2vd run` does --jobs small jobs against a fake server that answers at once; its RSS
after the first tenth and at the end. Target: flat (the growth is printed; a few MB of SQLite
page cache and allocator slack is not growth per job).
The fake servers run in this process, not in the daemon's.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MACHINE, DaemonProcess, config_text, figure, peak_rss_mb  # noqa: E402

from tests.support.fakes import FakePredictServer, make_test_mp4, write_image  # noqa: E402


def padded_mp4(folder: Path, megabytes: int) -> bytes:
    """A real small MP4 followed by a `free` box of random bytes: a valid MP4 of the wanted size."""
    small = make_test_mp4(folder / "small.mp4")
    padding = megabytes * 1024 * 1024 - len(small) - 8
    return small + (padding + 8).to_bytes(4, "big") + b"free" + os.urandom(padding)


def noise_png(path: Path, megabytes: int) -> int:
    """An image of random pixels stored uncompressed: about `megabytes` MB on disk."""
    from PIL import Image

    side = max(16, int((megabytes * 1024 * 1024 / 3) ** 0.5))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG", compress_level=0)
    path.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def done_count(journal: Path) -> tuple[int, int]:
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
            rows = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.Error:
        return 0, 0
    return rows.get("done", 0), rows.get("failed", 0)


def bench_reply(reply_mb: int, image_mb: int) -> float:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video = padded_mp4(folder, reply_mb)
        with FakePredictServer(video=video) as server:
            config = folder / "config.yaml"
            config.write_text(config_text(folder, [server.url], settle=0.2))
            image_size = noise_png(folder / "in" / "big.png", image_mb)
            del video
            started = time.monotonic()
            with DaemonProcess(config) as daemon:
                daemon.wait_ready()
                journal = folder / "state" / "journal.sqlite3"
                while (
                    not sum(done_count(journal)) and daemon.process.poll() is None and time.monotonic() - started < 900
                ):
                    time.sleep(0.1)
                _, peak = peak_rss_mb(daemon.process.pid)
                done, failed = done_count(journal)
            wall = time.monotonic() - started
    state = "done" if done else ("failed" if failed else "not finished")
    sizes = f"{reply_mb} MB video, {image_size / 2**20:.0f} MB image"
    figure(
        "memory: one big reply",
        f"peak RSS {peak:.0f} MB ({sizes}, job {state}, {wall:.0f} s)",
        "< 250 MB",
        peak < 250 and bool(done),
    )
    return peak


def bench_flat(jobs: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        video = make_test_mp4(folder / "v.mp4")
        with FakePredictServer(video=video) as server:
            config = folder / "config.yaml"
            config.write_text(config_text(folder, [server.url], settle=0.2))
            for index in range(jobs):
                sub = folder / "in" / f"f{index // 100:02d}"
                sub.mkdir(exist_ok=True)
                write_image(sub / f"img{index:05d}.png", color=(index % 256, (index // 256) % 256, 7))
            journal = folder / "state" / "journal.sqlite3"
            early = None
            with DaemonProcess(config) as daemon:
                daemon.wait_ready()
                while daemon.process.poll() is None:
                    done = sum(done_count(journal))
                    if early is None and done >= max(1, jobs // 10):
                        early = peak_rss_mb(daemon.process.pid)[0]
                    if done >= jobs:
                        break
                    time.sleep(0.2)
                late, peak = peak_rss_mb(daemon.process.pid)
    early = late if early is None else early
    growth = late - early
    value = f"RSS {early:.0f} MB after {max(1, jobs // 10)}, {late:.0f} MB after {jobs} (peak {peak:.0f})"
    figure(f"memory: across {jobs} jobs", value, "flat (< 10 MB growth)", growth < 10)
    return early, late


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("reply", "flat"))
    parser.add_argument("--reply-mb", type=int, default=150)
    parser.add_argument("--image-mb", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=1000)
    arguments = parser.parse_args(argv)
    print(f"# memory {arguments.which} on {MACHINE}")
    if arguments.which == "reply":
        bench_reply(arguments.reply_mb, arguments.image_mb)
    else:
        bench_flat(arguments.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
