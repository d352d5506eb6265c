"""`i2vd run` settles the cyclic collector once the daemon has started (cli/process.py settle_collector).

A first start over 100,000 images spent ~1.5 s of CPU in the collector: 18 full collections walking every module,
the config, the journal and the intake's 100,000-entry tables. What start-up made lives as long as the process:
it is frozen out of the collector's walks, and young collections come every 10,000 allocations instead of 700.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from i2vd.cli.process import GC_THRESHOLDS
from tests.cli.test_cli import write_config

REPO = Path(__file__).resolve().parents[2]
# `python -m i2vd run ...` whose serve() says how the collector stands and returns at once (the daemon then stops)
PROGRAM = """
import gc, runpy, sys
from i2vd.service import daemon
daemon.Daemon.serve = lambda self: print("collector", gc.get_threshold(), gc.get_freeze_count(), file=sys.stderr)
sys.argv = ["i2vd", *sys.argv[1:]]
runpy.run_module("i2vd", run_name="__main__", alter_sys=True)
"""


def test_the_daemon_freezes_what_its_start_made_and_collects_less_often(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, "run", "-c", str(config)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("collector"))
    thresholds, frozen = line.removeprefix("collector ").rsplit(" ", 1)
    assert thresholds == str(GC_THRESHOLDS)
    assert int(frozen) > 10_000  # the modules, the config models, the journal: all of start-up's objects


def test_other_commands_keep_python_s_collector_as_it_is(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    program = (
        "import gc, sys\nfrom i2vd.cli.commands import main\n"
        "main(sys.argv[1:])\nprint(gc.get_threshold(), gc.get_freeze_count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, "check", "-c", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "(700, 10, 10) 0", result.stderr
