"""The intake thread's own CPU time per new file, in-process (no daemon, no watcher).

    .venv/bin/python benchmarks/intake_cpu.py [--files 3000] [--sidecars] [--no-pool] [--profile]

Tiny PNGs in folders of 500 are offered to `Intake.consider_many` in slices of 100, as the intake
loop does on a first start. With the pool (the default, as in the daemon), reading, hashing and
decoding run in its processes: the figure is the intake thread's `time.thread_time` per file,
what caps a first start's rate on a host with free cores. `--sidecars` puts an `i2vd.yaml` at the
root and in every folder; `--profile` prints cProfile's top functions for the intake thread.
A measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from i2vd.config.load import load_config  # noqa: E402
from i2vd.ingest.examine_pool import ExaminePool  # noqa: E402
from i2vd.ingest.intake import Intake  # noqa: E402
from i2vd.store.journal import Journal  # noqa: E402


def make_tree(tree: Path, files: int, sidecars: bool) -> list[Path]:
    from PIL import Image

    base = Image.new("RGB", (16, 12), (40, 90, 160))
    paths = []
    for index in range(files):
        folder = tree / f"folder{index // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        base.putpixel((index % 16, 0), (index % 251, (index // 251) % 251, (index // 63001) % 251))
        buffer = io.BytesIO()
        base.save(buffer, "PNG", compress_level=1)
        path = folder / f"img{index:06d}.png"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    if sidecars:
        (tree / "i2vd.yaml").write_text("priority: 1\n")
        for folder in tree.iterdir():
            if folder.is_dir():
                (folder / "i2vd.yaml").write_text(f"steps: 20\nvars: {{scene: {folder.name}}}\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--sidecars", action="store_true")
    parser.add_argument("--no-pool", action="store_true", help="read, hash and decode in the intake thread")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        paths = make_tree(folder / "in", args.files, args.sidecars)
        (folder / "config.yaml").write_text(
            f"state_dir: {folder / 'state'}\noutput_dir: {folder / 'out'}\n"
            'servers: [{kind: predict, url: "http://127.0.0.1:9"}]\ngpu: {enabled: false}\n'
            f"watch: [{{path: {folder / 'in'}}}]\n"
        )
        config = load_config(folder / "config.yaml")
        journal = Journal(config.state_dir / "journal.sqlite3")
        intake = Intake(config, journal)
        intake.pool = None if args.no_pool else ExaminePool()
        root = config.watch[0]
        slices = [[(path, root, False) for path in paths[start : start + 100]] for start in range(0, len(paths), 100)]
        profile = cProfile.Profile() if args.profile else None
        try:
            cpu, wall = time.thread_time(), time.perf_counter()
            if profile:
                profile.enable()
            for index, files in enumerate(slices):  # the next slice's files are read ahead, as the loop does
                coming = [(path, root) for path, root, _ in slices[index + 1]] if index + 1 < len(slices) else []
                intake.consider_many(files, coming=coming)
            if profile:
                profile.disable()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        finally:
            if intake.pool is not None:
                intake.pool.close()  # its processes are reaped: their CPU is in RUSAGE_CHILDREN now
            journal.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool_cpu = children.ru_utime + children.ru_stime
    load = os.getloadavg()[0]
    print(
        f"{args.files:,} files{' with sidecars' if args.sidecars else ''}, pool {'off' if args.no_pool else 'on'}: "
        f"intake thread {cpu / args.files * 1e6:.0f} us CPU per file, pool processes {pool_cpu / args.files * 1e6:.0f}"
        f" us, {args.files / wall:,.0f} files/s, load {load:.2f}"
    )
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
