"""Scale: 100,000 small images in 100 folders under one root, the server down.

    .venv/bin/python benchmarks/scale.py [--files 100000] [--folders 100] [--settle 0.5] [--page-cache cold|warm]

First start: files journaled per second (from READY to the last file in the journal, settle 0.5 s),
the longest gap between two watchdog pings meanwhile (liveness), `i2vd status` time while it works;
restart: READY time; `i2vd status` time; the daemon's peak RSS (VmHWM, its own process).
Targets (SPEC): >= 5,000 files/s, READY <= 10 s, status < 0.5 s, RSS <= 150 MB.
The image tree is made once per size under $TMPDIR and reused (the daemon only reads it). Before the first start
its files are put out of the page cache (`cold`, the default: images that sit on disk, as at a real first start;
their inodes may stay cached) or read once (`warm`); which one is printed with the figure. Without this the figure
depended on what the machine had evicted since the tree was made: 2,565 and 4,235 files/s the same hour.
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
from common import (  # noqa: E402
    MACHINE,
    DaemonProcess,
    children_peak_rss_mb,
    config_text,
    figure,
    peak_rss_mb,
    timed_status,
    wait_idle,
)


def image_tree(files: int, folders: int) -> Path:
    """files distinct small PNGs in `folders` folders, made once and kept for the next run."""
    from PIL import Image

    tree = Path(tempfile.gettempdir()) / f"i2vd-bench-tree-{files}-{folders}"
    done = tree / ".complete"
    if done.exists():
        return tree
    per_folder = -(-files // folders)
    base = Image.new("RGB", (16, 12), (40, 90, 160))
    for index in range(files):
        folder = tree / f"folder{index // per_folder:03d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        base.putpixel((index % 16, 0), (index % 251, (index // 251) % 251, (index // 63001) % 251))
        base.putpixel((0, 11), (index % 7, 0, 0))
        buffer = io.BytesIO()
        base.save(buffer, "PNG", compress_level=1)
        (folder / f"img{index:06d}.png").write_bytes(buffer.getvalue())
        base.putpixel((index % 16, 0), (40, 90, 160))
    done.write_text("ok")
    return tree


def set_page_cache(tree: Path, state: str) -> None:
    """Every image of the tree out of the page cache (`cold`) or in it (`warm`)."""
    for folder in sorted(tree.iterdir()):
        if not folder.is_dir():
            continue
        for image in folder.iterdir():
            descriptor = os.open(image, os.O_RDONLY)
            try:
                if state == "cold":
                    if hasattr(os, "posix_fadvise"):  # elsewhere than Linux: as the machine has it
                        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                else:
                    while os.read(descriptor, 1 << 16):
                        pass
            finally:
                os.close(descriptor)


def journaled(journal: Path) -> tuple[int, float]:
    """Files in the journal, and when the last job was recorded (wall clock)."""
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
            count = db.execute("SELECT count(*) FROM files").fetchone()[0]
            return count, db.execute("SELECT max(queued_at) FROM jobs").fetchone()[0] or 0.0
    except sqlite3.Error:
        return 0, 0.0


def bench_scale(files: int, folders: int, settle: float, page_cache: str = "cold") -> dict:
    tree = image_tree(files, folders)
    set_page_cache(tree, page_cache)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = folder / "config.yaml"
        config.write_text(config_text(folder, ["http://127.0.0.1:9"], settle).replace(str(folder / "in"), str(tree)))
        journal = folder / "state" / "journal.sqlite3"
        daemon = DaemonProcess(config).start()
        try:
            daemon.wait_ready()
            status_during, count = [], 0
            while count < files:
                time.sleep(0.5)
                if daemon.process.poll() is not None:
                    raise RuntimeError(daemon.stop()[-2000:])
                count, last_queued = journaled(journal)
                if len(status_during) < 3 and 0 < count < files:
                    status_during.append(timed_status(config))
            _, peak_first = peak_rss_mb(daemon.process.pid)
            children, children_peak = children_peak_rss_mb(daemon.process.pid)  # the intake's pool processes
            gap = daemon.longest_ping_gap(daemon.ready_at)
            first = last_queued - daemon.ready_wall  # READY to the last job recorded, by the journal's own clock
        finally:
            daemon.stop()
        restart = DaemonProcess(config).start()
        try:
            ready = restart.wait_ready()
            # Its first round (every root reconciled, sidecars applied again to every waiting job) is done before
            # the figures: the peak RSS comes from that round.
            settled = wait_idle(restart.process.pid)
            status = min(timed_status(config) for _ in range(3))
            _, peak_restart = peak_rss_mb(restart.process.pid)
        finally:
            restart.stop()
    return {
        "page_cache": page_cache,
        "files": files,
        "rate": files / first,
        "seconds": first,
        "gap": gap,
        "status_during": max(status_during, default=0.0),
        "ready": ready,
        "settled": settled,
        "status": status,
        "rss_first": peak_first,
        "rss_restart": peak_restart,
        "children": children,
        "children_rss": children_peak,
    }


def report(result: dict) -> None:
    files = result["files"]
    figure(
        "scale: first start journaling",
        f"{result['rate']:,.0f} files/s ({files:,} in {result['seconds']:.1f} s, {result['page_cache']})",
        ">= 5,000 files/s",
        result["rate"] >= 5000,
    )
    gap = result["gap"]
    figure(
        "scale: liveness while journaling",
        "too short to tell" if gap != gap else f"longest watchdog ping gap {gap:.2f} s",
        "a ping every 1 s",
        None if gap != gap else gap < 2,
    )
    during = result["status_during"]
    figure(
        "scale: status while journaling",
        f"{during:.2f} s" if during else "too short to tell",
        "< 0.5 s",
        during < 0.5 if during else None,
    )
    figure(
        "scale: restart READY",
        f"{result['ready']:.2f} s (its first round over every waiting job done {result['settled']:.0f} s later)",
        "<= 10 s",
        result["ready"] <= 10,
    )
    figure(
        "scale: i2vd status", f"{result['status']:.2f} s (process start included)", "< 0.5 s", result["status"] < 0.5
    )
    peak = max(result["rss_first"], result["rss_restart"])
    figure(
        "scale: daemon peak RSS",
        f"{peak:.0f} MB (first start {result['rss_first']:.0f}, restart {result['rss_restart']:.0f})",
        "<= 150 MB",
        peak <= 150,
    )
    print(
        f"{'':<34} (beside it, {result['children']} child process(es): peak RSS {result['children_rss']:.0f} MB in all)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--page-cache", choices=("cold", "warm"), default="cold", help="the images before the start")
    arguments = parser.parse_args(argv)
    print(f"# scale on {MACHINE}")
    report(bench_scale(arguments.files, arguments.folders, arguments.settle, arguments.page_cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
