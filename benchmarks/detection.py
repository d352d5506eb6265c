"""Detection: a completed file becomes a queued job within settle_seconds + 0.2 s (inotify).

    .venv/bin/python benchmarks/detection.py [--samples 10] [--settle 0.5]

The intake loop runs in a thread of this process on a real inotify watch; each image is
written whole, then the time until the journal holds it is taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MACHINE, config_text, figure  # noqa: E402

from i2vd.config.load import parse_config  # noqa: E402
from i2vd.ingest.intake import Intake  # noqa: E402
from i2vd.ingest.loop import IntakeLoop  # noqa: E402
from i2vd.store.journal import Journal  # noqa: E402
from tests.support.fakes import wait_for, write_image  # noqa: E402


def bench_detection(samples: int, settle: float) -> list[float]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        config = parse_config(config_text(folder, ["http://127.0.0.1:9"], settle=settle))
        journal = Journal(folder / "state" / "journal.sqlite3")
        loop = IntakeLoop(config, Intake(config, journal))
        stop = threading.Event()
        loop.start_watches()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        delays = []
        try:
            method = loop.watches[0].method
            for index in range(samples):
                path = folder / "in" / f"d_{index}.png"
                write_image(path, color=(index % 256, 1, 2))
                written = time.monotonic()
                wait_for(lambda path=path: journal.known_file(str(path)) is not None, timeout=30, interval=0.005)
                delays.append(time.monotonic() - written)
        finally:
            stop.set()
            thread.join()
            loop.stop_watches()
            journal.close()
    delays.sort()
    worst = delays[-1]
    median = delays[len(delays) // 2]
    figure(
        "detection: file -> queued job",
        f"median {median:.3f} s, worst {worst:.3f} s ({method}, settle {settle:g} s)",
        f"<= {settle + 0.2:.1f} s",
        worst <= settle + 0.2,
    )
    return delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--settle", type=float, default=0.5)
    arguments = parser.parse_args(argv)
    print(f"# detection on {MACHINE}")
    bench_detection(arguments.samples, arguments.settle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
