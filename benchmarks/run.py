"""Every i2vd benchmark, each figure printed beside its SPEC target (`make bench`).

    .venv/bin/python benchmarks/run.py [--only NAME ...] [--quick]

One command per figure, each runnable alone:
    benchmarks/throughput.py overhead    wall / server time, 20 jobs of 0.5 s      (<= 1.02)
    benchmarks/memory.py reply           150 MB video + 40 MB image: peak RSS        (< 250 MB)
    benchmarks/memory.py flat            RSS across 1,000 jobs                       (flat)
    benchmarks/scale.py                  100,000 images in 100 folders               (>= 5,000 files/s, READY <= 10 s,
                                                                                      status < 0.5 s, RSS <= 150 MB)
    benchmarks/detection.py              settled file -> queued job, inotify         (<= settle + 0.2 s)
    benchmarks/throughput.py servers     N = 1, 2, 4 servers, 48 jobs of 0.5 s        (>= 0.95 N x)
    benchmarks/templates.py              hostile sidecar templates                   (memory flat)
--quick runs each on a very small size (a smoke run: the figures then mean nothing).
These are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection  # noqa: E402
import memory  # noqa: E402
import scale  # noqa: E402
import templates  # noqa: E402
import throughput  # noqa: E402
from common import MACHINE  # noqa: E402

FULL = {
    "overhead": lambda: throughput.bench_overhead(20, 0.5),
    "reply-memory": lambda: memory.bench_reply(150, 40),
    "flat-memory": lambda: memory.bench_flat(1000),
    "scale": lambda: scale.report(scale.bench_scale(100_000, 100, 0.5)),
    "detection": lambda: detection.bench_detection(10, 0.5),
    "servers": lambda: throughput.bench_servers(48, 0.5, [1, 2, 4]),
    "templates": templates.bench_templates,
}
QUICK = {
    "overhead": lambda: throughput.bench_overhead(2, 0.05),
    "reply-memory": lambda: memory.bench_reply(1, 1),
    "flat-memory": lambda: memory.bench_flat(5),
    "scale": lambda: scale.report(scale.bench_scale(50, 5, 0.1)),
    "detection": lambda: detection.bench_detection(2, 0.1),
    "servers": lambda: throughput.bench_servers(4, 0.05, [1, 2]),
    "templates": templates.bench_templates,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(FULL), help="run only these (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on very small sizes")
    arguments = parser.parse_args(argv)
    benches = QUICK if arguments.quick else FULL
    quick = " (quick: smoke sizes, figures mean nothing)" if arguments.quick else ""
    print(f"# i2vd benchmarks on {MACHINE}{quick}", flush=True)
    for name in arguments.only or list(benches):
        benches[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
