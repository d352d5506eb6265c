"""The benchmarks run: each command once on a very small size (a smoke run; no figure is checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_on_a_small_size() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for figure in (
        "overhead:",
        "memory: one big reply",
        "memory: across",
        "scale: first start",
        "scale: restart READY",
        "scale: i2vd status",
        "scale: daemon peak RSS",
        "detection:",
        "servers: N = 1",
        "servers: N = 2",
        "templates:",
    ):
        assert any(line.startswith(figure) and "target" in line for line in lines), (figure, result.stdout)
